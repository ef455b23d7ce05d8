"""Fault soak: many messages through two real workers against a faulty local Mailtrap.

    .venv/bin/python tests/soak.py [--messages 10000] [--quick] [--no-coalesce] [--no-reconcile]
        [--outage recovering|permanent|logs-down|logs-late] [--outage-tries 2] [--max-retries N]

Every message has a unique subject, so what the local Mailtrap accepted can be
matched against every status record. The run reports messages lost (neither
accepted nor ``failed``), wrong statuses (``sent`` but never accepted, ``failed``
but accepted, message ids Mailtrap never returned for that message),
duplicates (accepted more than once) and whether each duplicate is counted in
its status record (``possible_duplicates``). A send that ends ``failed`` although
Mailtrap accepted it counts as a wrong status unless its record flags the doubt
(an attempt whose answer was lost, then no retry left). It exits non-zero on any loss,
wrong status or unflagged duplicate.

Mailtrap has no idempotency key, so a message whose answer was lost (``slow``:
accepted, answered after the client's read timeout; ``lost``: accepted, the
connection closed without an answer) may be accepted twice when it is
retried. With reconciliation (the default) the worker looks such a call up in
the local Mailtrap's Email Logs first and sends again only what is absent;
``--no-reconcile`` shows the behaviour without it. Duplicates either way
must be counted.

``--outage`` adds one outage to the dice: ``recovering``, every request
fails (500, 503 or reset) until each message has failed ``--outage-tries``
tries, then the dice alone answer; ``permanent``, every request fails for
good, so every message must end ``failed`` and dead-lettered; ``logs-down``,
the Email Logs answer every look-up 503 (each fallback is a counted possible
duplicate); ``logs-late``, the Email Logs list a message only after both
look-ups. In every run no part may make more calls than its budget allows.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import mailqueue
from mailqueue.client import default as current
from mailqueue.mailtrap.transport import ATTEMPTS
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.keys import Keys
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import RedisServer
from mailqueue.testing.worker import WorkerProcess

FAULT_RATES: Mapping[str, float] = {
    "500": 0.05,
    "503": 0.05,
    "429": 0.05,
    "reset": 0.03,
    "slow": 0.02,
    "lost": 0.02,
}
# Every request fails during an outage, with or without an answer.
OUTAGE_RATES: Mapping[str, float] = {"500": 0.4, "503": 0.3, "reset": 0.3}
OUTAGES = ("recovering", "permanent", "logs-down", "logs-late")
# Requests one try may make: in-process retries of a 503 or a 429.
REQUESTS_PER_TRY = ATTEMPTS
FINAL = frozenset({"sent", "partially_sent", "failed"})
READ_TIMEOUT = 1.0
SLOW_SECONDS = 2.0  # above the read timeout: the answer of a "slow" request is lost
# Email Logs list a message LOGS_DELAY after accepting it; the worker looks after SETTLE.
LOGS_DELAY = 1.0
SETTLE = 2.0


@dataclass
class SoakReport:
    """What a soak run saw; ``ok`` is the verdict."""

    messages: int
    seconds: float = 0.0
    accepted: int = 0  # distinct messages the local Mailtrap accepted
    accepted_total: int = 0  # accepted copies, duplicates included
    sent: int = 0
    failed: int = 0
    not_final: int = 0
    lost: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    duplicated: int = 0
    flagged_duplicates: int = 0
    unflagged_duplicates: list[str] = field(default_factory=list)
    flagged_total: int = 0  # records with possible_duplicates > 0, duplicated or not
    failed_flagged_accepted: int = 0  # failed, flagged as possibly delivered, and it was
    requests: int = 0
    reconciled: int = 0  # requests found in Email Logs instead of being sent again
    fallbacks: int = 0  # look-ups the logs could not answer
    faults: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    max_retries: int | None = None  # the run's budget, when it is checked
    dead_letters: int = 0  # sends in the dead-letter set at the end
    most_calls: int = 0  # the most calls any message's record counts (attempts)
    most_requests: int = 0  # the most requests that carried any one message
    over_budget: list[str] = field(default_factory=list)
    outage_seconds: float = 0.0  # from the first enqueue to the recovery

    @property
    def ok(self) -> bool:
        return not (self.lost or self.wrong or self.unflagged_duplicates or self.over_budget)

    def lines(self) -> list[str]:
        faults = ", ".join(f"{name} {count}" for name, count in sorted(self.faults.items()))
        return [
            f"messages            {self.messages} in {self.seconds:.1f} s",
            f"API requests        {self.requests} (faults injected: {faults or 'none'})",
            f"accepted by Mailtrap {self.accepted} distinct, {self.accepted_total} copies",
            f"final states        sent {self.sent}, failed {self.failed}, "
            f"not final {self.not_final}",
            f"lost                {len(self.lost)}",
            f"wrong statuses      {len(self.wrong)}",
            f"duplicated          {self.duplicated} (flagged {self.flagged_duplicates}, "
            f"unflagged {len(self.unflagged_duplicates)}), "
            f"{self.duplicated * 10_000 / max(self.messages, 1):.1f} per 10,000",
            f"reconciled          {self.reconciled} requests found in Email Logs, "
            f"{self.fallbacks} look-ups fell back",
            f"flagged in status   {self.flagged_total} records with possible_duplicates > 0",
            f"failed but flagged  {self.failed_flagged_accepted} (accepted by Mailtrap; "
            "the record counts the doubt)",
            f"retry budget        {_budget(self.max_retries)}; most calls "
            f"{self.most_calls}, most requests for one message {self.most_requests}, "
            f"over budget {len(self.over_budget)}",
            f"dead letters        {self.dead_letters}",
            f"verdict             {'OK' if self.ok else 'FAILED'}",
        ]


def _budget(max_retries: int | None) -> str:
    return "not checked" if max_retries is None else f"{max_retries + 1} calls a part"


def soak_settings(mailtrap: LocalMailtrap, redis_url: str) -> Settings:
    """Settings for a fast soak: short timeouts and backoffs, many retries."""
    return Settings(
        api_token=mailtrap.token,
        api_url=mailtrap.url,
        bulk_api_url=mailtrap.bulk_url,
        general_api_url=mailtrap.general_url,
        reconcile_settle=SETTLE,
        # The local Mailtrap does not limit its Email Logs; Mailtrap allows 60 a minute.
        email_logs_rate_limit=RateLimit(6000, 60.0),
        broker_url=redis_url,
        connect_timeout=1.0,
        read_timeout=READ_TIMEOUT,
        retry_backoff=0.2,
        retry_backoff_max=2.0,
        max_retries=30,
        reclaim_idle=10.0,
        visibility_timeout=30.0,
        rate_limit=RateLimit(2000, 1.0),
    )


def soak_messages(count: int, run: str) -> list[dict[str, Any]]:
    return [
        {
            "from_email": "Soak <soak@example.com>",
            "to": [f"r{i}@example.com"],
            "subject": f"soak {run} {i}",
            "text": f"message {i}",
        }
        for i in range(count)
    ]


def enqueue_all(messages: Sequence[dict[str, Any]], chunk: int = 1000) -> list[str]:
    """Most messages in bulk, every tenth one alone, as web requests would."""
    ids: list[str] = []
    pending: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if index % 10 == 0:
            ids.extend(mailqueue.enqueue_many(pending))
            pending = []
            ids.append(mailqueue.send_email.delay(message).id)
        else:
            pending.append(message)
        if len(pending) >= chunk:
            ids.extend(mailqueue.enqueue_many(pending))
            pending = []
    ids.extend(mailqueue.enqueue_many(pending))
    return ids


def wait_settled(send_ids: Sequence[str], timeout: float) -> None:
    """Poll the states in pipelined reads until all are final or ``timeout`` passes."""
    client = current().redis
    deadline = time.monotonic() + timeout
    pending = list(send_ids)
    while pending and time.monotonic() < deadline:
        with client.pipeline(transaction=False) as pipe:
            for send_id in pending:
                pipe.hget(Keys().send(send_id), "state")
            states = pipe.execute()
        pending = [
            sid
            for sid, state in zip(pending, states, strict=True)
            if (state or b"").decode() not in FINAL
        ]
        if pending:
            time.sleep(0.25)


def analyse(
    mailtrap: LocalMailtrap,
    messages: Sequence[dict[str, Any]],
    send_ids: Sequence[str],
    report: SoakReport,
) -> SoakReport:
    """Match every status record against what the local Mailtrap accepted."""
    copies: Counter[str] = Counter()
    ids_by_subject: dict[str, set[str]] = defaultdict(set)
    for accepted in list(mailtrap.accepted):
        subject = accepted.payload.get("subject", "")
        copies[subject] += 1
        ids_by_subject[subject].update(accepted.message_ids)
    report.accepted = len(copies)
    report.accepted_total = sum(copies.values())
    stats = mailtrap.stats
    report.requests = stats.requests
    report.faults = stats.faults
    report.statuses = stats.by_status
    report.dead_letters = len(current().outbox.dead_letters(limit=len(send_ids) + 1))
    budget = None if report.max_retries is None else report.max_retries + 1
    for message, send_id in zip(messages, send_ids, strict=True):
        subject = message["subject"]
        seen = copies.get(subject, 0)
        record: Mapping[str, Any] = mailqueue.get_status(send_id) or {}
        calls = int(record.get("attempts", 0))
        requests = stats.by_recipient.get(message["to"][0], 0)
        report.most_calls = max(report.most_calls, calls)
        report.most_requests = max(report.most_requests, requests)
        if budget is not None and (calls > budget or requests > budget * REQUESTS_PER_TRY):
            report.over_budget.append(f"{send_id}: {calls} calls, {requests} requests")
        state = record.get("state")
        flagged = int(record.get("possible_duplicates", 0))
        report.flagged_total += flagged > 0
        report.reconciled += int(record.get("reconciled", 0))
        report.fallbacks += int(record.get("reconcile_fallbacks", 0))
        if state == "sent":
            report.sent += 1
        elif state == "failed":
            report.failed += 1
        else:
            report.not_final += 1
        if seen == 0 and state != "failed":
            report.lost.append(f"{send_id} ({subject!r}): state {state}, never accepted")
        if state == "sent" and seen == 0:
            report.wrong.append(f"{send_id}: sent, but Mailtrap never accepted it")
        if state == "failed" and not (record.get("error") or {}).get("message"):
            report.wrong.append(f"{send_id}: failed without a recorded reason")
        if state == "failed" and seen > 0:
            if flagged:
                # An attempt's answer was lost, then the retries ran out: the
                # record says so, and only Mailtrap's side can settle it.
                report.failed_flagged_accepted += 1
            else:
                error = (record.get("error") or {}).get("message")
                report.wrong.append(f"{send_id}: failed ({error}), but Mailtrap accepted it")
        if state == "sent":
            for recipient, entry in record.get("recipients", {}).items():
                if entry.get("message_id") not in ids_by_subject[subject]:
                    report.wrong.append(
                        f"{send_id}: {recipient} has message id {entry.get('message_id')}, "
                        "which Mailtrap never returned for this message"
                    )
        if seen > 1:
            report.duplicated += 1
            # Every copy beyond the first must have been counted as possible.
            if flagged >= seen - 1:
                report.flagged_duplicates += 1
            else:
                report.unflagged_duplicates.append(
                    f"{send_id}: accepted {seen} times, possible_duplicates {flagged}"
                )
    return report


@contextmanager
def soak_environment(
    fault_rates: Mapping[str, float], seed: int
) -> Iterator[tuple[LocalMailtrap, Settings]]:
    """A private Redis, a faulty local Mailtrap, and settings in force for both."""
    with ExitStack() as stack:
        redis_server = stack.enter_context(RedisServer())
        mailtrap = LocalMailtrap(fault_rates=fault_rates, seed=seed, logs_delay=LOGS_DELAY)
        mailtrap.slow_seconds = SLOW_SECONDS
        stack.enter_context(mailtrap)
        settings = soak_settings(mailtrap, redis_server.url)
        mailqueue.configure(settings)
        yield mailtrap, settings


def run_soak(
    count: int,
    *,
    coalesce: bool = True,
    workers: int = 2,
    concurrency: int = 2,
    fault_rates: Mapping[str, float] = FAULT_RATES,
    seed: int = 1,
    timeout: float = 600.0,
    reconcile: bool = True,
    outage: str | None = None,
    outage_tries: int = 2,
    max_retries: int | None = None,
    settle: float = SETTLE,
) -> SoakReport:
    """Run one soak of ``count`` messages and return what it saw."""
    if outage is not None and outage not in OUTAGES:
        raise ValueError(f"unknown outage {outage!r}; expected one of {', '.join(OUTAGES)}")
    report = SoakReport(messages=count)
    with soak_environment(fault_rates, seed) as (mailtrap, settings):
        settings = settings.replace(coalesce=coalesce, reconcile=reconcile, reconcile_settle=settle)
        if max_retries is not None:
            settings = settings.replace(max_retries=max_retries)
        report.max_retries = settings.max_retries
        mailqueue.configure(settings)
        messages = soak_messages(count, run=str(seed))
        begin_outage(mailtrap, outage, settle)
        with ExitStack() as stack:
            for _ in range(workers):
                stack.enter_context(WorkerProcess(settings, concurrency=concurrency))
            started = time.monotonic()
            send_ids = enqueue_all(messages)
            if outage == "recovering":
                wait_tried(send_ids, outage_tries, timeout)
                mailtrap.fault_rates = dict(fault_rates)
                report.outage_seconds = time.monotonic() - started
            wait_settled(send_ids, timeout)
            report.seconds = time.monotonic() - started
        return analyse(mailtrap, messages, send_ids, report)


def begin_outage(mailtrap: LocalMailtrap, outage: str | None, settle: float = SETTLE) -> None:
    """Make the local Mailtrap (or its Email Logs) fail as ``outage`` says."""
    if outage in ("recovering", "permanent"):
        mailtrap.fault_rates = dict(OUTAGE_RATES)
    elif outage == "logs-down":
        mailtrap.email_logs.failure = 503
    elif outage == "logs-late":
        # Later than both look-ups, whatever the backoff between them.
        mailtrap.email_logs.delay = 20 * settle


def wait_tried(send_ids: Sequence[str], tries: int, timeout: float) -> None:
    """Wait until every send has started at least ``tries`` calls (its record's attempts)."""
    client = current().redis
    deadline = time.monotonic() + timeout
    while True:
        with client.pipeline(transaction=False) as pipe:
            for send_id in send_ids:
                pipe.hget(Keys().send(send_id), "attempts")
            counts = [int(value or 0) for value in pipe.execute()]
        if min(counts, default=tries) >= tries:
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"the outage did not reach {tries} tries of every send")
        time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="500 messages")
    parser.add_argument("--no-coalesce", action="store_true", help="one API call per message")
    parser.add_argument(
        "--no-reconcile", action="store_true", help="send again without looking in Email Logs"
    )
    parser.add_argument("--outage", choices=OUTAGES, help="add an outage (see above)")
    parser.add_argument(
        "--outage-tries", type=int, default=2, help="tries every message fails (recovering)"
    )
    parser.add_argument("--max-retries", type=int, help="MAILQUEUE_MAX_RETRIES (default 30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    count = 500 if args.quick else args.messages
    report = run_soak(
        count,
        coalesce=not args.no_coalesce,
        seed=args.seed,
        timeout=args.timeout,
        reconcile=not args.no_reconcile,
        outage=args.outage,
        outage_tries=args.outage_tries,
        max_retries=args.max_retries,
    )
    print("\n".join(report.lines()))
    if report.outage_seconds:
        print(f"outage              {report.outage_seconds:.1f} s, then recovery")
    for title, problems in (
        ("lost", report.lost),
        ("wrong", report.wrong),
        ("unflagged duplicates", report.unflagged_duplicates),
        ("over budget", report.over_budget),
    ):
        for problem in problems[:20]:
            print(f"  {title}: {problem}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
