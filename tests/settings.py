"""Settings for the test run: the real settings, with every piece of state in a throwaway directory.

Django reads settings before any conftest runs, so the environment is prepared here.
"""

import os
import tempfile

# A directory made here is removed when the run ends (tests/conftest.py); one given is kept.
TEST_DATA_DIR_MADE = ""
if not os.environ.get("SSHCONTROL_DATA_DIR"):
    TEST_DATA_DIR_MADE = os.environ["SSHCONTROL_DATA_DIR"] = tempfile.mkdtemp(prefix="sshcontrol-test-data-")
# A fixed Fernet key for tests only (32 bytes, urlsafe base64); real deployments generate their own.
os.environ.setdefault("SSHCONTROL_FIELD_KEYS", "dGVzdC1rZXktZm9yLXNzaGNvbnRyb2wtdGVzdHMtMDE=")

from sshcontrol.settings import *  # noqa: E402, F403
