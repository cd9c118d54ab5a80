"""Django settings, read from the environment only.

With nothing set, sshcontrol runs embedded: SQLite and every piece of state in
``SSHCONTROL_DATA_DIR`` (default ``~/.sshcontrol``), SSH work in the server's own
process, no broker. ``DATABASE_URL`` and ``SSHCONTROL_BROKER_URL`` switch to the
distributed deployment. Values of the wrong shape are reported by the system checks
in ``sshcontrol.checks`` rather than crashing here, so ``manage.py check`` can name them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

import django_stubs_ext

from sshcontrol.datadir import data_dir, ensure_data_dir
from sshcontrol.env import EnvError, envbool, envfloat, envint, envlist, envsecret, envstr

# Lets admin and form classes be written ModelAdmin[Host] for the type checker at runtime too.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent

# Problems found while reading the environment; sshcontrol.checks reports them with ids.
SETTINGS_ERRORS: list[tuple[str, str]] = []


def _guard(check_id: str, read: Any, fallback: Any) -> Any:
    try:
        return read()
    except EnvError as exc:
        SETTINGS_ERRORS.append((check_id, str(exc)))
        return fallback


DATA_DIR = data_dir()


def _secret_key() -> str:
    """SECRET_KEY signs admin sessions; embedded, it is generated once into the data directory."""
    configured = envsecret("SSHCONTROL_SECRET_KEY")
    if configured:
        return configured
    path = ensure_data_dir() / "secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = _guard("sshcontrol.E001", lambda: envbool("SSHCONTROL_DEBUG", False), False)
ALLOWED_HOSTS = envlist("SSHCONTROL_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("SSHCONTROL_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "sshcontrol",
    "hosts",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "sshcontrol.urls"
WSGI_APPLICATION = "sshcontrol.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


SQLITE_OPTIONS = {
    # WAL lets the admin read while mcp_serve writes; synchronous=NORMAL keeps commits
    # durable across process crashes without an fsync per audit row; several processes
    # (mcp_serve, workers, the admin) wait for each other's write locks instead of failing.
    "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=10000;",
    "transaction_mode": "IMMEDIATE",
}


def _database() -> dict[str, Any]:
    url = envstr("DATABASE_URL")
    if url:
        import dj_database_url

        try:
            config: dict[str, Any] = dict(
                dj_database_url.parse(url, conn_max_age=600, conn_health_checks=True)
            )
        except Exception as exc:
            SETTINGS_ERRORS.append(("sshcontrol.E002", f"DATABASE_URL cannot be parsed: {exc}"))
        else:
            if config["ENGINE"].endswith("sqlite3"):
                config["OPTIONS"] = {**SQLITE_OPTIONS, **config.get("OPTIONS", {})}
                config["CONN_MAX_AGE"] = None
            return config
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / "sshcontrol.sqlite3"),
        "OPTIONS": SQLITE_OPTIONS,
        # A file, not the in-memory default: tool calls run in threads with their own connections.
        "TEST": {"NAME": str(DATA_DIR / "test.sqlite3")},
        # Keep each thread's connection: opening one (and its PRAGMAs) costs more than a tool call.
        "CONN_MAX_AGE": None,
    }


DATABASES = {"default": _database()}
# The embedded default: SQLite in the data directory, created and migrated on first use.
EMBEDDED_DATABASE = not envstr("DATABASE_URL")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"

# Encrypted credential fields: comma-separated Fernet keys, newest first.
FIELD_KEYS = envsecret("SSHCONTROL_FIELD_KEYS")

# SSH execution limits.
MAX_OUTPUT_BYTES = _guard(
    "sshcontrol.E003", lambda: envint("SSHCONTROL_MAX_OUTPUT_BYTES", 1 << 20, 1024), 1 << 20
)
DEFAULT_TIMEOUT = _guard("sshcontrol.E004", lambda: envfloat("SSHCONTROL_DEFAULT_TIMEOUT", 60.0, 0.1), 60.0)
MAX_TIMEOUT = _guard("sshcontrol.E005", lambda: envfloat("SSHCONTROL_MAX_TIMEOUT", 3600.0, 1.0), 3600.0)
CONNECT_TIMEOUT = _guard("sshcontrol.E006", lambda: envfloat("SSHCONTROL_CONNECT_TIMEOUT", 10.0, 0.5), 10.0)
MAX_INLINE_DOWNLOAD_BYTES = _guard(
    "sshcontrol.E007", lambda: envint("SSHCONTROL_MAX_INLINE_DOWNLOAD_BYTES", 1 << 20, 1), 1 << 20
)
# What a tool result carries of each output stream (ssh_execute) or of a file (ssh_download_file
# inline): head and tail cut at line boundaries (sshcontrol/mcp/budget.py). The rest is paged.
OUTPUT_BUDGET_BYTES = _guard(
    "sshcontrol.E080", lambda: envint("SSHCONTROL_OUTPUT_BUDGET_BYTES", 16 << 10, 1024), 16 << 10
)
MAX_LIST_ENTRIES = _guard("sshcontrol.E008", lambda: envint("SSHCONTROL_MAX_LIST_ENTRIES", 1000, 1), 1000)
# Output kept on disk where the session is held, for paging (sshcontrol/outputs.py): per stream
# (head and tail beyond it), and removed this long after it was last written.
KEEP_OUTPUT_BYTES = _guard(
    "sshcontrol.E090", lambda: envint("SSHCONTROL_KEEP_OUTPUT_BYTES", 64 << 20, 1024), 64 << 20
)
OUTPUT_RETENTION_SECONDS = _guard(
    "sshcontrol.E091", lambda: envfloat("SSHCONTROL_OUTPUT_RETENTION_SECONDS", 7 * 86400.0, 60.0), 7 * 86400.0
)
AUDIT_OUTPUT_BYTES = _guard(
    "sshcontrol.E009", lambda: envint("SSHCONTROL_AUDIT_OUTPUT_BYTES", 64 << 10, 0), 64 << 10
)
# Where `audit_anchor` appends the chain's head and `audit_verify --anchors` reads it from
# (docs/security.md): best outside the data directory, on storage the database's writer cannot rewrite.
AUDIT_ANCHOR_FILE = envstr("SSHCONTROL_AUDIT_ANCHOR_FILE")
LOCAL_ROOT = Path(envstr("SSHCONTROL_LOCAL_ROOT", str(DATA_DIR / "transfers"))).expanduser()
KEEPALIVE_SECONDS = _guard("sshcontrol.E010", lambda: envint("SSHCONTROL_KEEPALIVE_SECONDS", 30, 0), 30)
# ssh_execute_many on the libssh2 batch engine (sshlib/c_batch.py, sshcontrol/fleet_engine.py):
# embedded only, for hosts with no jump host and no trust-on-first-use. On by default (a third
# of paramiko's CPU per batch, docs/benchmarks.md); its connections are not sessions (no
# SshSession row, nothing ssh_execute can reuse). Off: every batch host goes the paramiko way.
BATCH_ENGINE_LIBSSH2 = envbool("SSHCONTROL_BATCH_ENGINE_LIBSSH2", True)

# Distributed mode: with a broker URL, SSH work goes to Celery workers.
BROKER_URL = envstr("SSHCONTROL_BROKER_URL")
RESULT_BACKEND = envstr("SSHCONTROL_RESULT_BACKEND")
WORKER_HEARTBEAT_SECONDS = _guard(
    "sshcontrol.E013", lambda: envfloat("SSHCONTROL_WORKER_HEARTBEAT_SECONDS", 2.0, 0.2), 2.0
)
# Extra seconds a caller waits for a worker beyond the call's own timeout.
DISPATCH_MARGIN_SECONDS = _guard(
    "sshcontrol.E014", lambda: envfloat("SSHCONTROL_DISPATCH_MARGIN_SECONDS", 15.0, 1.0), 15.0
)
# Transfers across machines (docs/deploy.md): a local path names a file on the mcp_serve that
# received the call, and its bytes travel to and from the worker through the broker
# (sshcontrol/filestream.py). With TRANSFER_SHARED the worker opens the path itself instead,
# which is right only when both see the same transfer directory: checked with a probe file
# (sshcontrol/shared_storage.py, check E085).
TRANSFER_SHARED = _guard("sshcontrol.E088", lambda: envbool("SSHCONTROL_TRANSFER_SHARED", False), False)
# How long one end of a transfer stream waits for the other before declaring the stream broken.
TRANSFER_STALL_SECONDS = _guard(
    "sshcontrol.E086", lambda: envfloat("SSHCONTROL_TRANSFER_STALL_SECONDS", 60.0, 0.5), 60.0
)
# Bytes in flight between the two ends (a credit window of 1 MiB chunks): the memory each end
# and the broker hold for one transfer.
TRANSFER_WINDOW_CHUNKS = _guard(
    "sshcontrol.E087", lambda: envint("SSHCONTROL_TRANSFER_WINDOW_CHUNKS", 4, 1), 4
)
# How long a call rides out a database that went away (restart, failover, a killed backend,
# SQLite locked by another process): reconnect and retry for this long, then fail closed.
DB_RETRY_SECONDS = _guard("sshcontrol.E056", lambda: envfloat("SSHCONTROL_DB_RETRY_SECONDS", 30.0, 0.0), 30.0)
SESSION_IDLE_TIMEOUT = _guard(
    "sshcontrol.E015", lambda: envfloat("SSHCONTROL_SESSION_IDLE_TIMEOUT", 900.0, 1.0), 900.0
)

# Background jobs (sshcontrol/jobs.py): how long ssh_execute waits before a command still
# running becomes a job (below the ~60 s after which Claude Desktop gives up on a call), the
# most a call may ask for, how long a finished job and its kept output stay readable, and the
# largest page ssh_job_status / ssh_read_output return.
FOREGROUND_SECONDS = _guard(
    "sshcontrol.E070", lambda: envfloat("SSHCONTROL_FOREGROUND_SECONDS", 50.0, 0.0), 50.0
)
MAX_FOREGROUND_SECONDS = _guard(
    "sshcontrol.E071", lambda: envfloat("SSHCONTROL_MAX_FOREGROUND_SECONDS", 600.0, 0.0), 600.0
)
JOB_RETENTION_SECONDS = _guard(
    "sshcontrol.E072", lambda: envfloat("SSHCONTROL_JOB_RETENTION_SECONDS", 7 * 86400.0, 60.0), 7 * 86400.0
)
READ_OUTPUT_MAX_BYTES = _guard(
    "sshcontrol.E073", lambda: envint("SSHCONTROL_READ_OUTPUT_MAX_BYTES", 1 << 20, 1024), 1 << 20
)

# Callers and policy (see docs/security.md).
# Over stdio the caller is the client whose token this is; without one, the local OS user.
CLIENT_TOKEN = envsecret("SSHCONTROL_CLIENT_TOKEN")
# How long a tool call waits for an admin's decision on an approval request before it
# returns the request id (the caller then polls ssh_approval_status), and how long an
# undecided or approved request stays usable.
APPROVAL_WAIT_SECONDS = _guard(
    "sshcontrol.E016", lambda: envfloat("SSHCONTROL_APPROVAL_WAIT_SECONDS", 120.0, 0.0), 120.0
)
APPROVAL_EXPIRY_SECONDS = _guard(
    "sshcontrol.E017", lambda: envfloat("SSHCONTROL_APPROVAL_EXPIRY_SECONDS", 3600.0, 1.0), 3600.0
)
# The original server let the model pass host, user and password; off unless an admin opts in.
ALLOW_ADHOC_CONNECT = _guard(
    "sshcontrol.E018", lambda: envbool("SSHCONTROL_ALLOW_ADHOC_CONNECT", False), False
)
# Commands with invisible, reordering or control characters (bidi controls, zero-width
# characters, unusual spaces; hosts.visible) are refused unless this is on: an admin
# reading such a command may see something other than what runs.
ALLOW_INVISIBLE_CHARACTERS = _guard(
    "sshcontrol.E030", lambda: envbool("SSHCONTROL_ALLOW_INVISIBLE_CHARACTERS", False), False
)
# Streamable HTTP transport: Host headers and Origins accepted (DNS-rebinding protection),
# and the largest request body read.
MCP_ALLOWED_HOSTS = envlist("SSHCONTROL_MCP_ALLOWED_HOSTS", "127.0.0.1:*,localhost:*,[::1]:*")
MCP_ALLOWED_ORIGINS = envlist(
    "SSHCONTROL_MCP_ALLOWED_ORIGINS", "http://127.0.0.1:*,http://localhost:*,http://[::1]:*"
)
MCP_MAX_BODY_BYTES = _guard(
    "sshcontrol.E019", lambda: envint("SSHCONTROL_MCP_MAX_BODY_BYTES", 8 << 20, 1024), 8 << 20
)
# Slow HTTP clients (sshcontrol/httplimits.py): seconds to deliver a request's head, seconds
# from the head to the end of its body, and open connections per peer address (0: no cap).
HTTP_HEADER_TIMEOUT = _guard(
    "sshcontrol.E041", lambda: envfloat("SSHCONTROL_HTTP_HEADER_TIMEOUT", 10.0, 0.1), 10.0
)
HTTP_BODY_TIMEOUT = _guard(
    "sshcontrol.E042", lambda: envfloat("SSHCONTROL_HTTP_BODY_TIMEOUT", 60.0, 0.1), 60.0
)
HTTP_MAX_CONNECTIONS_PER_IP = _guard(
    "sshcontrol.E043", lambda: envint("SSHCONTROL_HTTP_MAX_CONNECTIONS_PER_IP", 100, 0), 100
)

# Behind a TLS-terminating reverse proxy (docs/deploy.md): secure cookies, HSTS, the redirect to
# https, and how a request is known to have arrived over https. uvicorn takes X-Forwarded-Proto
# and X-Forwarded-For only from SSHCONTROL_TRUSTED_PROXIES; SSHCONTROL_PROXY_SSL_HEADER makes
# Django trust a header from anyone who can reach the port, so use it only when only the proxy can.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = _guard(
    "sshcontrol.E050", lambda: envbool("SSHCONTROL_SECURE_COOKIES", False), False
)
SECURE_HSTS_SECONDS = _guard("sshcontrol.E051", lambda: envint("SSHCONTROL_HSTS_SECONDS", 0, 0), 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = _guard(
    "sshcontrol.E052", lambda: envbool("SSHCONTROL_HSTS_INCLUDE_SUBDOMAINS", False), False
)
SECURE_HSTS_PRELOAD = _guard("sshcontrol.E053", lambda: envbool("SSHCONTROL_HSTS_PRELOAD", False), False)
SECURE_SSL_REDIRECT = _guard("sshcontrol.E054", lambda: envbool("SSHCONTROL_SSL_REDIRECT", False), False)
TRUSTED_PROXIES = envlist("SSHCONTROL_TRUSTED_PROXIES", "127.0.0.1")


def _proxy_ssl_header() -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` (meaning its value is ``https``) or ``Header: value``, as Django's pair."""
    raw = envstr("SSHCONTROL_PROXY_SSL_HEADER").strip()
    if not raw:
        return None
    name, _, value = raw.partition(":")
    return "HTTP_" + name.strip().upper().replace("-", "_"), value.strip() or "https"


