"""Opening SSH connections with pinned host keys, directly or through a chain of jump hosts.

Host keys are checked by paramiko before any credential is sent, so a wrong server never
sees the password. We never consult ``~/.ssh/known_hosts`` or the system host keys: the
only trusted keys are the ones the caller passes in ``ConnectSpec.trusted_keys``.

A spec with ``hops`` is reached like ``ssh -J``: the first hop over TCP, each next hop (and
at last the target) over a ``direct-tcpip`` channel of the previous hop's transport. Every
hop is a full connection of its own, verified against its own trusted keys and logged in
with its own credential; a key refused on a hop names that hop.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from paramiko.ssh_exception import IncompatiblePeer

from sshlib import ciphers, packet_reads
from sshlib.errors import (
    AuthenticationFailed,
    ConnectFailed,
    HostKeyChanged,
    HostKeyUnknown,
    SeenKey,
    SshError,
    one_line,
)
from sshlib.jumps import JumpPool, Lease
from sshlib.private_keys import PrivateKeyError, SupportedKey, fingerprint_of_blob, parse_private_key
from sshlib.quiet import QuietTransport, quieten

log = logging.getLogger(__name__)

# paramiko's transport thread logs every failure it meets at ERROR, with a traceback, and then
# hands the same exception to the waiting caller, which turns it into an SshError. A host key
# scan expects refusals (one handshake per algorithm; IncompatiblePeer for each one the server
# lacks), and connections restricted to the trusted key types meet them too: those tracebacks
# went to stderr and the server log as if something broke. Our transports log under a child
# of paramiko's logger (its configuration applies) whose ERROR records are dropped.
TRANSPORT_LOG = "paramiko.transport.sshcontrol"


class _RaisedToCaller(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


logging.getLogger(TRANSPORT_LOG).addFilter(_RaisedToCaller())

# Host key algorithms paramiko can verify, in its own order of preference. RSA keys are
# named "ssh-rsa" but are only ever verified with the SHA-2 signature algorithms.
HOST_KEY_ALGORITHMS: tuple[str, ...] = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)
_ALGORITHMS_FOR_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256"),
    "rsa-sha2-512": ("rsa-sha2-512", "rsa-sha2-256"),
    "rsa-sha2-256": ("rsa-sha2-512", "rsa-sha2-256"),
}

# Dead peers are found by TCP keepalive (paramiko's own keepalive only keeps NAT state).
_TCP_KEEPALIVE_INTERVAL = 10
_TCP_KEEPALIVE_PROBES = 3


@dataclass(frozen=True)
class ConnectSpec:
    """Everything needed to connect; secrets live only in this object, in the process that connects."""

    address: str
    port: int
    username: str
    password: str | None = field(default=None, repr=False)  # never in a log line or traceback
    private_key: str | None = field(default=None, repr=False)  # OpenSSH / PEM private key text
    passphrase: str | None = field(default=None, repr=False)
    trusted_keys: tuple[tuple[str, str], ...] = ()  # (key_type, base64 blob) pairs trusted for this host
    trust_on_first_use: bool = False  # accept any key when trusted_keys is empty
    connect_timeout: float = 10.0
    keepalive_seconds: int = 30
    secrets: tuple[str, ...] = field(default=(), repr=False)  # for redaction: password, passphrase
    name: str = ""  # the host's name, so that an error on a hop says which host
    host_ref: str = ""  # whatever identifies the host to the caller; carried by host key errors
    # The jump hosts to go through, outermost first; each a spec of its own (without hops).
    hops: tuple[ConnectSpec, ...] = ()


def fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:<base64 without padding>`` as ssh-keygen -l prints it."""
    return fingerprint_of_blob(key.asbytes())


def seen_key(key: paramiko.PKey) -> SeenKey:
    return SeenKey(key_type=key.get_name(), public_key=key.get_base64(), fingerprint=fingerprint(key))


