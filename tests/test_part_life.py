"""A part's life as a state machine: whatever Mailtrap, its Email Logs and the workers do.

Hypothesis drives real drains (real Redis, the in-memory transport, and an
in-memory twin of the Email Logs look-up) through every outcome a call can
have (accepted, 500, 503, 429, reset, answer lost, the worker dying before or
after Mailtrap accepted), every state of the logs (answering, listing late,
down, rate-limited) and drains at any moment. It checks, all along and at
the end:

The volume caps can be reached too: a call they hold back waits, unspent.

- no send is lost: each is final, or its envelope waits in the outbox;
- no part makes more calls than its budget (``max_retries + 1``), and each
  ends ``sent`` or ``failed`` once the logs answer again;
- while the logs answer, Mailtrap is handed each message at most once; a
  message handed over twice is counted in ``possible_duplicates``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from mailqueue.client import Client
from mailqueue.core.calltag import parse_tag
from mailqueue.core.logmatch import Logged, match_requests
from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.core.routing import Route
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import (
    EmailLogsBusy,
    EmailLogsUnavailable,
    RateLimited,
    TransientDeliveryError,
)
from mailqueue.reconcile.lookup import Doubtful, PartLookup, pending_requests
from mailqueue.settings import RateLimit, Settings
from mailqueue.store import outbox as outbox_module
from mailqueue.store.keys import OUTBOX_GROUP
from mailqueue.testing import MemoryTransport

MAX_RETRIES = 2
FINAL = {"sent", "failed"}

CALL_OUTCOMES = (
    "accepted",
    "500",  # unknown outcome: looked up
    "503",  # not handled: retried
    "429",
    "reset",  # unknown outcome, never accepted
    "lost",  # accepted, the answer lost
    "die-before",  # the worker dies before Mailtrap accepts
    "die-after",  # the worker dies after Mailtrap accepted
)
LOGS_STATES = ("answering", "late", "down", "busy")


class WorkerDied(BaseException):
    """The worker process ended mid-call (a SIGKILL): nothing after this line runs."""


class MemoryMailtrap:
    """What Mailtrap accepted, answered per ``outcome``, and listed by the logs twin."""

    def __init__(self) -> None:
        self.outcome = "accepted"
        self.logs = "answering"
        self.logged: list[Logged] = []
        self.handed: Counter[str] = Counter()  # recipient -> messages accepted
        self.called: Counter[str] = Counter()  # recipient -> calls that carried it

    def answer(self, call: ApiCall) -> list[RequestResult]:
        for request in call.recipients:
            self.called.update(request)
        outcome = self.outcome
        if outcome in ("accepted", "lost", "die-after"):
            results = self._accept(call)
            if outcome == "lost":
                raise TransientDeliveryError("read timeout", path=call.path, maybe_delivered=True)
            if outcome == "die-after":
                raise WorkerDied()
            return results
        if outcome == "die-before":
            raise WorkerDied()
        if outcome == "429":
            raise RateLimited("rate limited", status_code=429, path=call.path)
        if outcome == "reset":
            raise TransientDeliveryError("reset", path=call.path, maybe_delivered=True)
        raise TransientDeliveryError("server error", status_code=int(outcome), path=call.path)

    def _accept(self, call: ApiCall) -> list[RequestResult]:
        requests = call.json["requests"] if call.is_batch else [call.json]
        base = call.json.get("base") or {}
        results = []
        for request, recipients in zip(requests, call.recipients, strict=True):
            variables = request.get("custom_variables", base.get("custom_variables"))
            ids: dict[str, str | None] = {}
            for recipient in recipients:
                ids[recipient] = message_id = uuid.uuid4().hex
                self.handed[recipient] += 1
                self.logged.append(
                    Logged(
                        message_id,
                        recipient,
                        request.get("subject", base.get("subject")),
                        datetime.now(timezone.utc),
                        parse_tag(variables),
                    )
                )
            results.append(RequestResult(message_ids=ids))
        return results


class LogsTwin:
    """The Email Logs look-up over what ``MemoryMailtrap`` accepted (``Reconciler``'s interface)."""

    def __init__(self, mailtrap: MemoryMailtrap) -> None:
        self.mailtrap = mailtrap
        self.looked = 0

    def enabled_for(self, route: Route) -> bool:
        return True

    def look_up(
        self, route: Route, parts: Sequence[Doubtful], *, deadline: float | None = None
    ) -> list[PartLookup]:
        self.looked += 1
        state = self.mailtrap.logs
        if state == "down":
            raise EmailLogsUnavailable("logs down", reason="unreachable", status_code=503)
        if state == "busy":
            raise EmailLogsBusy("logs busy", retry_after=None)
        # Listing late: nothing accepted shows yet.
        logged = self.mailtrap.logged if state == "answering" else []
        pending = [pending_requests(part) for part in parts]
        verdicts = iter(match_requests([p for requests in pending for p in requests], logged))
        return [
            PartLookup(part, [next(verdicts) for _ in requests])
            for part, requests in zip(parts, pending, strict=True)
        ]

    def close(self) -> None:
        pass


class PartLife(RuleBasedStateMachine):
    """Sends, calls, look-ups and dying workers in any order."""

    redis_url = ""

    def __init__(self) -> None:
        super().__init__()
        plain = redis.Redis.from_url(self.redis_url)
        plain.flushall()
        plain.close()
        self.settings = Settings(
            broker_url=self.redis_url,
            api_token="t",
            rate_limit=RateLimit.parse("100000/1s"),
            max_retries=MAX_RETRIES,
            retry_backoff=0.001,
            retry_backoff_max=0.002,
            reconcile_settle=0.001,
            reclaim_idle=60.0,
            calls_in_flight=1,
        )
        self.client = Client(self.settings, publish=lambda options: None)
        self.mailtrap = MemoryMailtrap()
        self.logs = LogsTwin(self.mailtrap)
        self.transport = MemoryTransport(self.mailtrap.answer)
        self.sends: dict[str, str] = {}  # send id -> its recipient
        self.logs_always_answered = True
        self.caps_reached = False
        take = self.client.caps.take

        def take_unless_reached(*args: Any, **kwargs: Any) -> float:
            # The caps' own answer, or a short wait while they are reached.
            return 0.001 if self.caps_reached else take(*args, **kwargs)

        self.client.caps.take = take_unless_reached  # type: ignore[method-assign]

    def teardown(self) -> None:
        try:
            self.mailtrap.logs = "answering"
            self.caps_reached = False
            for _ in range(6 * (MAX_RETRIES + 1)):
                if all(self._state(sid) in FINAL for sid in self.sends):
                    break
                self.drain()
            states = {sid: self._state(sid) for sid in self.sends}
            assert set(states.values()) <= FINAL, states
            self.calls_within_budget()
        finally:
            self.client.close()

    # -- what the world does ---------------------------------------------

    @precondition(lambda self: len(self.sends) < 4)
    @rule()
    def enqueue(self) -> None:
        recipient = f"r{len(self.sends)}@example.com"
        message = {"from_email": "shop@example.com", "to": [recipient], "subject": recipient}
        send_id = self.client.enqueue(message | {"text": "x"})
        self.sends[send_id] = recipient

    @rule(outcome=st.sampled_from(CALL_OUTCOMES))
    def mailtrap_answers(self, outcome: str) -> None:
        self.mailtrap.outcome = outcome

    @rule(state=st.sampled_from(LOGS_STATES))
    def logs_are(self, state: str) -> None:
        self.mailtrap.logs = state
        if state in ("late", "down"):
            self.logs_always_answered = False

    @rule(reached=st.booleans())
    def volume_caps(self, reached: bool) -> None:
        self.caps_reached = reached

    @rule()
    def drain(self) -> None:
        # Whatever waits for a retry or a look-up is due now: the delays are
        # the backoff's, a few milliseconds here.
        self.client.outbox.move_due(now=float("inf"))
        drainer = Drainer(self.client.drain_parts, self.transport)
        drainer.reconciler = drainer.poster.reconciler = drainer.settler.reconciler = self.logs  # type: ignore[assignment]
        try:
            drainer.drain(budget=0.2)
        except WorkerDied:
            self._lease_runs_out()
        finally:
            drainer.close()

    def _lease_runs_out(self) -> None:
        """What a dead worker's parts look like once ``reclaim_idle`` has passed."""
        client = self.client
        for stream in client.outbox.streams():
            for entry in client.redis.xpending_range(stream, OUTBOX_GROUP, "-", "+", 1000):
                # Idle long enough to be taken over by the next reader.
                client.redis.xclaim(
                    stream, OUTBOX_GROUP, "dead", 0, [entry["message_id"]], idle=10**9
                )
        for send_id in self.sends:
            key = client.keys.send(send_id)
            if client.redis.hexists(key, "lease:0"):
                client.redis.hset(key, "lease:0", 1)

    # -- what must hold ----------------------------------------------------

    @invariant()
    def nothing_is_lost(self) -> None:
        waiting = self._waiting_sends()
        for send_id in self.sends:
            assert self._state(send_id) in FINAL or send_id in waiting, send_id

    @invariant()
    def calls_within_budget(self) -> None:
        for send_id, recipient in self.sends.items():
            record: Mapping[str, Any] = self.client.get_status(send_id) or {}
            assert self.mailtrap.called[recipient] <= MAX_RETRIES + 1, record
            assert record.get("attempts", 0) <= MAX_RETRIES + 1, record

    @invariant()
    def handed_once_while_the_logs_answer(self) -> None:
        for send_id, recipient in self.sends.items():
            handed = self.mailtrap.handed[recipient]
            if self.logs_always_answered:
                assert handed <= 1, (send_id, handed)
            record: Mapping[str, Any] = self.client.get_status(send_id) or {}
            assert record.get("possible_duplicates", 0) >= handed - 1, record

    @invariant()
    def a_sent_send_was_handed_over_and_a_failed_one_says_why(self) -> None:
        for send_id, recipient in self.sends.items():
            record: Mapping[str, Any] = self.client.get_status(send_id) or {}
            if record.get("state") == "sent":
                assert self.mailtrap.handed[recipient] >= 1, record
                assert record["recipients"][recipient]["message_id"], record
            if record.get("state") == "failed":
                assert record["error"], record
                if self.mailtrap.handed[recipient]:
                    # Accepted unseen: the record must say it may have gone out.
                    assert record["possible_duplicates"] >= 1, record

    def _state(self, send_id: str) -> str | None:
        return self.client.store.state(send_id)

    def _waiting_sends(self) -> set[str]:
        """Send ids of every envelope in a stream (read or not) or scheduled for later."""
        found = set()
        for stream in self.client.outbox.streams():
            entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self.client.redis.xrange(stream))
            for _, fields in entries:
                found.add(_send_id(fields[b"e"]))
        members = cast(list[bytes], self.client.redis.zrange(self.client.keys.retry, 0, -1))
        for member in members:
            # A waiting part is named "<send id>|<part>"; earlier versions kept the envelope.
            text = member.decode()
            found.add(_send_id(member) if "{" in text else text.rpartition("|")[0])
        return found


def _send_id(raw: Any) -> str:
    return str(outbox_module.Envelope.decode(raw).send_id)


@pytest.fixture
def part_life(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[type[PartLife]]:
    # Every read looks for a dead worker's envelopes, not once a second.
    monkeypatch.setattr(outbox_module, "RECLAIM_CHECK_INTERVAL", 0.0)
    PartLife.redis_url = redis_url
    yield PartLife


def test_a_part_ends_within_its_budget_is_never_lost_and_goes_out_once_while_logs_answer(
    part_life: type[PartLife],
) -> None:
    run_state_machine_as_test(
        part_life,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