SECURE_PROXY_SSL_HEADER = _proxy_ssl_header()

# Operability (docs/operations.md): a token /metrics requires when set, and the log format.
METRICS_TOKEN = envsecret("SSHCONTROL_METRICS_TOKEN")
LOG_FORMAT = envstr("SSHCONTROL_LOG_FORMAT", "text").lower()
if LOG_FORMAT not in ("text", "json"):
    SETTINGS_ERRORS.append(
        ("sshcontrol.E055", f"SSHCONTROL_LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
    )

# OAuth 2.1 resource server (docs/http.md): with an issuer set, /mcp also accepts access tokens
# that identity provider issued for OAUTH_RESOURCE (the canonical URL of /mcp, the audience).
OAUTH_ISSUER = envstr("SSHCONTROL_OAUTH_ISSUER")
OAUTH_RESOURCE = envstr("SSHCONTROL_OAUTH_RESOURCE")
OAUTH_SCOPES = envlist("SSHCONTROL_OAUTH_SCOPES")
# Never "none" or HMAC: sshcontrol only ever holds the provider's public keys.
OAUTH_ALGORITHMS = envlist("SSHCONTROL_OAUTH_ALGORITHMS", "RS256,ES256,EdDSA,PS256")
OAUTH_JWKS_URL = envstr("SSHCONTROL_OAUTH_JWKS_URL")  # default: from the issuer's discovery document
OAUTH_INTROSPECTION_URL = envstr("SSHCONTROL_OAUTH_INTROSPECTION_URL")
OAUTH_CLIENT_ID = envstr("SSHCONTROL_OAUTH_CLIENT_ID")
OAUTH_CLIENT_SECRET = _guard("sshcontrol.E060", lambda: envsecret("SSHCONTROL_OAUTH_CLIENT_SECRET"), "")
OAUTH_NAME_CLAIM = envstr("SSHCONTROL_OAUTH_NAME_CLAIM", "email")
OAUTH_GROUPS_CLAIM = envstr("SSHCONTROL_OAUTH_GROUPS_CLAIM", "groups")
OAUTH_CREATE_GROUPS = _guard(
    "sshcontrol.E061", lambda: envbool("SSHCONTROL_OAUTH_CREATE_GROUPS", False), False
)
# An unknown key id refetches the key set at most this often; the set is refetched anyway
# once it is this old, so a key removed from it stops being accepted.
OAUTH_JWKS_MIN_REFRESH_SECONDS = _guard(
    "sshcontrol.E062", lambda: envfloat("SSHCONTROL_OAUTH_JWKS_MIN_REFRESH_SECONDS", 10.0, 0.0), 10.0
)
OAUTH_JWKS_MAX_AGE_SECONDS = _guard(
    "sshcontrol.E063", lambda: envfloat("SSHCONTROL_OAUTH_JWKS_MAX_AGE_SECONDS", 300.0, 1.0), 300.0
)

# OpenID Connect sign-in for the admin (sshcontrol/admin_sso.py); off unless an issuer is set.
# Local accounts keep working beside it (break-glass).
ADMIN_OIDC_ISSUER = envstr("SSHCONTROL_ADMIN_OIDC_ISSUER")
ADMIN_OIDC_STAFF_GROUPS = envlist("SSHCONTROL_ADMIN_OIDC_STAFF_GROUPS")
ADMIN_OIDC_SUPERUSER_GROUPS = envlist("SSHCONTROL_ADMIN_OIDC_SUPERUSER_GROUPS")
ADMIN_OIDC_GROUPS_CLAIM = envstr("SSHCONTROL_ADMIN_OIDC_GROUPS_CLAIM", "groups")
ADMIN_OIDC_NAME_CLAIM = envstr("SSHCONTROL_ADMIN_OIDC_NAME_CLAIM", "email")
if ADMIN_OIDC_ISSUER:
    AUTHENTICATION_BACKENDS = [
        "django.contrib.auth.backends.ModelBackend",
        "sshcontrol.admin_sso.AdminOidcBackend",
    ]
    OIDC_RP_CLIENT_ID = envstr("SSHCONTROL_ADMIN_OIDC_CLIENT_ID")
    OIDC_RP_CLIENT_SECRET = _guard(
        "sshcontrol.E066", lambda: envsecret("SSHCONTROL_ADMIN_OIDC_CLIENT_SECRET"), ""
    )
    OIDC_RP_SCOPES = envstr("SSHCONTROL_ADMIN_OIDC_SCOPES", "openid email")
    OIDC_RP_SIGN_ALGO = envstr("SSHCONTROL_ADMIN_OIDC_SIGN_ALGO", "RS256")
    OIDC_USE_PKCE = True
    OIDC_AUTHENTICATE_CLASS = "sshcontrol.admin_sso.AuthenticationRequestView"
    LOGIN_REDIRECT_URL = "/admin/"
    LOGIN_REDIRECT_URL_FAILURE = "/admin/login/?sso=failed"
    LOGOUT_REDIRECT_URL = "/admin/"

# sse_starlette logs every event it streams at DEBUG: tool results, with a command's text and its
# output, which no log line may carry (docs/operations.md, "Logs"). It never logs below INFO.
_ROOT_LOG_LEVEL = envstr("SSHCONTROL_LOG_LEVEL", "WARNING").upper()
_STREAM_LOG_LEVEL = "INFO" if _ROOT_LOG_LEVEL in {"DEBUG", "NOTSET"} else _ROOT_LOG_LEVEL

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "sshcontrol.logformat.JsonFormatter"}},
    # stderr only: over stdio, stdout belongs to the MCP protocol.
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stderr",
            **({"formatter": "json"} if LOG_FORMAT == "json" else {}),
        }
    },
    "root": {"handlers": ["stderr"], "level": _ROOT_LOG_LEVEL},
    "loggers": {
        "sshcontrol": {"level": envstr("SSHCONTROL_LOG_LEVEL", "INFO").upper()},
        "paramiko": {"level": "WARNING"},
        "sse_starlette": {"level": _STREAM_LOG_LEVEL},
    },
}
