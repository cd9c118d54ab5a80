"""Host keys as an administrator pins them, for tests."""

from __future__ import annotations

import paramiko

from hosts.models import Host, HostKey
from sshlib.connect import fingerprint


def trust(host: Host, key: paramiko.PKey, approved_by: str = "test-suite") -> HostKey:
    """Store ``key`` as a trusted key of ``host``, approved by ``approved_by``."""
    return HostKey.objects.create(
        host=host,
        key_type=key.get_name(),
        public_key=key.get_base64(),
        fingerprint=fingerprint(key),
        state=HostKey.State.TRUSTED,
        approved_by=approved_by,
    )
