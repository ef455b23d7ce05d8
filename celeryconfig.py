"""Celery configuration for mailqueue workers (Celery's own convention).

Every value comes from mailqueue's settings, read from the environment, or from
the Django settings under ``DJANGO_SETTINGS_MODULE`` (see README.md,
"Configuration"); edit below to override a Celery setting.
"""

from mailqueue.celery_app import celery_config
from mailqueue.settings import Settings

globals().update(celery_config(Settings.from_process()))
