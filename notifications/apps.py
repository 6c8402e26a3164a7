from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "notifications"

    def ready(self) -> None:
        # Registers the publisher's hooks (rankings, notifications created with a batch).
        from notifications import publishing  # noqa: F401
