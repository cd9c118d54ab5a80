"""What bare ``sshcontrol`` prints: sshcontrol's own commands first, grouped, one line each.

Django's help lists every command of every installed app (startproject, makemigrations, ...)
in alphabetical blocks; a new operator needs the handful that run and manage sshcontrol.
Django's full list stays one command away (``sshcontrol help --commands``).
"""

from __future__ import annotations

GROUPS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "Serving",
        (
            ("mcp_serve", "serve the MCP tools over stdio, or over HTTP with the admin on one port"),
            ("serve", "serve the admin alone"),
        ),
    ),
    (
        "Hosts and clients",
        (
            ("hosts", "add, list, scan, trust and remove hosts"),
            ("import_hosts", "import hosts from an ssh_config or an Ansible inventory"),
            ("clients", "make MCP clients, issue and revoke tokens, grant hosts"),
        ),
    ),
    (
        "Audit log",
        (
            ("audit_export", "export the audit log as JSON lines or CSV"),
            ("audit_verify", "check the audit log's hash chain"),
            ("audit_prune", "delete finished audit rows older than some days"),
        ),
    ),
    (
        "Keys",
        (
            ("generate_field_key", "print a new key for SSHCONTROL_FIELD_KEYS"),
            ("rotate_field_keys", "re-encrypt every secret under the newest field key"),
        ),
    ),
    (
        "Set-up and upkeep",
        (
            ("migrate", "create or update the database schema"),
            ("check", "check the configuration (--deploy: for production)"),
            ("createsuperuser", "make an admin account"),
            ("changepassword", "change an admin's password"),
        ),
    ),
)


def overview() -> str:
    width = max(len(name) for _, commands in GROUPS for name, _ in commands)
    lines = [
        "Usage: sshcontrol COMMAND [options]",
        "",
        "`sshcontrol help COMMAND` shows a command's options; `sshcontrol help --commands` lists",
        "every command, Django's own included.",
    ]
    for title, commands in GROUPS:
        lines += ["", f"{title}:"]
        lines += [f"  {name.ljust(width)}  {summary}" for name, summary in commands]
    return "\n".join(lines) + "\n"
