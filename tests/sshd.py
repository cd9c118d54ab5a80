"""A real OpenSSH server for the test suite.

``SshServer.start()`` creates (once per machine) a dedicated unprivileged user, gives it
a password and authorized ed25519 / RSA / ECDSA keys, writes a private sshd_config with
its own host keys and starts ``/usr/sbin/sshd -D`` on a free 127.0.0.1 port. Everything
lives in one temporary directory; ``stop()`` kills sshd and reaps whatever the test user
left running (commands started without a pty outlive their connection).
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

SSHD = "/usr/sbin/sshd"
TEST_PASSWORD = "correct horse battery staple 7"  # only ever set on the throwaway test users


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_test_user(name: str) -> pwd.struct_passwd:
    """Create a throwaway local user for one server, so parallel test runs never share one."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", name], check=True)
        entry = pwd.getpwnam(name)
    subprocess.run(["chpasswd"], input=f"{name}:{TEST_PASSWORD}\n", text=True, check=True)
    return entry


def reap_user_processes(name: str) -> None:
    """Kill whatever the test user still runs (commands outlive their SSH connection)."""
    subprocess.run(["pkill", "-KILL", "-u", name], check=False)


def _keygen(path: Path, kind: str, bits: int | None = None, passphrase: str = "") -> None:
    args = [
        "ssh-keygen",
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        f"sshcontrol-test-{kind}",
        "-f",
        str(path),
    ]
    if bits:
        args += ["-b", str(bits)]
    subprocess.run(args, check=True)


@dataclass
class SshServer:
    """A running sshd; ``client_keys`` maps a key type to its private key file."""

    root: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    user: str = field(default_factory=lambda: f"sshct{secrets.token_hex(4)}")
    password: str = TEST_PASSWORD
    client_keys: dict[str, Path] = field(default_factory=dict)
    encrypted_key: Path | None = None
    encrypted_key_passphrase: str = "test key passphrase"
    host_key_files: dict[str, Path] = field(default_factory=dict)

    address = "127.0.0.1"

    @classmethod
    def create(cls) -> SshServer:
        root = Path(tempfile.mkdtemp(prefix="sshcontrol-sshd-"))
        root.chmod(0o755)  # sshd (as the test user) must traverse to authorized_keys
        return cls(root=root)

    def start(self) -> SshServer:
        if not Path(SSHD).exists():
            raise RuntimeError("sshd is not installed: apt-get install openssh-server")
        ensure_test_user(self.user)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        hostkeys = self.root / "hostkeys"
        hostkeys.mkdir(exist_ok=True)
        for kind in ("ed25519", "ecdsa", "rsa"):
            path = hostkeys / f"ssh_host_{kind}_key"
            if not path.exists():
                _keygen(path, kind, 3072 if kind == "rsa" else None)
            self.host_key_files[kind] = path
        clientkeys = self.root / "clientkeys"
        clientkeys.mkdir(exist_ok=True)
        for kind in ("ed25519", "ecdsa", "rsa"):
            path = clientkeys / f"id_{kind}"
            if not path.exists():
                _keygen(path, kind, 3072 if kind == "rsa" else None)
            self.client_keys[kind] = path
        self.encrypted_key = clientkeys / "id_ed25519_encrypted"
        if not self.encrypted_key.exists():
            _keygen(self.encrypted_key, "ed25519", passphrase=self.encrypted_key_passphrase)
        authorized = self.root / "authorized_keys"
        lines = [Path(f"{p}.pub").read_text() for p in [*self.client_keys.values(), self.encrypted_key]]
        authorized.write_text("".join(lines))
        authorized.chmod(0o644)
        self.port = self.port or free_port()
        config = self.root / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    *[f"HostKey {p}" for p in self.host_key_files.values()],
                    "UsePAM no",
                    "PasswordAuthentication yes",
                    "KbdInteractiveAuthentication no",
                    "PubkeyAuthentication yes",
                    f"AuthorizedKeysFile {authorized}",
                    "StrictModes no",
                    f"AllowUsers {self.user}",
                    f"PidFile {self.root / 'sshd.pid'}",
                    "Subsystem sftp internal-sftp",
                    "MaxSessions 100",
                    "MaxStartups 100:30:200",
                    "LogLevel VERBOSE",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(config), "-E", str(self.root / "sshd.log")],
            stdin=subprocess.DEVNULL,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                log = (self.root / "sshd.log").read_text() if (self.root / "sshd.log").exists() else ""
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {log[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, self.port), 0.5) as sock,
            ):
                if sock.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None
        reap_user_processes(self.user)

    def remove(self) -> None:
        self.stop()
        subprocess.run(["userdel", "--remove", self.user], check=False, capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- facts the tests compare against ---------------------------------------------------

    def host_public_keys(self) -> list[paramiko.PKey]:
        return [self.host_key(kind) for kind in self.host_key_files]

    def host_key(self, kind: str = "ed25519") -> paramiko.PKey:
        key_type, blob = Path(f"{self.host_key_files[kind]}.pub").read_text().split()[:2]
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))

    def regenerate_host_keys(self) -> None:
        """Give the server new host keys (a 'changed host key' scenario) and restart it."""
        self.stop()
        for path in self.host_key_files.values():
            path.unlink()
            Path(f"{path}.pub").unlink()
        self.start()

    def private_key_text(self, kind: str = "ed25519") -> str:
        return self.client_keys[kind].read_text()

    def user_processes(self, pattern: str) -> list[str]:
        """PIDs of the test user's processes whose command line matches ``pattern``."""
        out = subprocess.run(
            ["pgrep", "-u", self.user, "-f", pattern], capture_output=True, text=True, check=False
        )
        return out.stdout.split()


if __name__ == "__main__":  # manual use: python -m tests.sshd
    server = SshServer.create().start()
    print(f"sshd on {server.address}:{server.port}, user {server.user}, root {server.root}")
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(3600)
    server.remove()
    os._exit(0)
