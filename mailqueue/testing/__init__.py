"""Real local stand-ins for tests and demos: a Mailtrap API server and a private Redis."""

from __future__ import annotations

from .mailtrap import AcceptedMessage, LocalMailtrap, MailtrapStats
from .redis_server import RedisServer

__all__ = ["AcceptedMessage", "LocalMailtrap", "MailtrapStats", "RedisServer"]
