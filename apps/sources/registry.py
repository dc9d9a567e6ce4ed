"""The adapter for each kind of billing source."""

from __future__ import annotations

from apps.sources.base import SourceAdapter
from apps.sources.canonical import CanonicalAdapter
from apps.sources.chargebee import ChargebeeAdapter
from apps.sources.lago import LagoAdapter
from apps.sources.recurly import RecurlyAdapter
from apps.sources.stripe import StripeAdapter

ADAPTERS: dict[str, SourceAdapter] = {
    adapter.kind: adapter
    for adapter in (StripeAdapter(), ChargebeeAdapter(), LagoAdapter(), RecurlyAdapter(), CanonicalAdapter())
}


def adapter_for(kind: str) -> SourceAdapter:
    try:
        return ADAPTERS[kind]
    except KeyError:
        raise LookupError(f"No adapter for billing sources of kind '{kind}'.") from None
