from __future__ import annotations

import json
import os
from argparse import ArgumentParser
from typing import Any

import requests
from django.core.management.base import BaseCommand, CommandError

from apps.sources import stripe_samples


class Command(BaseCommand):
    help = "Sign and send the demo stream of Stripe events to a running hub, as Stripe would."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--source", default="stripe-us")
        parser.add_argument("--secret-env", default="STRIPE_WEBHOOK_SECRET")

    def handle(self, *args: Any, **options: Any) -> None:
        secret = os.environ.get(options["secret_env"])
        if not secret:
            raise CommandError(f"set {options['secret_env']} to the source's webhook secret")
        url = f"{options['url'].rstrip('/')}/webhooks/{options['source']}/"
        for event in stripe_samples.demo_stream():
            body = json.dumps(event).encode()
            response = requests.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", "Stripe-Signature": stripe_samples.sign(body, secret)},
                timeout=30,
            )
            self.stdout.write(f"{response.status_code} {event['type']:<20} {event['id']}")
            if response.status_code >= 300:
                raise CommandError(f"the hub refused {event['id']}: {response.text[:300]}")
