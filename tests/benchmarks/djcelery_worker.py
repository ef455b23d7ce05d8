"""The baseline worker for bench_worker_cpu: django-celery-email sending through Anymail's Mailtrap.

``celery -A djcelery_worker worker`` (from this directory) runs it. The broker
and the Mailtrap API URL come from ``BENCH_BROKER_URL`` and ``BENCH_MAILTRAP_URL``;
the benchmark sets both.
"""

from __future__ import annotations

import os

import django
from celery import Celery
from django.conf import settings

if not settings.configured:
    settings.configure(
        INSTALLED_APPS=["djcelery_email"],
        EMAIL_BACKEND="djcelery_email.backends.CeleryEmailBackend",
        CELERY_EMAIL_BACKEND="anymail.backends.mailtrap.EmailBackend",
        # One message per task, as a web app calling send_mail once per email gets.
        CELERY_EMAIL_CHUNK_SIZE=1,
        ANYMAIL={
            "MAILTRAP_API_TOKEN": os.environ.get("BENCH_MAILTRAP_TOKEN", "local-mailtrap-token"),
            "MAILTRAP_API_URL": os.environ.get("BENCH_MAILTRAP_URL", "http://127.0.0.1:1/api/"),
        },
        DEFAULT_CHARSET="utf-8",
    )
    django.setup()

app = Celery("djcelery_worker", broker=os.environ.get("BENCH_BROKER_URL", "redis://"))
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    worker_prefetch_multiplier=4,
    worker_hijack_root_logger=False,
)

# Registers django-celery-email's task on this app.
import djcelery_email.tasks  # type: ignore[import-untyped]  # noqa: E402,F401
