"""Admin for the inventory: credentials, hosts and their host keys.

A credential's secret is write-only. It is typed once on the add page or on its own
"Replace secret" page (like a user's password in django.contrib.auth), is never shown
again, and the encrypted columns are kept out of every form, list, search and filter.
"""

from hosts.admin import credential, host, host_key

__all__ = ["credential", "host", "host_key"]
