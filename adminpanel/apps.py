from django.apps import AppConfig


class AdminpanelConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "adminpanel"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        # Registers the monitor's hub task, the process handlers (maintenance, monitor) and
        # the publisher's hooks (maintenance, metrics).
        from adminpanel import handlers, monitor, publishing  # noqa: F401
        from adminpanel.metrics import OperatorsCollector

        # ready() can run twice (test runners); register the collector once.
        if not getattr(REGISTRY, "_carbon_operators", False):
            REGISTRY.register(OperatorsCollector())
            REGISTRY._carbon_operators = True
