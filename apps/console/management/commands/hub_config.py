from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.console import hub_config


class Command(BaseCommand):
    help = "Validate or apply a hub configuration file (sources, ERP connections, routing, mappings)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=["apply", "validate"])
        parser.add_argument("file", type=Path)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            doc = hub_config.load(options["file"])
        except hub_config.ConfigError as exc:
            raise CommandError("invalid configuration:\n  " + "\n  ".join(exc.problems)) from exc
        if options["action"] == "validate":
            self.stdout.write(self.style.SUCCESS(f"{options['file']} is valid"))
            return
        report = hub_config.apply(doc)
        for line in report.changes:
            self.stdout.write(line)
        for warning in report.warnings:
            self.stderr.write(self.style.WARNING(f"warning: {warning}"))
        summary = f"{len(report.changes)} change(s) applied" if report.changes else "no changes: already up to date"
        self.stdout.write(self.style.SUCCESS(summary))
