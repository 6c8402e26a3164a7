"""The project package. Importing it loads the project's Celery app, so every process
(web server, publisher, management commands, not only `celery --app config`) sends its
tasks to the configured broker instead of Celery's default app (amqp on localhost)."""

from config.celery import app as celery_app

__all__ = ("celery_app",)
