"""A 200,000-recipient campaign paused, resumed and cancelled while a worker sends it.

    .venv/bin/python tests/benchmarks/bench_campaign_steering.py [--rows N] [--rate CALLS/1s]

Queues a CSV of N rows (default 200,000) as one batch send named ``steer``
(``mailqueue campaign`` does the same), starts one worker (``-c 2``) whose
rate limit keeps the campaign going for a while (default 10 calls of 500 a
second), then: pauses it once some recipients went out, counts what the local
Mailtrap accepted two seconds after the pause and again three seconds later
(they must match), checks the campaign's counts; resumes it, cancels it once
more went out, waits until the send is final and checks that the campaign's
counts add up exactly to what the stand-in accepted plus what was cancelled,
with no recipient accepted twice. Prints the figures; exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_campaign_scale import TEMPLATE, write_csv
from harness import machine, stack

import mailqueue
from mailqueue.client import default
from mailqueue.produce.campaign_file import queue_campaign_file
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.polling import wait_for
from mailqueue.testing.worker import WorkerProcess

PAUSE_HOLDS_WITHIN = 2.0  # the contract: a pause holds fleet-wide within 2 s


def accepted(mailtrap: LocalMailtrap) -> list[str]:
    return [r for message in list(mailtrap.accepted) for r in message.recipients]


def final_state_of(send_id: str) -> str | None:
    state = default().store.state(send_id)
    return state if state in ("cancelled", "partially_sent", "sent") else None


def counts() -> dict[str, int]:
    record = mailqueue.get_campaign("steer")
    assert record is not None
    return record["counts"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--rate", default="10/1s", help="the worker's rate limit (calls)")
    args = parser.parse_args()
    rows = args.rows
    step = max(rows // 10, 1)
    checks: list[tuple[str, bool]] = []
    print(f"{machine()}; {rows:,} recipients, one worker -c 2, rate limit {args.rate}")
    with tempfile.TemporaryDirectory() as folder, stack(latency=0.0) as st:
        settings = st.settings(rate_limit=args.rate, bulk_api_url=st.mailtrap.bulk_url)
        path = Path(folder) / "list.csv"
        write_csv(path, rows)
        started = time.perf_counter()
        send = queue_campaign_file(
            default().producer, str(path), TEMPLATE, from_email="news@example.com",
            routing={"stream": "bulk"}, campaign="steer",
        )  # fmt: skip
        print(f"queued {send.recipients:,} recipients in {send.parts} parts "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        mailtrap = st.mailtrap
        with WorkerProcess(settings, concurrency=2):
            wait_for(lambda: len(accepted(mailtrap)) >= step, 120, "the campaign started")
            paused_at = time.perf_counter()
            mailqueue.pause_campaign("steer")
            time.sleep(PAUSE_HOLDS_WITHIN)
            held = len(accepted(mailtrap))
            time.sleep(3.0)
            after = len(accepted(mailtrap))
            print(f"paused: {held:,} accepted {PAUSE_HOLDS_WITHIN:.0f} s after the pause, "
                  f"{after:,} three seconds later")  # fmt: skip
            checks.append(("nothing reaches the stand-in 2 s after a pause", after == held))
            expected = {"sent": held, "waiting": rows - held}
            wait_for(lambda: counts() == expected, 30, f"paused counts {expected}")
            checks.append(("paused counts: sent + waiting", counts() == expected))

            mailqueue.resume_campaign("steer")
            wait_for(lambda: len(accepted(mailtrap)) >= held + step, 120, "resumed")
            mailqueue.cancel_campaign("steer")
            cancelled_at = time.perf_counter()
            final_state = wait_for(lambda: final_state_of(send.send_id), 300, "the send final")
            took = time.perf_counter() - cancelled_at
        sent = accepted(mailtrap)
        twice = [address for address, n in Counter(sent).items() if n > 1]
        record = mailqueue.get_campaign("steer")
        assert record is not None
        ended = record["counts"]
        print(f"cancelled: the send ended {final_state} {took:.1f} s after the cancel "
              f"({time.perf_counter() - paused_at:.0f} s after the pause)")  # fmt: skip
        print(f"stand-in accepted {len(sent):,} recipients ({len(twice)} twice); "
              f"campaign {record['state']}: {ended}")  # fmt: skip
        checks.append(("no recipient accepted twice", not twice))
        checks.append(("sent == accepted by the stand-in", ended.get("sent") == len(sent)))
        checks.append(
            ("sent + cancelled == recipients",
             ended.get("sent", 0) + ended.get("cancelled", 0) == rows
             and ended.get("waiting", 0) == 0),
        )  # fmt: skip
        checks.append(("campaign state cancelled", record["state"] == "cancelled"))
    for label, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {label}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
