"""The token store connectors keep rotated credentials in (``connectors.base.TokenStore``): one row
per connection and name, encrypted with Fernet under a key derived from SECRET_KEY, so a database
dump alone does not reveal them. Rotating SECRET_KEY makes stored tokens unreadable: the connector
then falls back to the one in its settings (reconnect the ERP if that one has expired)."""

from __future__ import annotations

import base64
import hashlib
import logging

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.db import transaction

from apps.routing.models import ConnectionToken

log = logging.getLogger(__name__)


def _fernet() -> Fernet:
    digest = hashlib.sha256(f"hub-connection-tokens|{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class DatabaseTokenStore:
    def __init__(self, connection_id: int) -> None:
        self.connection_id = connection_id

    def load(self, name: str) -> str | None:
        row = ConnectionToken.objects.filter(connection_id=self.connection_id, name=name).first()
        if row is None:
            return None
        try:
            return _fernet().decrypt(row.encrypted.encode()).decode()
        except InvalidToken:
            log.warning("a stored token cannot be decrypted (SECRET_KEY changed?)", extra={"token": name})
            return None

    def save(self, name: str, value: str) -> None:
        encrypted = _fernet().encrypt(value.encode()).decode()
        with transaction.atomic():
            ConnectionToken.objects.update_or_create(
                connection_id=self.connection_id, name=name, defaults={"encrypted": encrypted}
            )
