"""Admin for the inventory and its access policy.

Credentials, hosts and their host keys; MCP clients, their groups, grants and command
rules; and the approval requests an admin decides.

Secrets are write-only. A credential's secret and sudo password are typed once (on the add
page or on their own pages, like a user's password in django.contrib.auth) and never shown
again; a client's token is shown once, on the page that made it. The encrypted columns, the
token digest and an approval request's stdin are kept out of every form, list, search and
filter.
"""

from hosts.admin import approval, client, credential, grant, host, host_key

__all__ = ["approval", "client", "credential", "grant", "host", "host_key"]
