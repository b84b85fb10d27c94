"""Settings for mailhost.

Every setting comes from the environment (django-environ) with a default that works on a
fresh checkout: SQLite, a filesystem Celery broker, a Maildir tree under var/. Relative paths are
taken relative to the project root, not the working directory, so the SMTP service, the
worker and the web app started from anywhere agree on where mail lives.
"""

import ipaddress
import socket
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()


def project_path(value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else BASE_DIR / path


def host_port(name: str, value: str) -> tuple[str, int]:
    """Parse `host:port` or `[v6]:port`, naming the variable when it is malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ImproperlyConfigured(f"{name}: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


def _resolvers(value: str) -> list[tuple[str, int]]:
    out = []
    for item in filter(None, (p.strip() for p in value.split(","))):
        if item.count(":") == 1 or item.startswith("["):
            host, port = host_port("DNS_RESOLVERS", item)
        else:
            host, port = item, 53
        try:
            ipaddress.ip_address(host)
        except ValueError as exc:
            raise ImproperlyConfigured(f"DNS_RESOLVERS: {host!r} is not an IP address") from exc
        out.append((host, port))
    return out


def _public_ips(value: str) -> list[str]:
    out = []
    for item in filter(None, (p.strip() for p in value.split(","))):
        try:
            out.append(str(ipaddress.ip_address(item)))
        except ValueError as exc:
            raise ImproperlyConfigured(f"MAIL_PUBLIC_IPS: {item!r} is not an IP address") from exc
    return out


SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-mailhost-secret-key-change-me-in-production")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

DATABASES = {"default": env.db_url("DATABASE_URL", default="sqlite:///var/db.sqlite3")}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    if _db["NAME"] not in ("", ":memory:"):
        _db["NAME"] = str(project_path(_db["NAME"]))
        Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
    # Web, SMTP service and worker share one file: WAL and IMMEDIATE transactions keep
    # concurrent writers from failing with "database is locked" (FIELD-NOTES). synchronous=FULL:
    # a queue row committed before 250 is on disk; with NORMAL, WAL mode syncs only at
    # checkpoints and a power cut could take back acknowledged mail.
    # mailhost.sqlite3: Django's backend with writers queueing on a lock file instead of
    # sleeping in SQLite's busy handler.
    _db["ENGINE"] = "mailhost.sqlite3"
    _db.setdefault("OPTIONS", {})
    _db["OPTIONS"].update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;",
        }
    )
    _db.setdefault("TEST", {})["NAME"] = str(VAR_DIR / "test-db.sqlite3")
else:
    _db.setdefault("CONN_MAX_AGE", 60)
    _db.setdefault("CONN_HEALTH_CHECKS", True)
    if _db["ENGINE"] == "django.db.backends.postgresql":
        # The queue and the SMTP service run the same few INSERTs and UPDATEs for every message
        # through psycopg cursors (db_writes); psycopg prepares a statement once it has run this
        # many times on a connection, and the server then skips parsing and planning it.
        # Django's own cursors bind on the client and never prepare. `?prepare_threshold=off`
        # turns it off (PgBouncer before 1.21 in transaction mode cannot keep prepared statements).
        _threshold = str(_db.setdefault("OPTIONS", {}).get("prepare_threshold", "5")).lower()
        _db["OPTIONS"]["prepare_threshold"] = None if _threshold in ("", "none", "off") else int(_threshold)

MAIL_ROOT = project_path(env.str("MAIL_ROOT", default="var/mail"))
MAIL_HOSTNAME = env.str("MAIL_HOSTNAME", default="") or socket.getfqdn()
MAIL_PUBLIC_IPS = _public_ips(env.str("MAIL_PUBLIC_IPS", default=""))
DNS_RESOLVERS = _resolvers(env.str("DNS_RESOLVERS", default=""))
SMTP_OUTBOUND_PORT = env.int("SMTP_OUTBOUND_PORT", default=25)
_relay = env.str("SMTP_RELAY_HOST", default="")
SMTP_RELAY_HOST = host_port("SMTP_RELAY_HOST", _relay) if _relay else None
# How the smarthost's TLS starts: `starttls`, or `implicit` (RFC 8314, TLS from the first byte, as
# Postfix's smtp_tls_wrappermode), the default for port 465 where nothing else is spoken.
SMTP_RELAY_TLS = env.str("SMTP_RELAY_TLS", default="implicit" if SMTP_RELAY_HOST and SMTP_RELAY_HOST[1] == 465
                         else "starttls")
if SMTP_RELAY_TLS not in ("starttls", "implicit"):
    raise ImproperlyConfigured(f"SMTP_RELAY_TLS must be starttls or implicit, not {SMTP_RELAY_TLS!r}")
# AUTH at the smarthost (SES, SendGrid, an ISP's relay): only over TLS with a verified certificate.
SMTP_RELAY_USER = env.str("SMTP_RELAY_USER", default="")
SMTP_RELAY_PASSWORD = env.str("SMTP_RELAY_PASSWORD", default="")
if (SMTP_RELAY_USER or SMTP_RELAY_PASSWORD) and not (SMTP_RELAY_HOST and SMTP_RELAY_USER):
    raise ImproperlyConfigured("SMTP_RELAY_USER and SMTP_RELAY_PASSWORD need SMTP_RELAY_HOST and a user name")
SMTP_TLS_CERT = env.str("SMTP_TLS_CERT", default="")
SMTP_TLS_KEY = env.str("SMTP_TLS_KEY", default="")
if bool(SMTP_TLS_CERT) != bool(SMTP_TLS_KEY):
    raise ImproperlyConfigured("SMTP_TLS_CERT and SMTP_TLS_KEY must be set together")
TLS_DIR = VAR_DIR / "tls"

# Limits the SMTP service announces and enforces (DESIGN.md, "Limits").
SMTP_MAX_MESSAGE_SIZE = env.int("SMTP_MAX_MESSAGE_SIZE", default=25 * 1024 * 1024)
SMTP_MAX_RECIPIENTS = env.int("SMTP_MAX_RECIPIENTS", default=100)
# Recipients per outbound SMTP transaction (Postfix's smtp_destination_recipient_limit).
SMTP_OUTBOUND_RECIPIENT_LIMIT = env.int("SMTP_OUTBOUND_RECIPIENT_LIMIT", default=50)
SMTP_MAX_CONNECTIONS_PER_IP = env.int("SMTP_MAX_CONNECTIONS_PER_IP", default=100)
SMTP_MAX_CONNECTIONS = env.int("SMTP_MAX_CONNECTIONS", default=1000)
SMTP_AUTH_MAX_FAILURES = env.int("SMTP_AUTH_MAX_FAILURES", default=10)
SMTP_AUTH_WINDOW = env.int("SMTP_AUTH_WINDOW", default=600)
SMTP_COMMAND_TIMEOUT = env.float("SMTP_COMMAND_TIMEOUT", default=300.0)  # RFC 5321 4.5.3.2.7: 5 minutes
SMTP_DATA_TIMEOUT = env.float("SMTP_DATA_TIMEOUT", default=180.0)  # silence allowed between DATA bytes
SMTP_WORKER_THREADS = env.int("SMTP_WORKER_THREADS", default=16)
# Copies of runsmtp sharing the ports (its --processes when not given); 0 = one per core.
SMTP_PROCESSES = env.int("SMTP_PROCESSES", default=1)
SMTP_SHUTDOWN_GRACE = env.float("SMTP_SHUTDOWN_GRACE", default=5.0)
SMTP_DNS_CACHE = env.bool("SMTP_DNS_CACHE", default=True)  # TTL-respecting cache for SPF/DKIM/DMARC lookups
SMTP_DIRECTORY_CACHE = env.float("SMTP_DIRECTORY_CACHE", default=5.0)  # seconds runsmtp may reuse a RCPT verdict
# Short-lived shared state (SMTP AUTH throttling and verification cache): redis://… when several
# SMTP service copies run; per-process memory by default.
CACHES = {"default": env.cache_url("CACHE_URL", default="locmemcache://")}

METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
MIN_PASSWORD_LENGTH = env.int("MIN_PASSWORD_LENGTH", default=8)
DKIM_SELECTOR_PREFIX = env.str("DKIM_SELECTOR_PREFIX", default="mh")
QUEUE_LIFETIME = env.int("QUEUE_LIFETIME", default=5 * 24 * 3600)
QUEUE_DELAY_WARNING = env.int("QUEUE_DELAY_WARNING", default=4 * 3600)
# Retention (delivery/retention.py, hourly): a message finished for every recipient stays this
# long for `queue list` and the admin; the portal's message log keeps this many days (0: for good).
QUEUE_KEEP_FINISHED = env.int("QUEUE_KEEP_FINISHED", default=24 * 3600)
MESSAGE_LOG_DAYS = env.int("MESSAGE_LOG_DAYS", default=90)
# Outbound delivery (docs/outbound.md).
QUEUE_SWEEP_INTERVAL = env.float("QUEUE_SWEEP_INTERVAL", default=5.0)
QUEUE_LEASE_SECONDS = env.int("QUEUE_LEASE_SECONDS", default=300)
QUEUE_BATCH_SIZE = env.int("QUEUE_BATCH_SIZE", default=100)
QUEUE_DESTINATION_CONCURRENCY = env.int("QUEUE_DESTINATION_CONCURRENCY", default=5)
QUEUE_BATCHES_PER_TASK = env.int("QUEUE_BATCHES_PER_TASK", default=10)  # claimed batches one deliver task carries
QUEUE_DISPATCH_TASKS = env.int("QUEUE_DISPATCH_TASKS", default=4)  # deliver tasks a sweep sends at most
QUEUE_DRAIN_SECONDS = env.float("QUEUE_DRAIN_SECONDS", default=10.0)  # a deliver task then keeps claiming this long
QUEUE_KICK_INTERVAL = env.float("QUEUE_KICK_INTERVAL", default=0.5)  # a process asks for a sweep at most this often
# How many destinations one worker process delivers to at once, each over its own connection.
QUEUE_PARALLEL_DESTINATIONS = env.int("QUEUE_PARALLEL_DESTINATIONS", default=4)
# Delivery webhooks (delivery/webhooks.py): how long an event is retried, the request timeout, a CA
# bundle for endpoints with a private CA, and whether endpoints may be on private addresses.
WEBHOOK_LIFETIME = env.int("WEBHOOK_LIFETIME", default=24 * 3600)
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=10.0)
WEBHOOK_CA_FILE = env.str("WEBHOOK_CA_FILE", default="")
WEBHOOK_PRIVATE_ADDRESSES = env.bool("WEBHOOK_PRIVATE_ADDRESSES", default=False)
SMTP_OUTBOUND_TIMEOUT = env.int("SMTP_OUTBOUND_TIMEOUT", default=60)
SMTP_CONNECTION_CACHE_TIME = env.float("SMTP_CONNECTION_CACHE_TIME", default=2.0)  # reuse a finished connection
MTA_STS_CA_FILE = env.str("MTA_STS_CA_FILE", default="")
MTA_STS_RECHECK_SECONDS = env.float("MTA_STS_RECHECK_SECONDS", default=60.0)  # a worker reuses a policy answer
MTA_STS_HTTPS_PORT = env.int("MTA_STS_HTTPS_PORT", default=443)
SRS_SECRET = env.str("SRS_SECRET", default="")
SRS_DOMAIN = env.str("SRS_DOMAIN", default="")
SUPPRESSION_DAYS = env.int("SUPPRESSION_DAYS", default=30)

# Celery: the embedded default is kombu's filesystem transport, which needs no server.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
CELERY_RESULT_BACKEND = env.str(
    "CELERY_RESULT_BACKEND",
    default=CELERY_BROKER_URL if CELERY_BROKER_URL.startswith("redis") else "file://"
    + str(VAR_DIR / "celery" / "results"),
)
CELERY_BROKER_DIR = VAR_DIR / "celery" / "broker"
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR),
        "data_folder_out": str(CELERY_BROKER_DIR),
        "processed_folder": str(VAR_DIR / "celery" / "processed"),
        # broadcast (`celery inspect ping`) state; kombu's default is ./control in the cwd
        "control_folder": str(VAR_DIR / "celery" / "control"),
        "store_processed": False,
        "polling_interval": 0.1,  # kombu polls an empty folder once a second by default: mail waited
    }
    for _folder in (CELERY_BROKER_DIR, VAR_DIR / "celery" / "processed", VAR_DIR / "celery" / "control"):
        _folder.mkdir(parents=True, exist_ok=True)
else:
    # Timeouts on the broker's sockets (redis-py has none by default): a Redis that accepts a
    # connection and never answers, or one lost behind a moved address without a reset, would
    # otherwise hold a kicker thread or a worker's consumer on one read for good. A worker's
    # idle BRPOP returns every second, well inside them.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
    if CELERY_BROKER_URL.startswith(("redis:", "rediss:")):
        CELERY_BROKER_TRANSPORT_OPTIONS.update(socket_timeout=30, socket_connect_timeout=5)
if CELERY_RESULT_BACKEND.startswith("file://"):
    Path(CELERY_RESULT_BACKEND.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 3600
CELERY_BEAT_SCHEDULE: dict = {}
# The DNS wizard's checks (domains/dns_checks.py): total time bound, the port authoritative servers
# are asked on and the re-check period (MTA-STS fetches share MTA_STS_HTTPS_PORT and MTA_STS_CA_FILE).
DNS_CHECK_TIMEOUT = env.float("DNS_CHECK_TIMEOUT", default=10.0)
DNS_AUTHORITATIVE_PORT = env.int("DNS_AUTHORITATIVE_PORT", default=53)
DNS_RECHECK_INTERVAL = env.int("DNS_RECHECK_INTERVAL", default=6 * 3600)
CELERY_BEAT_SCHEDULE["dns-recheck"] = {"task": "domains.tasks.recheck_all_domains", "schedule": DNS_RECHECK_INTERVAL}
CELERY_BEAT_SCHEDULE["recount-mailbox-usage"] = {"task": "webmail.tasks.recount_mailbox_usage", "schedule": 900}
# A sweep still waiting when the next is due is dropped unrun (Celery's `expires`): the next
# one does the same work, and busy workers are draining the queue anyway (delivery/tasks.py).
CELERY_BEAT_SCHEDULE["delivery-dispatch-due"] = {"task": "delivery.dispatch_due", "schedule": QUEUE_SWEEP_INTERVAL,
                                                 "options": {"expires": QUEUE_SWEEP_INTERVAL}}
CELERY_BEAT_SCHEDULE["delivery-webhooks"] = {"task": "delivery.send_webhooks", "schedule": QUEUE_SWEEP_INTERVAL,
                                              "options": {"expires": QUEUE_SWEEP_INTERVAL}}
CELERY_BEAT_SCHEDULE["delivery-purge"] = {"task": "delivery.purge", "schedule": 3600, "options": {"expires": 3600}}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celery" / "beat-schedule")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "mailboxes",
    "domains",
    "delivery",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "api",
    "webmail",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collectstatic's output (admin, portal CSS, the API docs' Swagger UI) under gunicorn
    # in production, where runserver's static view is off.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mailhost.urls"
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
            ]
        },
    }
]
WSGI_APPLICATION = "mailhost.wsgi.application"
ASGI_APPLICATION = "mailhost.asgi.application"

AUTH_USER_MODEL = "mailboxes.User"
AUTHENTICATION_BACKENDS = ["mailboxes.backends.MailAccountBackend"]
# The first hasher writes every new hash; it is argon2id with p=1, which Dovecot (libsodium)
# verifies too. The others are read so old hashes still log in and get rehashed.
PASSWORD_HASHERS = [
    "mailboxes.passwords.MailArgon2Hasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": MIN_PASSWORD_LENGTH},
    },
]
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
# Portal login throttling: distinct wrong passwords per account, failures per client network (/24, /48).
PORTAL_LOGIN_MAX_FAILURES = env.int("PORTAL_LOGIN_MAX_FAILURES", default=5)
PORTAL_LOGIN_MAX_NETWORK_FAILURES = env.int("PORTAL_LOGIN_MAX_NETWORK_FAILURES", default=30)
PORTAL_LOGIN_WINDOW = env.int("PORTAL_LOGIN_WINDOW", default=900)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every start without it
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# The REST API (api/): JSON in and out only, so every error a client sees is JSON too.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "api.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["api.permissions.TenantPermission"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "api.pagination.LimitOffsetPagination",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "api.errors.exception_handler",
    "NON_FIELD_ERRORS_KEY": "detail",
    "DEFAULT_METADATA_CLASS": None,  # OPTIONS answers 405: the schema at /api/schema/ describes the API
}
SPECTACULAR_SETTINGS = {
    "TITLE": "mailhost API",
    "DESCRIPTION": "Domains, mailboxes, aliases, DKIM keys, relay credentials, message log and queue.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    # No badge from validator.swagger.io: the docs page talks to this server only.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "api.schema.add_error_responses"],
}