@dataclass
class Connection:
    """A live, authenticated SSH connection and the host key it was verified with.

    ``hops`` are the jump connections it runs through (outermost first). Without a ``lease``
    they belong to this connection alone and close with it; with one they are shared
    (``sshlib.jumps``) and closing lets go of them.
    """

    client: paramiko.SSHClient
    host_key: SeenKey
    hops: tuple[Connection, ...] = ()
    name: str = ""
    lease: Lease | None = field(default=None, repr=False)

    def is_active(self) -> bool:
        transport = self.client.get_transport()
        if transport is None or not transport.is_active() or not transport.is_authenticated():
            return False
        return all(hop.is_active() for hop in self.hops)

    def close(self) -> None:
        # Innermost first: each channel closes while the transport it runs on is still up.
        self.client.close()
        if self.lease is not None:
            self.lease.release()  # once; the pool closes a hop with its last user
            return
        for hop in reversed(self.hops):
            hop.close()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko (before authentication) when the server's key is not in our host keys."""

    def __init__(self, has_trusted_keys: bool, trust_on_first_use: bool) -> None:
        self.has_trusted_keys = has_trusted_keys
        self.trust_on_first_use = trust_on_first_use

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        seen = seen_key(key)
        if self.has_trusted_keys:
            # Only reachable when no trusted key could be parsed: the server's key is not among them.
            raise HostKeyChanged(seen)
        if not self.trust_on_first_use:
            raise HostKeyUnknown(seen)


def _host_key_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def _parse_public_key(key_type: str, blob: str) -> paramiko.PKey | None:
    if key_type.startswith("rsa-sha2-"):
        key_type = "ssh-rsa"  # stored under its signature algorithm: the key itself is ssh-rsa
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except Exception:
        # A key type paramiko cannot verify (e.g. a FIDO key) simply cannot match.
        return None


_TCP_QUICKACK: int = getattr(socket, "TCP_QUICKACK", 0)  # Linux only


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges what it reads at once (Linux ``TCP_QUICKACK``, re-armed per read).

    Used to the first jump host of a chain. A jump host's sshd relays what the next hop sends
    in as many writes as it arrived in, and sets no TCP_NODELAY on a connection without a
    terminal, so its second small write waits for our ACK, which Linux delays up to 40 ms:
    without this, a command through a jump host after a short idle took ~45 ms instead of ~5
    (bench/jump.py). The kernel leaves quick-ack mode on its own, hence the re-arming.
    """

    def recv(self, bufsize: int, flags: int = 0, /) -> bytes:
        self._quickack()
        data = super().recv(bufsize, flags)
        self._quickack()  # also sends an ACK the kernel was delaying for what was just read
        return data

    def _quickack(self) -> None:
        with contextlib.suppress(OSError):
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)


def _quick_ack(sock: socket.socket) -> socket.socket:
    """``sock`` as a ``_QuickAckSocket`` (same connection) where the platform has TCP_QUICKACK."""
    if not _TCP_QUICKACK:
        return sock
    timeout = sock.gettimeout()
    wrapped = _QuickAckSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
    wrapped.settimeout(timeout)
    return wrapped


def _tcp_socket(address: str, port: int, timeout: float, keepalive_idle: int) -> socket.socket:
    where = f"{address}:{port}"
    try:
        sock = socket.create_connection((address, port), timeout=timeout)
    except ConnectionRefusedError:
        raise ConnectFailed(f"connection refused by {where}") from None
    except TimeoutError:
        raise ConnectFailed(f"timed out after {timeout:g} s connecting to {where}") from None
    except socket.gaierror as exc:
        raise ConnectFailed(f"cannot resolve {address}: {exc.strerror}") from None
    except OSError as exc:
        raise ConnectFailed(f"cannot connect to {where}: {exc.strerror or exc}") from None
    try:
        # Without TCP_NODELAY every small request waits for a delayed ACK (~40 ms per command).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, keepalive_idle))
        if hasattr(socket, "TCP_KEEPINTVL"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, _TCP_KEEPALIVE_INTERVAL)
        if hasattr(socket, "TCP_KEEPCNT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, _TCP_KEEPALIVE_PROBES)
    except OSError:
        sock.close()
        raise
    return sock


_KEY_CLASSES: tuple[tuple[type, type[paramiko.PKey]], ...] = (
    (ed25519.Ed25519PrivateKey, paramiko.Ed25519Key),
    (ec.EllipticCurvePrivateKey, paramiko.ECDSAKey),
    (rsa.RSAPrivateKey, paramiko.RSAKey),
)


# What the connecting side says for each reason a stored key cannot be used.
_KEY_PROBLEMS = {
    "passphrase_required": "the private key is encrypted and no passphrase was given",
    "wrong_passphrase": "the private key could not be decrypted: wrong passphrase or damaged key",
    "unsupported": "the private key could not be loaded: unsupported key type",
    "unreadable": "the private key could not be parsed (expected OpenSSH or PEM format)",
}


def decrypted_private_key(text: str, passphrase: str | None = None) -> SupportedKey:
    """Parse an OpenSSH or PEM private key, decrypting it if needed (for paramiko or libssh2).

    Raises AuthenticationFailed with a message that never contains the key or passphrase.
    """
    try:
        return parse_private_key(text, passphrase)
    except PrivateKeyError as exc:
        raise AuthenticationFailed(_KEY_PROBLEMS[exc.problem]) from None


def load_private_key(text: str, passphrase: str | None = None) -> paramiko.PKey:
    """Parse an OpenSSH or PEM private key for paramiko, decrypting it if needed.

    Raises AuthenticationFailed with a message that never contains the key or passphrase.
    """
    loaded = decrypted_private_key(text, passphrase)
    for crypto_type, key_class in _KEY_CLASSES:
        if isinstance(loaded, crypto_type):
            # paramiko's loaders only read unencrypted OpenSSH text for every key type alike.
            unencrypted = loaded.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption(),
            ).decode("ascii")
            return key_class.from_private_key(io.StringIO(unencrypted))
    raise AuthenticationFailed(_KEY_PROBLEMS["unsupported"])


def _disabled_host_key_algorithms(trusted: list[paramiko.PKey]) -> list[str]:
    """Host key algorithms to refuse, so the server proves a key of a type we actually trust.

    paramiko negotiates the first algorithm of its list the server also offers; a server with
    ed25519 and RSA keys would otherwise present ed25519 while we only trust its RSA key.
    """
    allowed: set[str] = set()
    for key in trusted:
        allowed.update(_ALGORITHMS_FOR_KEY_TYPE.get(key.get_name(), (key.get_name(),)))
    return [algorithm for algorithm in HOST_KEY_ALGORITHMS if algorithm not in allowed]


def open_connection(spec: ConnectSpec, jumps: JumpPool | None = None) -> Connection:
    """Connect (through ``spec.hops`` if any), verify every host key, authenticate everywhere.

    With ``jumps``, the hops are shared with the other connections of that pool that go
    through the same chain (a live hop is reused as it is; a new one is verified as usual).
    Raises ConnectFailed, HostKeyUnknown, HostKeyChanged, AuthenticationFailed; on a hop the
    message names the hop and the key errors carry the hop's ``host_ref``. Whatever was
    opened (or held) before a failure is closed (or let go).
    """
    if any(hop.hops for hop in spec.hops):
        raise ValueError("a hop's spec carries no hops of its own: give the whole chain, outermost first")
    if jumps is not None and spec.hops:
        return _open_through_shared(spec, jumps)
    opened = _open_hops(spec.hops)
    try:
        connection = _connect_one(spec, via=opened[-1] if opened else None, is_hop=False)
    except BaseException:
        _close_hops(opened)
        raise
    connection.hops = opened
    return connection


def _open_hops(hops: tuple[ConnectSpec, ...]) -> tuple[Connection, ...]:
    """The chain's own connections, outermost first; nothing left open when one fails."""
    opened: list[Connection] = []
    try:
        for hop in hops:
            opened.append(_connect_one(hop, via=opened[-1] if opened else None, is_hop=True))
    except BaseException:
        _close_hops(opened)
        raise
    return tuple(opened)


