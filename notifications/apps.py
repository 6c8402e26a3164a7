from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notifications"

    def ready(self) -> None:
        # Registers the `notification` control handler and the subscribe hook with the
        # live transports of every server process, and the publisher's hooks.
        from notifications import delivery, publishing  # noqa: F401
