"""Verify the audit log's hash chain: exit 0 when intact, 1 with the first broken entry otherwise."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.core.audit import verify_chain


class Command(BaseCommand):
    help = "Recompute every audit entry's hash and check its link to the previous entry; report the first break."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--database", default=None, help="Database alias (default: the router's choice).")

    def handle(self, *args: Any, **options: Any) -> None:
        result = verify_chain(using=options["database"])
        if result.broken is not None:
            self.stdout.write(f"{result.verified} entries verified before the break")
            raise CommandError(f"audit chain broken at {result.broken.describe()}", returncode=1)
        self.stdout.write(self.style.SUCCESS(f"audit chain intact: {result.verified} entries"))
        if result.last_id is not None:
            self.stdout.write(f"last entry: id={result.last_id} entry_hash={result.last_hash}")
