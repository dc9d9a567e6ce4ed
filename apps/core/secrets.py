"""Secrets are never stored in the database: configuration holds ``env:VAR`` references."""

from __future__ import annotations

import os
from typing import Any

ENV_PREFIX = "env:"


class MissingSecret(LookupError):
    pass


def is_reference(value: object) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def resolve(value: Any) -> Any:
    """Resolve ``env:VAR`` (recursively inside dicts and lists); other values pass through."""
    if isinstance(value, dict):
        return {key: resolve(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item) for item in value]
    if is_reference(value):
        name = value[len(ENV_PREFIX) :]
        if name not in os.environ:
            raise MissingSecret(f"environment variable {name} is not set")
        return os.environ[name]
    return value


def resolve_optional(values: list[str]) -> list[str]:
    """Resolve a list of references, leaving out the unset ones (a rotated-out secret)."""
    resolved = []
    for value in values:
        try:
            item = resolve(value)
        except MissingSecret:
            continue
        if item:
            resolved.append(item)
    return resolved
