"""Inventory models: credentials (encrypted), hosts and their pinned host keys."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from hosts import crypto
from hosts.keyfiles import KeyInfo, inspect_private_key, normalize_key_text


class Credential(models.Model):
    """A login secret (password or private key), encrypted at rest.

    The plaintext is only ever produced by ``secret()`` / ``passphrase()``, which are
    called where the SSH connection is made; admin forms and tool results see only
    ``has_secret`` and the public key fingerprint.
    """

    class Kind(models.TextChoices):
        PASSWORD = "password", "Password"
        PRIVATE_KEY = "private_key", "Private key"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    secret_encrypted = models.TextField(blank=True, default="", editable=False)
    passphrase_encrypted = models.TextField(blank=True, default="", editable=False)
    # Fed to ``sudo -S`` on stdin for ssh_execute(sudo=true); never on a command line.
    sudo_password_encrypted = models.TextField(blank=True, default="", editable=False)
    public_key = models.TextField(
        blank=True, default="", editable=False, help_text="OpenSSH public key line."
    )
    fingerprint = models.CharField(max_length=100, blank=True, default="", editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret_encrypted)

    def set_secret(self, plaintext: str) -> None:
        self.secret_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    def set_passphrase(self, plaintext: str) -> None:
        self.passphrase_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    def store_password(self, password: str) -> None:
        """Make this a password credential; key material left from a previous kind is cleared."""
        self.kind = self.Kind.PASSWORD
        self.set_secret(password)
        self.set_passphrase("")
        self.public_key = ""
        self.fingerprint = ""

    def store_private_key(self, text: str, passphrase: str = "") -> KeyInfo:
        """Validate and store a private key with its public half. Raises keyfiles.KeyFileError.

        The key is loaded before anything is stored, so a wrong passphrase or an unsupported
        key type is reported to the admin registering it rather than at the first connection.
        """
        info = inspect_private_key(text, passphrase or None)
        self.kind = self.Kind.PRIVATE_KEY
        self.set_secret(normalize_key_text(text))
        self.set_passphrase(passphrase)
        self.public_key = info.public_key
        self.fingerprint = info.fingerprint
        return info

    def set_sudo_password(self, plaintext: str) -> None:
        self.sudo_password_encrypted = crypto.encrypt(plaintext) if plaintext else ""

    @property
    def has_sudo_password(self) -> bool:
        return bool(self.sudo_password_encrypted)

    def sudo_password(self) -> str:
        return crypto.decrypt(self.sudo_password_encrypted) if self.sudo_password_encrypted else ""

    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else ""

    def passphrase(self) -> str:
        return crypto.decrypt(self.passphrase_encrypted) if self.passphrase_encrypted else ""


class Host(models.Model):
    """A server an admin registered; the model refers to it only by ``name``."""

    name = models.SlugField(max_length=100, unique=True, help_text="What MCP clients call this host.")
    address = models.CharField(max_length=255, help_text="DNS name or IP address.")
    port = models.PositiveIntegerField(default=22)
    username = models.CharField(max_length=100)
    description = models.TextField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True, help_text="A list of short labels.")
    enabled = models.BooleanField(default=True)
    credential = models.ForeignKey(
        Credential, on_delete=models.PROTECT, related_name="hosts", null=True, blank=True
    )
    trust_on_first_use = models.BooleanField(
        default=False, help_text="Trust the first host key seen when no key is trusted yet."
    )
    proxy_jump = models.CharField(
        max_length=255,
        blank=True,
        default="",
        help_text="ProxyJump as an import read it (user@jumphost:port), for reference; "
        "connections go through the jump host below.",
    )
    jump_host = models.ForeignKey(
        "self",
        # A jump host that hosts behind it still use cannot be deleted from under them.
        on_delete=models.PROTECT,
        related_name="jumped_from",
        null=True,
        blank=True,
        help_text="The host to connect through (its next hop), itself a registered host with its own "
        "credential and pinned host key. Its own jump host, if any, comes before it.",
    )
    last_connected_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        try:
            self.jump_chain()
        except JumpLoop as exc:
            raise ValidationError({"jump_host": str(exc)}) from None
        except Host.DoesNotExist:
            pass  # a jump host that does not exist: clean_fields() has reported it

    def jump_chain(self) -> list[Host]:
        """The jump hosts a connection goes through, outermost first (empty: a direct connection).

        Follows ``jump_host`` links: this host's own (possibly unsaved) value, then what the
        database says of each hop. Raises ``JumpLoop`` when the links come back to a host
        already on the chain, this one included. Each hop not already loaded costs a query;
        lists select the first two levels (``select_related("jump_host__jump_host")``).
        """
        if self.jump_host_id is not None and self.jump_host_id == self.pk:
            raise JumpLoop(f"host '{self.name}' cannot be its own jump host")
        chain: list[Host] = []
        on_chain = {self.pk} if self.pk is not None else set()
        hop = self.jump_host
        while hop is not None:
            if hop.pk in on_chain:
                names = " -> ".join([self.name, *(h.name for h in chain), hop.name])
                raise JumpLoop(f"the jump hosts make a loop: {names}")
            on_chain.add(hop.pk)
            chain.append(hop)
            hop = hop.jump_host
        chain.reverse()
        return chain

    @property
    def key_state(self) -> str:
        """changed, trusted, pending or unknown (see ``key_state_of``).

        Reads ``host_keys.all()``, so a list that prefetches the keys pays no query per host.
        """
        return key_state_of((k.state, k.key_type) for k in self.host_keys.all())

    @property
    def tag_list(self) -> list[str]:
        """The tags as strings; a value that is not a list (never stored by the forms) has none."""
        return [str(t) for t in self.tags] if isinstance(self.tags, list) else []


class JumpLoop(ValueError):
    """Following the jump host links comes back to a host already on the chain."""


def key_state_of(keys: Iterable[tuple[str, str]]) -> str:
    """The state of a host's key set, from its keys' (state, key_type) pairs.

    ``changed`` means a pending key of a type that already has a trusted key: the server
    now presents a different key than the one approved, which an admin must look at.
    Pending keys of other types beside a trusted one (left by a scan) are not a change.
    """
    trusted_types: set[str] = set()
    pending_types: set[str] = set()
    for state, key_type in keys:
        if state == HostKey.State.TRUSTED:
            trusted_types.add(key_type)
        elif state == HostKey.State.PENDING:
            pending_types.add(key_type)
    if trusted_types & pending_types:
        return "changed"
    if trusted_types:
        return "trusted"
    if pending_types:
        return "pending"
    return "unknown"


class HostKey(models.Model):
    """A server public key seen for a host; only ``trusted`` keys let a connection through."""

    class State(models.TextChoices):
        TRUSTED = "trusted", "Trusted"
        PENDING = "pending", "Pending approval"
        REVOKED = "revoked", "Revoked"

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="host_keys")
    key_type = models.CharField(max_length=50)
    public_key = models.TextField(help_text="Base64 key blob, as in known_hosts.")
    fingerprint = models.CharField(max_length=100, help_text="SHA256:... as printed by ssh-keygen -l.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    first_seen_at = models.DateTimeField(default=timezone.now, editable=False)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["host__name", "key_type"]
        constraints = [
            models.UniqueConstraint(fields=["host", "fingerprint"], name="unique_host_fingerprint")
        ]

    def __str__(self) -> str:
        return f"{self.host.name} {self.key_type} {self.fingerprint} ({self.state})"


# The access-policy models live in their own module; importing them here registers them.
from hosts.access_models import (  # noqa: E402
    ApprovalRequest,
    ClientGroup,
    CommandRule,
    Grant,
    McpClient,
)

__all__ = [
    "ApprovalRequest",
    "ClientGroup",
    "CommandRule",
    "Credential",
    "Grant",
    "Host",
    "HostKey",
    "JumpLoop",
    "McpClient",
    "key_state_of",
]
