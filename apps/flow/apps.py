from django.apps import AppConfig


class FlowConfig(AppConfig):
    name = "apps.flow"
    label = "flow"
    verbose_name = "ERP flow control"
