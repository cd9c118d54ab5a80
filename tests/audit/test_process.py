"""Process keys: machine:pid:start, and telling whether the process behind one still runs."""

from __future__ import annotations

import os
import socket
import subprocess

from audit.process import current_process_key, is_alive


def test_it_names_this_process_by_machine_pid_and_start_time():
    machine, pid, start = current_process_key().rsplit(":", 2)
    assert machine == socket.gethostname()
    assert int(pid) == os.getpid()
    assert start.isdigit()


def test_it_finds_this_process_alive():
    assert is_alive(current_process_key()) is True


def test_it_finds_a_reaped_process_dead():
    child = subprocess.Popen(["true"])
    child.wait()
    assert is_alive(f"{socket.gethostname()}:{child.pid}:1") is False


def test_it_finds_a_zombie_dead():
    child = subprocess.Popen(["true"])
    try:
        # Not reaped yet: the PID still exists, as a zombie, once the child has exited.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        machine, _, _ = current_process_key().rsplit(":", 2)
        with open(f"/proc/{child.pid}/stat") as handle:
            start = handle.read().rsplit(")", 1)[1].split()[19]
        assert is_alive(f"{machine}:{child.pid}:{start}") is False
    finally:
        child.wait()


def test_it_detects_a_reused_pid_by_its_start_time():
    prefix = current_process_key().rsplit(":", 1)[0]
    assert is_alive(f"{prefix}:1") is False


def test_it_cannot_tell_for_another_machine_or_a_malformed_key():
    assert is_alive("elsewhere.example:1:100") is None
    assert is_alive("garbage") is None
    assert is_alive(f"{socket.gethostname()}:notapid:1") is None
