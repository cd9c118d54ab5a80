"""Who may run what, where: MCP clients, their grants and command rules, and approval requests.

Imported by ``hosts.models`` (Django finds models there); rules live next to the hosts they
guard. How the rows are evaluated is in ``hosts.access`` (grants) and ``hosts.policy``
(command patterns).
"""

from __future__ import annotations

from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


class ClientGroup(models.Model):
    """A set of clients that share grants (a team, or all the CI agents)."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class McpClient(models.Model):
    """A caller of the MCP tools: an agent with a bearer token, or the local OS user over stdio.

    The token is shown once when it is made and stored only as its SHA-256 digest; it has
    256 random bits, so a fast digest is enough (nothing to brute-force as with a password).
    """

    name = models.SlugField(max_length=100, unique=True, help_text="Recorded on every audit row.")
    owner = models.CharField(
        max_length=150,
        blank=True,
        default="",
        help_text="Admin username responsible for this client; an owner cannot approve its requests.",
    )
    description = models.TextField(blank=True, default="")
    groups = models.ManyToManyField(ClientGroup, blank=True, related_name="clients")
    enabled = models.BooleanField(default=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="The token stops working then.")
    local_user = models.CharField(
        max_length=150,
        blank=True,
        default="",
        help_text="Set for the local client of an OS user (stdio with no token); such a client has no token.",
    )
    # Set for a person or service the OAuth identity provider vouches for (docs/http.md): the
    # client is theirs, made on first use; its groups follow the token's group claim.
    oauth_issuer = models.CharField(
        max_length=255, blank=True, default="", editable=False, help_text="The identity provider (issuer)."
    )
    oauth_subject = models.CharField(
        max_length=255,
        blank=True,
        default="",
        editable=False,
        help_text="The token subject (sub) at that issuer: the identity this client is bound to.",
    )
    token_digest = models.CharField(max_length=64, blank=True, default="", editable=False, db_index=True)
    token_prefix = models.CharField(
        max_length=16, blank=True, default="", editable=False, help_text="The token's first characters."
    )
    max_concurrent_calls = models.PositiveIntegerField(
        null=True, blank=True, help_text="Calls running at once (empty: no limit)."
    )
    max_calls_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Calls started in any 60 seconds (empty: no limit)."
    )
    max_open_sessions = models.PositiveIntegerField(
        null=True, blank=True, help_text="SSH sessions open at once (empty: no limit)."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP client"
        constraints = [
            # One client per identity: the subject is unique only per issuer (RFC 9068).
            models.UniqueConstraint(
                fields=["oauth_issuer", "oauth_subject"],
                condition=~models.Q(oauth_subject=""),
                name="hosts_mcpclient_one_per_oauth_identity",
            )
        ]

    def __str__(self) -> str:
        return self.name

    def state(self, now: datetime | None = None) -> str:
        """``active``, ``revoked``, ``disabled`` or ``expired``: whether, and why not, it may act.

        Revoked comes first because revoking also disables: the cause is what matters.
        """
        if self.revoked_at is not None:
            return "revoked"
        if not self.enabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"

    def token_refusal(self) -> str:
        """Why this client cannot be given a new token, or "" when it can."""
        if self.oauth_subject:
            return (
                f"'{self.name}' signs in through the identity provider {self.oauth_issuer}; it has no token."
            )
        if self.local_user:
            return f"'{self.name}' is the local client of OS user '{self.local_user}'; it has no token."
        if self.revoked_at is not None:
            return f"'{self.name}' is revoked and stays revoked; add a new client instead."
        return ""

    def refusal(self) -> str:
        """Why this client may not act, in a line fit for the caller ("" when it may)."""
        return {
            "revoked": f"the token of client '{self.name}' was revoked",
            "disabled": f"client '{self.name}' is disabled by an administrator",
            "expired": f"the token of client '{self.name}' expired",
        }.get(self.state(), "")


class Grant(models.Model):
    """Lets a client (or every client of a group) use some hosts, with some permissions.

    A client's permissions on a host are the union of the grants that cover it; command
    rules of all those grants, of the host and of its tags apply together (deny wins).
    """

    client = models.ForeignKey(
        McpClient, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    group = models.ForeignKey(
        ClientGroup, null=True, blank=True, on_delete=models.CASCADE, related_name="grants"
    )
    description = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)
    all_hosts = models.BooleanField(default=False, help_text="Every host, present and future.")
    hosts = models.ManyToManyField("hosts.Host", blank=True, related_name="grants")
    tags = models.JSONField(default=list, blank=True, help_text="Hosts with any of these tags.")
    can_list = models.BooleanField(default=True, help_text="See the hosts in ssh_list_hosts.")
    can_execute = models.BooleanField(default=True, help_text="Run commands (subject to command rules).")
    can_read_files = models.BooleanField(default=True, help_text="Download files and list directories.")
    can_write_files = models.BooleanField(default=False, help_text="Upload files.")
    can_sudo = models.BooleanField(default=False, help_text="Run commands with sudo=true.")
    read_only = models.BooleanField(
        default=False,
        help_text=(
            "Commands only from this grant's allow rules and only if they cannot write files"
            " (see docs/security.md), file reads only, no uploads."
        ),
    )
    can_adhoc_connect = models.BooleanField(
        default=False,
        help_text="Register new hosts from ssh_connect (only with SSHCONTROL_ALLOW_ADHOC_CONNECT=true).",
    )
    adhoc_trust_on_first_use = models.BooleanField(
        default=False, help_text="Hosts registered ad hoc trust their first host key."
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        who = self.client.name if self.client_id and self.client else (self.group.name if self.group else "?")
        what = "all hosts" if self.all_hosts else ", ".join(self.tag_list) or "listed hosts"
        return f"{who}: {what}"

    def scope_text(self) -> str:
        """The hosts it covers, in words: "all hosts", or names and tag:... entries."""
        if self.all_hosts:
            return "all hosts"
        parts = [h.name for h in self.hosts.all()] + [f"tag:{t}" for t in self.tag_list]
        return ", ".join(parts) or "no hosts"

    def permissions_text(self) -> str:
        """What it allows, in words, e.g. "list, execute, read files (read-only)"."""
        flags = (
            ("list", self.can_list),
            ("execute", self.can_execute),
            ("read files", self.can_read_files),
            ("write files", self.can_write_files),
            ("sudo", self.can_sudo),
            ("ad hoc connect", self.can_adhoc_connect),
        )
        text = ", ".join(name for name, on in flags if on) or "nothing"
        return f"{text} (read-only)" if self.read_only else text

    @property
    def tag_list(self) -> list[str]:
        return [str(t) for t in self.tags] if isinstance(self.tags, list) else []

    def clean(self) -> None:
        if bool(self.client_id) == bool(self.group_id):
            raise ValidationError("A grant is for exactly one client or one group.")
        if not isinstance(self.tags, list):
            raise ValidationError({"tags": "Tags are a JSON list of strings."})


class CommandRule(models.Model):
    """A regular expression over a command line that allows, denies or asks an admin.

    Attached to a grant, a host or a tag (exactly one). Patterns guard against accidents,
    not against an adversary: the boundary is the grant and a low-privilege remote account.
    """

    class Action(models.TextChoices):
        ALLOW = "allow", "Allow"
        DENY = "deny", "Deny"
        APPROVE = "approve", "Require approval"

    action = models.CharField(max_length=10, choices=Action.choices)
    pattern = models.TextField(help_text="Python regular expression.")
    grant = models.ForeignKey(Grant, null=True, blank=True, on_delete=models.CASCADE, related_name="rules")
    host = models.ForeignKey(
        "hosts.Host", null=True, blank=True, on_delete=models.CASCADE, related_name="command_rules"
    )
    tag = models.CharField(max_length=100, blank=True, default="")
    description = models.CharField(max_length=200, blank=True, default="")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} /{self.pattern}/"

    def clean(self) -> None:
        from hosts.policy import PatternError, compile_pattern

        if sum((bool(self.grant_id), bool(self.host_id), bool(self.tag))) != 1:
            raise ValidationError("A rule belongs to exactly one grant, host or tag.")
        try:
            compile_pattern(self.pattern)
        except PatternError as exc:
            raise ValidationError({"pattern": str(exc)}) from exc


class ApprovalRequest(models.Model):
    """A command that a rule says an admin must approve before it runs (at most once)."""

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        APPROVED = "approved", "Approved"
        DENIED = "denied", "Denied"
        EXPIRED = "expired", "Expired"
        EXECUTED = "executed", "Executed"

    client = models.ForeignKey(McpClient, on_delete=models.CASCADE, related_name="approval_requests")
    # Who may not decide is fixed when the request is made: editing the client later (blanking
    # its owner, say) must not open the decision to the person the rule keeps out.
    client_owner = models.CharField(
        max_length=150, blank=True, default="", editable=False, help_text="The client's owner when it asked."
    )
    # Admins who changed the client's owner or groups, or one of its grants, while this was
    # pending: one username per line, each line framed by newlines so a lookup matches whole names.
    barred_deciders = models.TextField(blank=True, default="", editable=False)
    host = models.ForeignKey("hosts.Host", on_delete=models.CASCADE, related_name="approval_requests")
    session_id = models.CharField(max_length=64, blank=True, default="")
    command = models.TextField()
    working_directory = models.TextField(blank=True, default="")
    timeout = models.FloatField(null=True, blank=True)
    sudo = models.BooleanField(default=False)
    # stdin is kept for the run only and wiped when the request is executed or closed.
    stdin = models.TextField(blank=True, default="", editable=False)
    reason = models.TextField(blank=True, default="", help_text="Why the caller says it needs this.")
    rule = models.TextField(blank=True, default="", help_text="The pattern that asked for approval.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_by = models.CharField(max_length=150, blank=True, default="")
    decided_at = models.DateTimeField(null=True, blank=True)
    comment = models.TextField(blank=True, default="")
    audit_event_id = models.BigIntegerField(null=True, blank=True, help_text="The call that asked.")
    executed_event_id = models.BigIntegerField(null=True, blank=True, help_text="The call that ran it.")
    # A request of ``ssh_execute_many`` covers one batch: the hosts a rule held back (``host`` is
    # the first of them), the batch's id (every audit row of the batch carries it) and how to run
    # it again from ``ssh_approval_status``: every host of the batch in order, and its plan.
    batch_id = models.CharField(max_length=40, blank=True, default="", db_index=True)
    batch_hosts = models.JSONField(default=list, blank=True, help_text="The hosts the approval covers.")
    batch_plan = models.JSONField(default=dict, blank=True, editable=False)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"#{self.pk} {self.client.name} on {self.host.name}: {self.command[:60]}"

    @property
    def covered_hosts(self) -> list[str]:
        """The hosts the decision is about: the batch's listed hosts, or the one host."""
        if self.batch_id and isinstance(self.batch_hosts, list):
            return [str(name) for name in self.batch_hosts]
        return [self.host.name]

    @property
    def barred(self) -> list[str]:
        """The admins barred from deciding because they changed the client or a grant meanwhile."""
        return [name for name in self.barred_deciders.split("\n") if name]