def _close_hops(opened: tuple[Connection, ...] | list[Connection]) -> None:
    for hop_connection in reversed(opened):
        hop_connection.close()


def _open_hop(spec: ConnectSpec, via: Connection | None) -> Connection:
    return _connect_one(spec, via=via, is_hop=True)


def _open_through_shared(spec: ConnectSpec, jumps: JumpPool) -> Connection:
    lease = jumps.lease(spec.hops, _open_hop)
    try:
        hops = lease.connections
        connection = _connect_one(spec, via=hops[-1], is_hop=False)
    except BaseException:
        lease.release()
        raise
    connection.hops = hops
    connection.lease = lease
    return connection


def _hop_label(spec: ConnectSpec) -> str:
    return f"jump host '{spec.name}'" if spec.name else f"jump host {spec.address}:{spec.port}"


class _HopCouldNotForward(ConnectFailed):
    """The previous hop could not reach the next one; the message already names that hop."""


def _channel_to(via: Connection, address: str, port: int, timeout: float) -> paramiko.Channel:
    """A ``direct-tcpip`` channel of ``via`` to address:port: the socket of the next hop."""
    where = f"{address}:{port}"
    label = f"jump host '{via.name}'" if via.name else "the jump host"
    transport = via.client.get_transport()
    if transport is None or not transport.is_active():
        raise _HopCouldNotForward(f"{label} is no longer connected")
    try:
        # The originator fields are informational to the server: no address of ours means anything there.
        return transport.open_channel(
            "direct-tcpip", dest_addr=(address, port), src_addr=("127.0.0.1", 0), timeout=timeout
        )
    except paramiko.ChannelException as exc:
        raise _HopCouldNotForward(f"{label} could not connect to {where}: {exc.text or 'refused'}") from None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise _HopCouldNotForward(f"{label} could not open a channel to {where}: {one_line(exc)}") from None


