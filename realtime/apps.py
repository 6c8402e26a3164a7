from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "realtime"

    def ready(self) -> None:
        from prometheus_client import REGISTRY

        # The publisher's fan-out (changes/hooks.py); the `policy_changed` control handler
        # with the announcement of preferences' changes; the live delivery of
        # notifications (control handler, subscribe hook, the publisher's after-fan-out).
        from realtime import broadcast, notification_delivery, policy  # noqa: F401
        from realtime.hub import running_hubs
        from realtime.metrics import RealtimeCollector

        # ready() can run twice (test runners); register the collector once.
        if not getattr(REGISTRY, "_carbon_realtime", False):
            REGISTRY.register(RealtimeCollector(hubs=running_hubs))
            REGISTRY._carbon_realtime = True
