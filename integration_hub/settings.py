"""Settings from the environment, with embedded defaults that run on a machine with nothing but
Python: SQLite and kombu's filesystem transport. Set DATABASE_URL and CELERY_BROKER_URL for
PostgreSQL and Redis (production, tests and CI)."""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("HUB_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_bool("DEBUG", False)
SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG and env_bool("HUB_REQUIRE_SECRET_KEY", False):
        raise RuntimeError("SECRET_KEY must be set")
    SECRET_KEY = "insecure-development-key-set-SECRET_KEY-in-production"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,testserver,[::1]")

# E-mail for exception cases and the daily digest; the console backend prints them (demo).
EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", "25"))
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "integration-hub@localhost")
HUB_PUBLIC_URL = os.environ.get("HUB_PUBLIC_URL", "http://127.0.0.1:8000")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "apps.core",
    "apps.ledger",
    "apps.sources",
    "apps.routing",
    "apps.posting",
    "apps.ingest",
    "apps.console",
    "apps.flow",
    "apps.validation",
    "apps.observability",
    "apps.reconciliation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "apps.core.middleware.CorrelationIdMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "integration_hub.urls"
WSGI_APPLICATION = "integration_hub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "apps.console.context.operations_links",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'hub.sqlite3'}"),
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "60")),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The demo runs web, worker and beat against one SQLite file: wait for locks instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- REST API (/api/v1/) ------------------------------------------------------------------------
# Scripts authenticate with a token (`Authorization: Token <key>`; `manage.py drf_create_token <user>`),
# people in the admin with their session. Token first: an anonymous call gets 401 with
# `WWW-Authenticate: Token`, not 403. Each view checks the Django permission its change needs.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser", "rest_framework.parsers.FormParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Integration hub API",
    "DESCRIPTION": (
        "The canonical events API for billing engines without an adapter (with its JSON Schemas); the "
        "validation API billing calls before finalizing an invoice (customer account, ERP dimension, tax code); "
        "and flow control per ERP connection: state, pause and resume, circuit, maintenance windows."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SCHEMA_PATH_PREFIX": r"/api/v1",
}

# --- Celery: at-least-once delivery -------------------------------------------------------------
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
# Request budgets and concurrency slots per ERP connection are shared through Redis; without it
# (the demo's filesystem broker) each process keeps its own.
HUB_FLOW_NAMESPACE = os.environ.get("HUB_FLOW_NAMESPACE", "hub")
HUB_FLOW_REDIS_URL = os.environ.get(
    "HUB_FLOW_REDIS_URL", CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
)
_BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "store_processed": False,
        # Exchange-to-queue bindings shared by every process; kombu's default is "control" relative
        # to the working directory, so processes started elsewhere would not see each other.
        "control_folder": str(_BROKER_DIR / "control"),
    }
else:
    # A hard time limit well below the visibility timeout, so a task is never redelivered while
    # its first run is still alive.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
# Two queues, read in turn by every worker: ingest (normalization, sweeps) and posting. In a burst
# the inbox backlog would otherwise stand in front of every posting message in one FIFO queue.
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("HUB_QUEUE", "hub")
HUB_POSTING_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.posting"
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in (CELERY_TASK_DEFAULT_QUEUE, HUB_POSTING_QUEUE)
)
CELERY_TASK_ROUTES = {"posting.execute": {"queue": HUB_POSTING_QUEUE, "routing_key": HUB_POSTING_QUEUE}}
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 300
CELERY_TASK_SOFT_TIME_LIMIT = 240
CELERY_WORKER_SEND_TASK_EVENTS = True
# Keep the project's LOGGING (JSON lines with correlation ids) in workers too.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Flower and the metrics follow tasks through the workers' own events (received, started,
# succeeded). A "task-sent" event would be a second Redis publish on every send, in the webhook
# request too (bench/BENCHMARKS.md).
CELERY_TASK_SEND_SENT_EVENT = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Publishing must fail fast when the broker is down: the row is already stored and a sweeper will
# enqueue it later, so a web request should not hang on the broker.
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
CELERY_BROKER_CONNECTION_TIMEOUT = float(os.environ.get("CELERY_BROKER_CONNECTION_TIMEOUT", "2"))
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE = {
    "sweep-inbox": {"task": "ingest.sweep_inbox", "schedule": float(os.environ.get("HUB_SWEEP_SECONDS", "30"))},
    "sweep-postings": {
        "task": "posting.sweep_postings",
        "schedule": float(os.environ.get("HUB_SWEEP_SECONDS", "30")),
    },
    "exception-digest": {"task": "console.send_digest", "schedule": crontab(hour=7, minute=0)},
    # The validation API's cache of what each ERP holds (customers, tax codes, dimension values).
    "refresh-validation-cache": {
        "task": "validation.refresh_reference_data",
        "schedule": float(os.environ.get("HUB_VALIDATION_REFRESH_SECONDS", "900")),
    },
    # Billing, ledger and ERP compared for this month and last, per connection, legal entity and
    # currency; what is safe to heal is re-planned, the rest opens cases (apps/reconciliation).
    "reconcile-daily": {
        "task": "reconciliation.run_scheduled",
        "schedule": crontab(hour=int(os.environ.get("HUB_RECONCILIATION_HOUR", "2")), minute=30),
    },
    # A marked test invoice through the whole pipeline to a sandbox ERP (apps/observability/synthetic.py).
    "synthetic-transaction": {
        "task": "observability.run_synthetic",
        "schedule": float(os.environ.get("HUB_SYNTHETIC_SECONDS", "300")),
    },
}

