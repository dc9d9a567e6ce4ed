"""Test settings: the real PostgreSQL and Redis, never the embedded defaults."""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/hub")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
os.environ.setdefault("HUB_VAR_DIR", "/tmp/integration-hub-test-var")
# One queue per test session (the worker subprocess inherits it), so two runs sharing one Redis
# never take each other's tasks.
os.environ.setdefault("HUB_TEST_QUEUE", f"hub-tests-{os.getpid()}")
os.environ.setdefault("HUB_FLOW_NAMESPACE", os.environ["HUB_TEST_QUEUE"])
os.environ["HUB_QUEUE"] = os.environ["HUB_TEST_QUEUE"]  # the queues are named after it
# Quick retries so failure paths finish in seconds.
os.environ.setdefault("HUB_BACKOFF_BASE", "0.5")
os.environ.setdefault("HUB_BACKOFF_MAX", "5")
os.environ.setdefault("STRIPE_WEBHOOK_SECRET", "whsec_test_current_secret")
os.environ.setdefault("HUB_CANONICAL_API_SECRET", "canonical_test_secret")
os.environ.setdefault("CHARGEBEE_WEBHOOK_CREDENTIALS", "hub:chargebee-test-password")
os.environ.setdefault("LAGO_WEBHOOK_HMAC_KEY", "lago_test_hmac_key")
os.environ.setdefault("STRIPE_API_KEY", "sk_test_hub_writeback")  # writeback, against tests/stripe_simulator.py
os.environ.setdefault("CHARGEBEE_API_KEY", "test_hub_chargebee_writeback")  # tests/chargebee_simulator.py
os.environ.setdefault("RECURLY_WEBHOOK_KEY", "recurly_test_signature_key")
os.environ.setdefault("RECURLY_API_KEY", "sim-recurly-private-key")  # tests/recurly_simulator.py
# The test web processes are runserver, one thread per request: a persistent connection per
# thread would pile up to PostgreSQL's max_connections under a burst.
os.environ.setdefault("DATABASE_CONN_MAX_AGE", "0")

from integration_hub.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOG_FORMAT = "console"
LOGGING["handlers"]["default"]["formatter"] = "console"  # noqa: F405
