from __future__ import annotations

from django.apps import AppConfig


class AnymailReceiversConfig(AppConfig):  # type: ignore[misc]  # Django ships no types
    name = "tests.e2e.anymail_app"
    label = "anymail_receivers"

    def ready(self) -> None:
        from . import receivers

        receivers.connect()
