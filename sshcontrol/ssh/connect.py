"""Opening SSH connections with pinned host keys. CONTRACT — to be implemented."""

from __future__ import annotations

from dataclasses import dataclass, field

import paramiko

from sshcontrol.ssh.errors import SeenKey


@dataclass(frozen=True)
class ConnectSpec:
    """Everything needed to connect; secrets live only in this object, in the process that connects."""

    address: str
    port: int
    username: str
    password: str | None = None
    private_key: str | None = None  # OpenSSH / PEM private key text
    passphrase: str | None = None
    trusted_keys: tuple[tuple[str, str], ...] = ()  # (key_type, base64 blob) pairs trusted for this host
    trust_on_first_use: bool = False  # accept any key when trusted_keys is empty
    connect_timeout: float = 10.0
    keepalive_seconds: int = 30
    secrets: tuple[str, ...] = field(default=(), repr=False)  # for redaction: password, passphrase


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64 without padding>`` as ssh-keygen -l prints it."""
    raise NotImplementedError


def seen_key(key: paramiko.PKey) -> SeenKey:
    raise NotImplementedError


@dataclass
class Connection:
    """A live, authenticated SSH connection and the host key it was verified with."""

    client: paramiko.SSHClient
    host_key: SeenKey

    def is_active(self) -> bool:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def open_connection(spec: ConnectSpec) -> Connection:
    """Connect over a TCP_NODELAY + SO_KEEPALIVE socket, verify the host key, authenticate.

    Raises ConnectFailed, HostKeyUnknown, HostKeyChanged, AuthenticationFailed.
    """
    raise NotImplementedError


def scan_host_keys(address: str, port: int, timeout: float = 10.0) -> list[SeenKey]:
    """Fetch every host key type the server offers (no authentication)."""
    raise NotImplementedError