def _connect_one(spec: ConnectSpec, via: Connection | None, is_hop: bool) -> Connection:
    try:
        return _connect_direct(spec, via, relays=is_hop)
    except (HostKeyUnknown, HostKeyChanged) as exc:
        message = f"{_hop_label(spec)}: {exc}" if is_hop else str(exc)
        raise type(exc)(exc.seen, message, host_ref=spec.host_ref) from None
    except _HopCouldNotForward:
        raise
    except (ConnectFailed, AuthenticationFailed) as exc:
        if not is_hop:
            raise
        raise type(exc)(f"{_hop_label(spec)}: {exc}") from None


def _transport(sock: Any, disabled_algorithms: dict[str, list[str]] | None = None) -> QuietTransport:
    """A session's transport: quiet while idle (sshlib/quiet.py), fast ciphers first (sshlib/ciphers.py),
    socket reads that take what is waiting (sshlib/packet_reads.py)."""
    made = QuietTransport(sock, disabled_algorithms=disabled_algorithms)
    ciphers.prefer_fast(made)
    packet_reads.install(made)
    return made


def _connect_direct(spec: ConnectSpec, via: Connection | None, relays: bool = False) -> Connection:
    """One connection, over TCP or (``via``) over a channel of the previous hop.

    ``relays``: the connection is a jump host's, carrying the traffic of the hosts behind it.
    """
    where = f"{spec.address}:{spec.port}"
    pkey = load_private_key(spec.private_key, spec.passphrase) if spec.private_key else None
    if pkey is None and spec.password is None:
        raise AuthenticationFailed("no password or private key given")

    trusted = [
        key for key in (_parse_public_key(kind, blob) for kind, blob in spec.trusted_keys) if key is not None
    ]
    client = paramiko.SSHClient()
    client.set_log_channel(TRANSPORT_LOG)
    client.set_missing_host_key_policy(
        _HostKeyPolicy(has_trusted_keys=bool(spec.trusted_keys), trust_on_first_use=spec.trust_on_first_use)
    )
    host_keys = client.get_host_keys()
    for key in trusted:
        host_keys.add(_host_key_name(spec.address, spec.port), key.get_name(), key)
    disabled = {"keys": _disabled_host_key_algorithms(trusted)} if trusted else None

    via_transport = via.client.get_transport() if via is not None else None
    sock: socket.socket | paramiko.Channel
    if via is not None:
        sock = _channel_to(via, spec.address, spec.port, spec.connect_timeout)
    else:
        sock = _tcp_socket(spec.address, spec.port, spec.connect_timeout, spec.keepalive_seconds or 30)
        if relays:
            sock = _quick_ack(sock)
    try:
        client.connect(
            spec.address,
            port=spec.port,
            username=spec.username,
            password=spec.password,
            pkey=pkey,
            sock=sock,
            timeout=spec.connect_timeout,
            banner_timeout=spec.connect_timeout,
            auth_timeout=spec.connect_timeout,
            look_for_keys=False,
            allow_agent=False,
            disabled_algorithms=disabled,
            # The stubs describe paramiko 3's factory call (with gss_kex); 5.x passes only
            # the socket and disabled_algorithms, as _transport accepts.
            transport_factory=_transport,  # type: ignore[arg-type]
        )
        transport = client.get_transport()
        if transport is None or not transport.is_authenticated():
            raise AuthenticationFailed(f"authentication failed for user {spec.username}")
        _settle(transport, spec.keepalive_seconds)
        return Connection(client=client, host_key=seen_key(transport.get_remote_server_key()), name=spec.name)
    except BaseException as exc:
        client.close()
        sock.close()
        if isinstance(exc, SshError):
            raise
        if isinstance(exc, paramiko.BadHostKeyException):
            raise HostKeyChanged(seen_key(exc.key)) from None
        if isinstance(exc, paramiko.AuthenticationException):
            raise AuthenticationFailed(f"authentication failed for user {spec.username}") from None
        if isinstance(exc, IncompatiblePeer) and trusted and "host key" in str(exc):
            # The server no longer offers any key type we trust: report what it does offer.
            offered = _scan_quietly(spec.address, spec.port, spec.connect_timeout, via_transport)
            if offered:
                raise HostKeyChanged(
                    offered[0],
                    f"host key changed: server offers none of the trusted key types; "
                    f"it presented {offered[0].key_type} {offered[0].fingerprint}",
                ) from None
        if _is_timeout(exc):
            raise ConnectFailed(f"timed out after {spec.connect_timeout:g} s connecting to {where}") from None
        if isinstance(exc, paramiko.SSHException | EOFError | OSError):
            raise ConnectFailed(f"SSH handshake with {where} failed: {one_line(exc)}") from None
        raise


