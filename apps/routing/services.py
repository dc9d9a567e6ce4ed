from __future__ import annotations

from apps.ledger.models import LegalEntity
from apps.routing.models import ERPConnection, Mapping, RoutingRule


class NoRoute(LookupError):
    pass


class MissingMapping(LookupError):
    def __init__(self, kind: str, keys: list[str], connection: ERPConnection) -> None:
        self.kind = kind
        self.keys = keys
        self.connection = connection
        super().__init__(f"no {kind} mapping on {connection.name} for {', '.join(keys)}")


def route(legal_entity: LegalEntity | None) -> ERPConnection:
    rules = list(RoutingRule.objects.select_related("connection").filter(connection__active=True))
    if legal_entity is not None:
        for rule in rules:
            if rule.legal_entity_id == legal_entity.pk:
                return rule.connection
    for rule in rules:
        if rule.legal_entity_id is None:
            return rule.connection
    code = legal_entity.code if legal_entity else "(none)"
    raise NoRoute(f"No ERP connection is routed for legal entity {code}.")


def resolve_mapping(connection: ERPConnection, kind: str, keys: list[str]) -> str:
    """The value of the most specific key present, falling back to ``default``."""
    candidates = [key for key in keys if key] + [Mapping.DEFAULT_KEY]
    found = {m.key: m.value for m in Mapping.objects.filter(connection=connection, kind=kind, key__in=candidates)}
    for key in candidates:
        if key in found:
            return found[key]
    raise MissingMapping(kind, [key for key in keys if key], connection)
