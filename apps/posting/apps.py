from django.apps import AppConfig


class PostingConfig(AppConfig):
    name = "apps.posting"
    label = "posting"
    verbose_name = "Postings (outbox)"
