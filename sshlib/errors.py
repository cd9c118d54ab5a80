"""Typed failures of the SSH runtime. Messages are one line, safe to show a model: no secrets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SeenKey:
    """A server host key as seen on the wire."""

    key_type: str  # e.g. "ssh-ed25519"
    public_key: str  # base64 blob, as in known_hosts
    fingerprint: str  # "SHA256:..." as ssh-keygen -l prints it


def one_line(exc: BaseException) -> str:
    """An exception as one line for a failure message (paramiko's can span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


class SshError(Exception):
    """Base class: something prevented the SSH operation.

    ``leftover``: a temporary file the failed operation wrote and could not remove (its
    connection was gone); whoever can reach the host again removes it.
    """

    leftover: str = ""


class ConnectFailed(SshError):
    """TCP connect refused, timed out, unreachable, or the SSH handshake failed."""


class AuthenticationFailed(SshError):
    """The server rejected the credential."""


class HostKeyUnknown(SshError):
    """The server presented a key that is not trusted for this host (and no trusted key exists)."""

    def __init__(self, seen: SeenKey, message: str | None = None, *, host_ref: str = "") -> None:
        self.seen = seen
        self.host_ref = host_ref  # the host that presented it (a jump host's), when the spec named one
        super().__init__(message or f"host key {seen.key_type} {seen.fingerprint} is not trusted")


class HostKeyChanged(SshError):
    """The server presented a key different from the trusted one(s): possible man-in-the-middle."""

    def __init__(self, seen: SeenKey, message: str | None = None, *, host_ref: str = "") -> None:
        self.seen = seen
        self.host_ref = host_ref  # the host that presented it (a jump host's), when the spec named one
        super().__init__(message or f"host key changed: server presented {seen.key_type} {seen.fingerprint}")


class ChannelFailed(SshError):
    """The connection is up but a channel (exec or sftp) could not be opened or broke."""


class RemoteFileError(SshError):
    """An SFTP operation failed (no such file, permission denied, exists and overwrite is off...)."""


class ConnectionLost(SshError):
    """The connection dropped while a command ran: it may have run in part, so never retry it blindly.

    Deliberately not a ChannelFailed (which means the command never started and a retry on a
    fresh connection is safe).
    """
