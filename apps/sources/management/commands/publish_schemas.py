"""Add new canonical schema files to the publication lock. Never rewrites a published entry: a
changed schema is published as a new version file."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.sources import canonical


class Command(BaseCommand):
    help = "Publish new canonical JSON Schema versions (apps/sources/schemas/canonical/published.lock.json)."

    def handle(self, *args: Any, **options: Any) -> None:
        lock_path = canonical.LOCK_FILE
        lock: dict[str, str] = json.loads(lock_path.read_text()) if lock_path.exists() else {}
        changed = [problem for problem in canonical.publication_problems() if "is not published" not in problem]
        if changed:
            raise CommandError("\n".join(changed))
        added = []
        for path in sorted(canonical.SCHEMA_DIR.glob("*.json")):
            if canonical.FILE_NAME.match(path.name) and path.name not in lock:
                lock[path.name] = canonical.schema_digest(path)
                added.append(path.name)
        lock_path.write_text(json.dumps(dict(sorted(lock.items())), indent=2) + "\n")
        self.stdout.write(f"published: {', '.join(added)}" if added else "nothing new to publish")
