"""Routing: which ERP connections receive a document, and under which version of the rules; and
the mappings that turn hub values into a connection's ERP identifiers."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from apps.core import config_cache
from apps.ledger.models import LegalEntity
from apps.routing.models import ERPConnection, Mapping, RoutingRule, RoutingVersion


@dataclass(frozen=True)
class RouteFacts:
    """What routing rules are evaluated on, for one root document (an invoice with everything that
    follows it, unapplied cash, a dispute)."""

    transaction_type: str
    legal_entity: LegalEntity | None = None
    region: str = ""  # the customer's bill-to country, else the legal entity's
    product_line: str = ""
    currency: str = ""
    document: str = ""  # for people: "invoice in_123"

    def words(self) -> str:
        return (
            f"legal entity {self.legal_entity.code if self.legal_entity else '(none)'}, "
            f"region {self.region or '(none)'}, product line {self.product_line or '(none)'}, "
            f"transaction type {self.transaction_type}, currency {self.currency.upper() or '(none)'}"
        )


@dataclass(frozen=True)
class Route:
    connections: tuple[ERPConnection, ...]
    version: RoutingVersion | None = None
    rules: tuple[int, ...] = field(default=())


class NoRoute(LookupError):
    """No active rule takes the document. The event that carried it fails with this reason, and
    is replayed when a routing rule is saved."""

    code = "no_route"

    def __init__(self, facts: RouteFacts) -> None:
        self.facts = facts
        what = facts.document or f"the {facts.transaction_type}"
        super().__init__(
            f"No ERP connection is routed for {what} ({facts.words()}). Add a routing rule that matches it "
            "(Routing rules in the admin, or the routing section of the hub configuration); the event is "
            "then posted automatically."
        )


class MissingMapping(LookupError):
    def __init__(self, kind: str, keys: list[str], connection: ERPConnection) -> None:
        self.kind = kind
        self.keys = keys
        self.connection = connection
        super().__init__(f"no {kind} mapping on {connection.name} for {', '.join(keys)}")


def _matches(rule: RoutingRule, facts: RouteFacts) -> bool:
    if rule.legal_entity_id is not None and (
        facts.legal_entity is None or rule.legal_entity_id != facts.legal_entity.pk
    ):
        return False
    if rule.region and facts.region.upper() not in rule.regions():
        return False
    if rule.product_line and rule.product_line != facts.product_line:
        return False
    if rule.transaction_type and rule.transaction_type != facts.transaction_type:
        return False
    return not rule.currency or rule.currency.upper() == facts.currency.upper()


def _snapshot(rule: RoutingRule) -> dict[str, object]:
    return {
        "id": rule.pk,
        "name": rule.name,
        "priority": rule.priority,
        **rule.conditions(),
        "connection": rule.connection.name,
        "also": rule.also,
    }


def current_version(rules: list[RoutingRule]) -> RoutingVersion:
    snapshot = [_snapshot(rule) for rule in rules]
    digest = hashlib.sha256(json.dumps(snapshot, sort_keys=True).encode()).hexdigest()

    version = config_cache.cached(
        ("routing_version", digest), lambda: RoutingVersion.objects.filter(digest=digest).first()
    )
    if version is None:
        version, created = RoutingVersion.objects.get_or_create(digest=digest, defaults={"rules": snapshot})
        if created:
            config_cache.written()
    return version


def active_rules() -> list[RoutingRule]:
    """The active rules by priority (shared, read-only instances: read once per configuration generation)."""
    return config_cache.cached(
        "active_rules",
        lambda: list(
            RoutingRule.objects.select_related("connection", "legal_entity").filter(
                active=True, connection__active=True
            )
        ),
    )


def routes(facts: RouteFacts) -> Route:
    """The connections the document goes to: the first matching rule's, plus those of matching
    ``also`` rules before it. Raises ``NoRoute`` when nothing matches."""
    rules = active_rules()
    chosen: list[RoutingRule] = []
    for rule in rules:
        if not _matches(rule, facts):
            continue
        if all(rule.connection_id != other.connection_id for other in chosen):
            chosen.append(rule)
        if not rule.also:
            break
    if not chosen:
        raise NoRoute(facts)
    return Route(
        connections=tuple(rule.connection for rule in chosen),
        version=current_version(rules),
        rules=tuple(rule.pk for rule in chosen),
    )


def mappings_of(connection: ERPConnection) -> dict[tuple[str, str], str]:
    """Every mapping of the connection as (kind, key) → value, read once per configuration generation."""

    def load() -> dict[tuple[str, str], str]:
        return {
            (kind, key): value
            for kind, key, value in Mapping.objects.filter(connection_id=connection.pk).values_list(
                "kind", "key", "value"
            )
        }

    return config_cache.cached(("mappings", connection.pk), load)


def resolve_mapping(connection: ERPConnection, kind: str, keys: list[str]) -> str:
    """The value of the most specific key present, falling back to ``default``."""
    candidates = [key for key in keys if key] + [Mapping.DEFAULT_KEY]
    found = mappings_of(connection)
    for key in candidates:
        if (kind, key) in found:
            return found[(kind, key)]
    raise MissingMapping(kind, [key for key in keys if key], connection)
