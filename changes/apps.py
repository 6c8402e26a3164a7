from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _fast_ignore_function_install(using: str = "default", **kwargs) -> None:
    # Imported when migrate runs: changes.capture defines triggers on models, which
    # cannot load while Django is still importing this AppConfig.
    from changes.capture import fast_ignore_function_install

    fast_ignore_function_install(using=using)


class ChangesConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "changes"

    def ready(self) -> None:
        # After every migrate: installing any pgtrigger trigger restores pgtrigger's own
        # (slower) ignore check (changes/capture.py says why ours is faster).
        post_migrate.connect(
            _fast_ignore_function_install, sender=self, dispatch_uid="fast-ignore-function"
        )
