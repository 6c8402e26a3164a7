from django.apps import AppConfig


class AdminpanelConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "adminpanel"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        # Registers the monitor's hub task, the process handlers (maintenance, monitor),
        # the publisher's hooks (maintenance, metrics), maintenance at the live transports'
        # door and the live sessions' audit of staff-only subscriptions.
        from adminpanel import (  # noqa: F401
            admission,
            handlers,
            monitor,
            publishing,
            subscriptions,
        )
        from adminpanel.audit import audit_received
        from adminpanel.metrics import OperatorsCollector
        from common.audit import audited

        # The audit log of the apps below (common/audit.py).
        audited.connect(audit_received, dispatch_uid="adminpanel-audit-log")

        # ready() can run twice (test runners); register the collector once.
        if not getattr(REGISTRY, "_carbon_operators", False):
            REGISTRY.register(OperatorsCollector())
            REGISTRY._carbon_operators = True