# Where Flower (Celery's monitor) is reachable, linked from the admin index; empty hides the link.
HUB_FLOWER_URL = os.environ.get("HUB_FLOWER_URL", "")

# --- The hub ------------------------------------------------------------------------------------
HUB = {
    # Largest webhook body accepted; Stripe events are far below this.
    "WEBHOOK_MAX_BYTES": int(os.environ.get("HUB_WEBHOOK_MAX_BYTES", str(512 * 1024))),
    "STRIPE_SIGNATURE_TOLERANCE_SECONDS": int(os.environ.get("HUB_STRIPE_TOLERANCE", "300")),
    # Signed requests older than this (or this far in the future) are refused as replays: the
    # canonical API's HMAC signature and the engines whose signatures carry a timestamp.
    "SIGNATURE_TOLERANCE_SECONDS": int(os.environ.get("HUB_SIGNATURE_TOLERANCE", "300")),
    "POSTING_MAX_ATTEMPTS": int(os.environ.get("HUB_POSTING_MAX_ATTEMPTS", "8")),
    "POSTING_BACKOFF_BASE_SECONDS": float(os.environ.get("HUB_BACKOFF_BASE", "2")),
    "POSTING_BACKOFF_MAX_SECONDS": float(os.environ.get("HUB_BACKOFF_MAX", "900")),
    # Retries due sooner than this go back to Celery with a countdown; later ones wait in the
    # database (retry_at) for the sweeper, so no message sits in Redis past its visibility timeout.
    "MAX_COUNTDOWN_SECONDS": 300,
    # A row in flight longer than this is assumed orphaned by a dead worker and is recovered.
    "IN_FLIGHT_STALE_SECONDS": int(os.environ.get("HUB_IN_FLIGHT_STALE_SECONDS", "600")),
    # Inbox events not normalized this long after arrival are re-enqueued by the sweeper.
    "INBOX_STALE_SECONDS": int(os.environ.get("HUB_INBOX_STALE_SECONDS", "60")),
    # /metrics wants this as a bearer token when it is set (apps/observability/views.py).
    "METRICS_TOKEN": os.environ.get("HUB_METRICS_TOKEN", ""),
    # The synthetic transaction: a canonical source and the sandbox connection its invoices are
    # routed to; unset, the scheduled run does nothing.
    "SYNTHETIC_SOURCE": os.environ.get("HUB_SYNTHETIC_SOURCE", ""),
    "SYNTHETIC_CONNECTION": os.environ.get("HUB_SYNTHETIC_CONNECTION", ""),
    "SYNTHETIC_TIMEOUT_SECONDS": int(os.environ.get("HUB_SYNTHETIC_TIMEOUT_SECONDS", "600")),
}
DATA_UPLOAD_MAX_MEMORY_SIZE = max(HUB["WEBHOOK_MAX_BYTES"] * 2, 2_621_440)

LOG_FORMAT = os.environ.get("HUB_LOG_FORMAT", "console" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"correlation": {"()": "apps.core.logging.CorrelationIdFilter"}},
    "formatters": {
        "json": {"()": "apps.core.logging.JsonFormatter"},
        "console": {"()": "apps.core.logging.ConsoleFormatter"},
    },
    "handlers": {
        "default": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["correlation"],
        }
    },
    "root": {"handlers": ["default"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if CELERY_BROKER_URL.startswith("filesystem://"):
    for _folder in ("queue", "processed", "control"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
VAR_DIR.mkdir(parents=True, exist_ok=True)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
