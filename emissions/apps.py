from django.apps import AppConfig


class EmissionsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "emissions"

    def ready(self) -> None:
        # Registers the benchmark recomputes on the publisher's hooks.
        from emissions import publishing  # noqa: F401
