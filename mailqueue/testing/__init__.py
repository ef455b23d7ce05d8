"""Real local parts, a supported part of the package: the demo runs on them, and so can your tests.

- ``LocalMailtrap``: a server speaking Mailtrap's sending API on a loopback
  port (send, batch, sandbox, the bulk stream) and its account API (Email
  Logs, suppressions), with rate limits, latency and injectable faults;
  ``settings()`` and ``environment()`` name every one of its URLs, so that
  nothing a test sends reaches the real Mailtrap. ``mailqueue
  local-mailtrap`` runs one and prints them.
- ``RedisServer``: a private, throw-away ``redis-server`` on a free port.
- ``MemoryTransport``: a transport answering from a function of yours, without
  HTTP, to drive a drainer through its branches in your own tests (as httpx's
  ``MockTransport``); ``accept_all`` answers every request as accepted.
- ``WorkerProcess``: a real ``celery -A mailqueue worker`` for given settings,
  started and stopped with its whole process group.

None of them depends on a test framework; pytest fixtures built on them live
in the project's own tests.
"""

from __future__ import annotations

from mailqueue.testing.mailtrap import AcceptedMessage, LocalMailtrap, MailtrapStats
from mailqueue.testing.memory import MemoryTransport, accept_all
from mailqueue.testing.redis_server import RedisServer
from mailqueue.testing.worker import WorkerProcess

__all__ = [
    "AcceptedMessage",
    "LocalMailtrap",
    "MailtrapStats",
    "MemoryTransport",
    "RedisServer",
    "WorkerProcess",
    "accept_all",
]
