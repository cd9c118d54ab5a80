"""Network namespaces for the jump host tests: sshd instances the test process cannot reach directly.

``JumpNet.create()`` builds this, with a random /24 of 10.231.0.0/16 (``P`` below) per run:

    test process ── 127.0.0.1:port ──► j1 (sshd in namespace NJ1, started per connection by inetd)
                                        ├── veth P.1 ↔ P.2 ──► t1 (sshd in NT1 on P.2:22)
                                        └── veth P.5 ↔ P.6 ──► j2 (sshd in NJ2 on P.6:22)
                                                                └── veth P.9 ↔ P.10 ──► t2 (sshd in NT2)

Addresses exist inside the namespaces only. The test process reaches j1 over loopback: a
listener on 127.0.0.1 hands each accepted socket to ``ip netns exec NJ1 sshd -i`` (inetd
mode), so j1 runs inside NJ1 while its client stays in the root namespace. No namespace
has a default route, so t1 is reachable only through j1, and t2 only through j1 then j2.
In the root namespace the run's /24 gets an ``unreachable`` route (a route, no address):
a direct connection attempt fails at once instead of leaving the machine by the default
route. ``destroy()`` removes all of it; the fixture that builds it calls it as a finalizer.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.polling import wait_until
from tests.sshd import SSHD, SshServer, _keygen, ensure_test_user, reap_user_processes

PREFIX = "10.231"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def netns_unavailable() -> str:
    """Why the suite cannot create network namespaces here ("" when it can)."""
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"sshcprobe{secrets.token_hex(3)}"
    made = ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip() or made.returncode}"
    ip("netns", "del", probe, check=False)
    return ""


@dataclass
class NetnsSshServer(SshServer):
    """An sshd inside a network namespace, password and ed25519 host key only.

    With ``listen_address`` it is a daemon on that address (port 22) inside the namespace.
    Without, it serves connections accepted on 127.0.0.1 of the root namespace (``port``),
    one ``sshd -i`` per connection started inside the namespace.
    """

    netns: str = ""
    listen_address: str = ""
    _listener: socket.socket | None = field(default=None, repr=False)
    _accepting: threading.Thread | None = field(default=None, repr=False)
    _served: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    @classmethod
    def in_netns(cls, netns: str, listen_address: str = "") -> NetnsSshServer:
        root = Path(tempfile.mkdtemp(prefix="sshcontrol-sshd-"))
        root.chmod(0o755)
        return cls(root=root, netns=netns, listen_address=listen_address)

    def start(self) -> NetnsSshServer:
        ensure_test_user(self.user)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        hostkeys = self.root / "hostkeys"
        hostkeys.mkdir(exist_ok=True)
        path = hostkeys / "ssh_host_ed25519_key"
        if not path.exists():
            _keygen(path, "ed25519")
        self.host_key_files = {"ed25519": path}
        config = self.root / "sshd_config"
        log = self.root / "sshd.log"
        lines = [
            f"HostKey {path}",
            "UsePAM no",
            "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no",
            "PubkeyAuthentication no",
            "StrictModes no",
            f"AllowUsers {self.user}",
            f"PidFile {self.root / 'sshd.pid'}",
            "AllowTcpForwarding yes",
            "MaxSessions 100",
            "LogLevel VERBOSE",
        ]
        in_netns = ["ip", "netns", "exec", self.netns, SSHD]
        if self.listen_address:
            self.address = self.listen_address
            self.port = 22
            config.write_text("\n".join([f"ListenAddress {self.listen_address}:22", *lines, ""]))
            log.unlink(missing_ok=True)
            self.proc = subprocess.Popen(
                [*in_netns, "-D", "-f", str(config), "-E", str(log)], stdin=subprocess.DEVNULL
            )
            # Not reachable from here to probe: the daemon says when it listens.
            wait_until(
                lambda: self._exited() or "Server listening on" in _text(log),
                timeout=15,
                message=f"sshd in {self.netns} listening on {self.listen_address}:22",
            )
            if self._exited():
                raise RuntimeError(f"sshd in {self.netns} exited: {_text(log)[-2000:]}")
            return self
        config.write_text("\n".join([*lines, ""]))
        if self._listener is None:
            listener = socket.socket()
            listener.bind(("127.0.0.1", self.port))
            listener.listen(16)
            self.port = int(listener.getsockname()[1])
            self._listener = listener
            self._accepting = threading.Thread(
                target=self._accept, args=([*in_netns, "-i", "-f", str(config), "-E", str(log)],), daemon=True
            )
            self._accepting.start()
        return self

    def _exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def _accept(self, argv: list[str]) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                conn, _peer = listener.accept()
            except OSError:
                return  # the listener was shut down
            with conn:
                self._served.append(
                    subprocess.Popen(
                        argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL
                    )
                )

    def stop(self) -> None:
        super().stop()
        for proc in self._served:
            if proc.poll() is None:
                proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._served.clear()
        reap_user_processes(self.user)

    def regenerate_host_keys(self) -> None:
        """New host keys (a changed key); an inetd server uses them from its next connection."""
        if self.listen_address:
            super().regenerate_host_keys()
            return
        for path in self.host_key_files.values():
            path.unlink()
            Path(f"{path}.pub").unlink()
        self.start()

    def remove(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the accept() blocked in the other thread; close() alone does not.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            if self._accepting is not None:
                self._accepting.join(5)
            self._listener = None
        super().remove()


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@dataclass
class JumpNet:
    """The namespaces, links and sshd instances of the module docstring."""

    token: str
    subnet: str  # e.g. "10.231.57" (a /24)
    namespaces: list[str] = field(default_factory=list)
    servers: dict[str, NetnsSshServer] = field(default_factory=dict)
    routed: bool = False

    @classmethod
    def create(cls) -> JumpNet:
        net = cls(token=secrets.token_hex(3), subnet="")
        try:
            net._build()
        except BaseException:
            net.destroy()
            raise
        return net

    def ns(self, role: str) -> str:
        return f"sshc{self.token}{role}"

    def addr(self, last: int) -> str:
        return f"{self.subnet}.{last}"

    def _build(self) -> None:
        for _attempt in range(20):
            subnet = f"{PREFIX}.{secrets.randbelow(256)}"
            if ip("route", "add", "unreachable", f"{subnet}.0/24", check=False).returncode == 0:
                self.subnet, self.routed = subnet, True
                break
        else:
            raise RuntimeError(f"no free /24 in {PREFIX}.0.0/16 for the jump host tests")
        for role in ("j1", "t1", "j2", "t2"):
            ip("netns", "add", self.ns(role))
            self.namespaces.append(self.ns(role))
            ip("-n", self.ns(role), "link", "set", "lo", "up")
        self._link("a", ("j1", 1), ("t1", 2))
        self._link("b", ("j1", 5), ("j2", 6))
        self._link("c", ("j2", 9), ("t2", 10))
        for role, address in (("j1", ""), ("t1", self.addr(2)), ("j2", self.addr(6)), ("t2", self.addr(10))):
            self.servers[role] = NetnsSshServer.in_netns(self.ns(role), address)
            self.servers[role].start()

    def _link(self, name: str, left: tuple[str, int], right: tuple[str, int]) -> None:
        """A veth pair between two namespaces, with a /30 address at each end (inside them only)."""
        a, b = f"sc{self.token}{name}0", f"sc{self.token}{name}1"  # at most 15 characters
        ip("link", "add", a, "type", "veth", "peer", "name", b)
        for dev, (role, last) in ((a, left), (b, right)):
            ip("link", "set", dev, "netns", self.ns(role))
            ip("-n", self.ns(role), "addr", "add", f"{self.addr(last)}/30", "dev", dev)
            ip("-n", self.ns(role), "link", "set", dev, "up")

    def destroy(self) -> None:
        for server in self.servers.values():
            server.remove()
        # Deleting a namespace deletes the veth ends inside it, and with them their peers.
        for name in self.namespaces:
            ip("netns", "del", name, check=False)
        if self.routed:
            ip("route", "del", "unreachable", f"{self.subnet}.0/24", check=False)
