"""Configuration as code: one YAML file declares legal entities, billing sources, ERP
connections, routing and mappings. Applying is idempotent and reports what changed.

Secrets are never written in the file or the database: they are ``env:VAR`` references.
The file is the whole truth for routing rules and mappings of the connections it names: rules
and mappings absent from the file are removed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from django.db import transaction

from apps.connectors.registry import CONNECTOR_CLASSES
from apps.core import audit, secrets
from apps.core.money import CurrencyError, normalize_currency
from apps.ledger.models import LegalEntity
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources.models import BillingSource

ACTOR = "hub_config"
# Connection settings that hold a secret: the file must name an env:VAR, never the value.
SECRET_SETTINGS = (
    "password",
    "secret",
    "token",
    "api_key",
    "client_secret",
    "private_key",
    "consumer_secret",
    "token_secret",
)
ROUTING_KEYS = {"name", "legal_entity", "region", "product_line", "transaction_type", "currency", "connection", "also"}
TRANSACTION_TYPES = {kind for kind, _ in RoutingRule.TRANSACTION_TYPES}
SOURCE_KINDS = {kind for kind, _ in BillingSource.KIND_CHOICES}
MAPPING_KINDS = {kind for kind, _ in Mapping.KIND_CHOICES}
CLOSED_PERIOD_POLICIES = {policy for policy, _ in ERPConnection.CLOSED_PERIOD_POLICIES}


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass
class Report:
    changes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        self.changes.append(line)


def _require(data: dict[str, Any], key: str, path: str, problems: list[str], kind: type = str) -> Any:
    value = data.get(key)
    if value is None or (kind is str and not str(value).strip()):
        problems.append(f"{path}.{key}: required")
        return None
    if not isinstance(value, kind):
        problems.append(f"{path}.{key}: must be a {kind.__name__}, got {type(value).__name__}")
        return None
    return value


def _list(doc: dict[str, Any], key: str, problems: list[str]) -> list[dict[str, Any]]:
    items = doc.get(key) or []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        problems.append(f"{key}: must be a list of mappings")
        return []
    return items


def validate(doc: object) -> list[str]:
    problems: list[str] = []
    if not isinstance(doc, dict):
        return ["the file must be a YAML mapping with legal_entities, sources, erp_connections, routing, mappings"]
    unknown = set(doc) - {"legal_entities", "sources", "erp_connections", "routing", "mappings"}
    problems += [f"{key}: unknown section" for key in sorted(unknown)]
    entities = {str(e.get("code")) for e in _list(doc, "legal_entities", problems)}
    for i, entity in enumerate(_list(doc, "legal_entities", [])):
        path = f"legal_entities[{i}]"
        _require(entity, "code", path, problems)
        _require(entity, "name", path, problems)
        currency = _require(entity, "currency", path, problems)
        if currency:
            try:
                normalize_currency(currency)
            except CurrencyError as exc:
                problems.append(f"{path}.currency: {exc}")
    known_entities = entities | set(LegalEntity.objects.values_list("code", flat=True))
    for i, source in enumerate(_list(doc, "sources", problems)):
        path = f"sources[{i}]"
        _require(source, "name", path, problems)
        if _require(source, "kind", path, problems) not in (None, *SOURCE_KINDS):
            problems.append(f"{path}.kind: must be one of {sorted(SOURCE_KINDS)}")
        entity = _require(source, "legal_entity", path, problems)
        if entity and entity not in known_entities:
            problems.append(f"{path}.legal_entity: '{entity}' is not declared in legal_entities")
        api = source.get("api") or {}
        if not isinstance(api, dict):
            problems.append(f"{path}.api: must map api_key and base_url")
        elif "api_key" in api and not secrets.is_reference(api["api_key"]):
            problems.append(f"{path}.api.api_key: must be an env:VAR reference, never the secret itself")
        secrets_list = _require(source, "webhook_secrets", path, problems, list)
        for j, ref in enumerate(secrets_list or []):
            if not secrets.is_reference(ref):
                problems.append(f"{path}.webhook_secrets[{j}]: must be an env:VAR reference, never the secret itself")
    connections = set()
    for i, conn in enumerate(_list(doc, "erp_connections", problems)):
        path = f"erp_connections[{i}]"
        connections.add(_require(conn, "name", path, problems))
        if _require(conn, "kind", path, problems) not in (None, *CONNECTOR_CLASSES):
            problems.append(f"{path}.kind: must be one of {sorted(CONNECTOR_CLASSES)}")
        policy = conn.get("closed_period_policy", ERPConnection.CLOSED_PERIOD_PARK)
        if policy not in CLOSED_PERIOD_POLICIES:
            problems.append(f"{path}.closed_period_policy: must be one of {sorted(CLOSED_PERIOD_POLICIES)}")
        settings = _require(conn, "settings", path, problems, dict) or {}
        for key in SECRET_SETTINGS:
            if key in settings and not secrets.is_reference(settings[key]):
                problems.append(f"{path}.settings.{key}: must be an env:VAR reference, never the secret itself")
    known_connections = connections | set(ERPConnection.objects.values_list("name", flat=True))
    writeback_kinds = {conn.get("name"): conn.get("kind") for conn in doc.get("erp_connections") or []}
    for i, source in enumerate(doc.get("sources") or []):
        target = source.get("writeback_connection")
        if target is None:
            continue
        kind = (
            writeback_kinds.get(target)
            or ERPConnection.objects.filter(name=target).values_list("kind", flat=True).first()
        )
        if target not in known_connections:
            problems.append(f"sources[{i}].writeback_connection: '{target}' is not declared in erp_connections")
        elif kind != source.get("kind"):
            problems.append(
                f"sources[{i}].writeback_connection: '{target}' is a {kind} connection; a {source.get('kind')} "
                f"source writes back through a connection of kind {source.get('kind')}"
            )
    for i, rule in enumerate(_list(doc, "routing", problems)):
        path = f"routing[{i}]"
        unknown_keys = set(rule) - ROUTING_KEYS
        if unknown_keys:
            problems.append(f"{path}: unknown keys {sorted(unknown_keys)}; a rule takes {sorted(ROUTING_KEYS)}")
        entity = rule.get("legal_entity")
        if entity and entity != "*" and entity not in known_entities:
            problems.append(f"{path}.legal_entity: '{entity}' is not declared in legal_entities")
        kind = rule.get("transaction_type")
        if kind and kind not in TRANSACTION_TYPES:
            problems.append(f"{path}.transaction_type: '{kind}' is not one of {sorted(TRANSACTION_TYPES)}")
        conn = _require(rule, "connection", path, problems)
        if conn and conn not in known_connections:
            problems.append(f"{path}.connection: '{conn}' is not declared in erp_connections")
    mappings = doc.get("mappings") or {}
    if not isinstance(mappings, dict):
        problems.append("mappings: must map connection names to mapping kinds")
        mappings = {}
    for conn, kinds in mappings.items():
        if conn not in known_connections:
            problems.append(f"mappings.{conn}: '{conn}' is not declared in erp_connections")
        if not isinstance(kinds, dict):
            problems.append(f"mappings.{conn}: must map kinds ({', '.join(sorted(MAPPING_KINDS))}) to key: value")
            continue
        for kind, values in kinds.items():
            if kind not in MAPPING_KINDS:
                problems.append(f"mappings.{conn}.{kind}: unknown kind; use one of {sorted(MAPPING_KINDS)}")
            elif not isinstance(values, dict):
                problems.append(
                    f"mappings.{conn}.{kind}: must map keys (price, product, method or 'default') to values"
                )
    return problems


def load(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from exc
    problems = validate(doc)
    if problems:
        raise ConfigError(problems)
    return doc  # type: ignore[no-any-return]


def _rule_words(rule: dict[str, Any]) -> str:
    keys = ("legal_entity", "region", "product_line", "transaction_type", "currency")
    words = ", ".join(f"{key} {rule[key]}" for key in keys if rule.get(key) and rule[key] != "*")
    return words or "*"


def _upsert(model: type, lookup: dict[str, Any], values: dict[str, Any], label: str, report: Report) -> Any:
    obj = model.objects.filter(**lookup).first()
    if obj is None:
        obj = model.objects.create(**lookup, **values)
        audit.record("config.created", obj, actor=ACTOR, after={k: str(v) for k, v in values.items()})
        report.add(f"+ {label}")
        return obj
    before = {key: getattr(obj, key) for key in values}
    if before != values:
        for key, value in values.items():
            setattr(obj, key, value)
        obj.save()
        audit.record(
            "config.updated",
            obj,
            actor=ACTOR,
            before={k: str(v) for k, v in before.items()},
            after={k: str(v) for k, v in values.items()},
        )
        changed = ", ".join(key for key in values if before[key] != values[key])
        report.add(f"~ {label} ({changed})")
    return obj


def apply(doc: dict[str, Any]) -> Report:
    report = Report()
    with transaction.atomic():
        entities = {}
        for entity in doc.get("legal_entities") or []:
            entities[entity["code"]] = _upsert(
                LegalEntity,
                {"code": entity["code"]},
                {
                    "name": entity["name"],
                    "country": entity.get("country", ""),
                    "base_currency": normalize_currency(entity["currency"]),
                },
                f"legal entity {entity['code']}",
                report,
            )
        for source in doc.get("sources") or []:
            entity = entities.get(source["legal_entity"]) or LegalEntity.objects.get(code=source["legal_entity"])
            _upsert(
                BillingSource,
                {"name": source["name"]},
                {
                    "kind": source["kind"],
                    "legal_entity": entity,
                    "webhook_secrets": list(source["webhook_secrets"]),
                    "api_settings": dict(source.get("api") or {}),
                    "active": bool(source.get("active", True)),
                },
                f"source {source['name']}",
                report,
            )
            if not secrets.resolve_optional(source["webhook_secrets"]):
                report.warnings.append(f"source {source['name']}: none of its webhook secret variables is set here")
        connections = {}
        for conn in doc.get("erp_connections") or []:
            connections[conn["name"]] = _upsert(
                ERPConnection,
                {"name": conn["name"]},
                {
                    "kind": conn["kind"],
                    "settings": conn["settings"],
                    "active": bool(conn.get("active", True)),
                    "closed_period_policy": conn.get("closed_period_policy", ERPConnection.CLOSED_PERIOD_PARK),
                },
                f"ERP connection {conn['name']}",
                report,
            )
        for source in doc.get("sources") or []:
            target = source.get("writeback_connection")
            _upsert(
                BillingSource,
                {"name": source["name"]},
                {"writeback_connection": connections.get(target) or ERPConnection.objects.filter(name=target).first()},
                f"source {source['name']} writeback",
                report,
            )
        wanted_rules = set()
        for priority, rule in enumerate(doc.get("routing") or [], start=1):
            code = rule.get("legal_entity") or "*"
            entity = None if code == "*" else LegalEntity.objects.get(code=code)
            connection = connections.get(rule["connection"]) or ERPConnection.objects.get(name=rule["connection"])
            conditions = {
                "legal_entity": entity,
                "region": ",".join(sorted(c.strip().upper() for c in str(rule.get("region") or "").split(",") if c)),
                "product_line": str(rule.get("product_line") or ""),
                "transaction_type": str(rule.get("transaction_type") or ""),
                "currency": str(rule.get("currency") or "").upper(),
                "connection": connection,
            }
            obj = _upsert(
                RoutingRule,
                conditions,
                {"priority": priority * 10, "also": bool(rule.get("also", False)), "name": str(rule.get("name") or "")},
                f"route {_rule_words(rule)} → {rule['connection']}",
                report,
            )
            wanted_rules.add(obj.pk)
        if "routing" in doc:
            for stale in RoutingRule.objects.exclude(pk__in=wanted_rules).select_related("legal_entity", "connection"):
                audit.record("config.removed", stale, actor=ACTOR, before={"rule": str(stale)})
                report.add(f"- route {stale}")
                stale.delete()
        for conn_name, kinds in (doc.get("mappings") or {}).items():
            connection = connections.get(conn_name) or ERPConnection.objects.get(name=conn_name)
            wanted = set()
            for kind, values in kinds.items():
                for key, value in (values or {}).items():
                    obj = _upsert(
                        Mapping,
                        {"connection": connection, "kind": kind, "key": str(key)},
                        {"value": "" if value is None else str(value)},
                        f"mapping {conn_name} {kind} {key} → {value}",
                        report,
                    )
                    wanted.add(obj.pk)
            for stale in Mapping.objects.filter(connection=connection).exclude(pk__in=wanted):
                audit.record("config.removed", stale, actor=ACTOR, before={"mapping": str(stale)})
                report.add(f"- mapping {stale}")
                stale.delete()
    return report
