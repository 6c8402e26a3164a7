from django.apps import AppConfig


class PreferencesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "preferences"
    verbose_name = "refresh preferences and policies"

    def ready(self) -> None:
        # Registers the `policy_changed` control handler in every process that serves
        # live connections (and in tests), whatever imported first.
        import realtime.policy  # noqa: F401