def _settle(transport: paramiko.Transport, keepalive_seconds: int) -> None:
    """The keepalive, and an idle connection's thread asleep (sshlib/quiet.py), but for a relay.

    The first jump host's socket (``_QuickAckSocket``) re-arms TCP_QUICKACK at each read, and
    the kernel drops quick-ack mode when we send: with reads only every 30 s, a command through
    the hop waited ~40 ms on a delayed ACK again (bench/jump.py, 1 hop p50 +15 ms). It keeps
    paramiko's 0.1 s poll; jump connections are shared per process, so there are only a few.
    """
    if isinstance(transport.sock, _QuickAckSocket):
        if keepalive_seconds > 0:
            transport.set_keepalive(keepalive_seconds)
        return
    quieten(transport, keepalive_seconds)


def _is_timeout(exc: BaseException) -> bool:
    """paramiko wraps socket timeouts (banner, negotiation) in plain SSHExceptions."""
    if isinstance(exc, TimeoutError):
        return True
    if isinstance(exc.__cause__ or exc.__context__, TimeoutError):
        return True
    return isinstance(exc, paramiko.SSHException) and "timed out" in str(exc).lower()


def _scan_quietly(
    address: str, port: int, timeout: float, via: paramiko.Transport | None = None
) -> list[SeenKey]:
    with contextlib.suppress(SshError):
        return scan_host_keys(address, port, timeout, via=via)
    return []


def _fetch_host_key(
    address: str, port: int, algorithm: str, timeout: float, via: paramiko.Transport | None
) -> paramiko.PKey | None:
    """The server's key for one host key algorithm, or None if it does not offer that algorithm."""
    sock: socket.socket | paramiko.Channel
    if via is None:
        sock = _tcp_socket(address, port, timeout, 30)
    else:
        try:
            sock = via.open_channel(
                "direct-tcpip", dest_addr=(address, port), src_addr=("127.0.0.1", 0), timeout=timeout
            )
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise ConnectFailed(f"cannot reach {address}:{port} to scan it: {one_line(exc)}") from None
    transport = paramiko.Transport(
        sock, disabled_algorithms={"keys": [a for a in HOST_KEY_ALGORITHMS if a != algorithm]}
    )
    transport.set_log_channel(TRANSPORT_LOG)
    transport.banner_timeout = timeout
    try:
        transport.start_client(timeout=timeout)
        return transport.get_remote_server_key()
    except IncompatiblePeer:
        log.debug("%s:%s offers no %s host key", address, port, algorithm)
        return None
    except (paramiko.SSHException, EOFError, OSError) as exc:
        raise ConnectFailed(f"SSH handshake with {address}:{port} failed: {one_line(exc)}") from None
    finally:
        transport.close()
        sock.close()


def scan_host_keys(
    address: str, port: int, timeout: float = 10.0, via: paramiko.Transport | None = None
) -> list[SeenKey]:
    """Fetch every host key type the server offers (no authentication); ``via``: through a jump host."""
    found: dict[str, SeenKey] = {}
    for algorithm in HOST_KEY_ALGORITHMS:
        if algorithm == "rsa-sha2-256" and any(k.key_type == "ssh-rsa" for k in found.values()):
            continue  # the same RSA key again, signed with another hash
        key = _fetch_host_key(address, port, algorithm, timeout, via)
        if key is not None:
            seen = seen_key(key)
            found.setdefault(seen.fingerprint, seen)
    return list(found.values())


def scan_through(
    hops: tuple[ConnectSpec, ...], address: str, port: int, timeout: float = 10.0
) -> list[SeenKey]:
    """``scan_host_keys`` of a host reached through ``hops`` (outermost first; none: directly).

    Each hop is verified against its trusted keys and logged in to, as for a session: a
    refused hop raises what ``open_connection`` raises for it, naming it. The hops are this
    scan's own and closed after it.
    """
    if not hops:
        return scan_host_keys(address, port, timeout)
    opened = _open_hops(hops)
    try:
        return scan_host_keys(address, port, timeout, via=opened[-1].client.get_transport())
    finally:
        _close_hops(opened)
