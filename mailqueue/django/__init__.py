"""Django integration: the queued ``EmailBackend`` and the tracking webhook view (``urls``).

Importing it connects Anymail's ``post_send`` to the process's final outcomes
(``signals.connect_post_send``): a worker of a Django project imports it when
it starts (see ``mailqueue.app``), a web process when it loads the backend.
"""

from __future__ import annotations

from mailqueue.django.backend import EmailBackend
from mailqueue.django.signals import connect_post_send

__all__ = ["EmailBackend"]

connect_post_send()
