"""The worker's CPU for one 500-recipient campaign call, without I/O.

Run: ``python tests/benchmarks/bench_campaign_call.py [--quick] [--calls N]``.

What a worker computes for each call of a merge-data campaign, stage by
stage: tag the 500 requests for Email Logs, encode the body, read Mailtrap's
answer, and build the status writes for the 500 recipients (queued on a
Redis pipeline that is never sent, so no server is needed). The baseline,
measured in the same run, is encoding the body alone: the least any worker
spends on such a call. Process CPU time, best of five rounds.

For a count that does not depend on the machine's load, run it under
callgrind with ``--calls 0`` and ``--calls 10`` and divide the difference
of the instruction counts by 10 (see README.md).
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from collections.abc import Callable

import redis

from mailqueue.core.calltag import Tag, tag_call
from mailqueue.core.payload import ApiCall, build_payload
from mailqueue.core.responses import parse_response
from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult, StatusStore
from mailqueue.store.stores import Stores

RECIPIENTS = 500
SEND_ID = "0123456789abcdef0123456789abcdef"


def campaign_call() -> ApiCall:
    addresses = [f"reader{i}@example.com" for i in range(RECIPIENTS)]
    message = {
        "from_email": "News <news@example.com>",
        "to": addresses,
        "template_id": "7f1b6a36-0000-4000-8000-00000000c0de",
        "merge_global_data": {"issue": "42"},
        "merge_data": {address: {"n": str(i)} for i, address in enumerate(addresses)},
    }
    (call,) = build_payload(message)
    return call


def answer_for(call: ApiCall) -> bytes:
    rng = random.Random(1)
    return json.dumps(
        {
            "success": True,
            "responses": [
                {"success": True, "message_ids": [str(uuid.UUID(int=rng.getrandbits(128)))]}
                for _ in call.recipients
            ],
        }
    ).encode()


def one_call(call: ApiCall, answer: bytes, store: StatusStore) -> None:
    tags = [Tag(SEND_ID, 3, i, 0) for i in range(len(call.recipients))]
    tagged, _ = tag_call(call, tags)
    json.dumps(tagged.json).encode("ascii")
    results = parse_response(tagged, 200, answer, sandbox=False)
    recipients: dict[str, str | None] = {}
    for result in results:
        recipients.update(result.message_ids)
    flat = [address for request in call.recipients for address in request]
    ref = PartRef(SEND_ID, 3, "g" * 32, "campaign", len(flat), None)
    with store.redis.pipeline(transaction=True) as pipe:
        store.record(pipe, ref, PartResult("sent", recipients), flat)


def best_ms(work: Callable[[], object], calls: int) -> float:
    """Best of five rounds of ``calls`` calls: CPU milliseconds per call."""
    work()
    best = float("inf")
    for _ in range(5):
        began = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, (time.process_time() - began) / calls)
    return best * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls a round")
    parser.add_argument("--calls", type=int, help="only run this many calls, timing nothing")
    options = parser.parse_args()
    call = campaign_call()
    answer = answer_for(call)
    # An unconnected client: commands queue on the pipeline and are never sent.
    store = Stores.over(redis.Redis(), Settings(api_token="local")).store
    if options.calls is not None:
        for _ in range(options.calls):
            one_call(call, answer, store)
        return
    calls = 5 if options.quick else 20
    tags = [Tag(SEND_ID, 3, i, 0) for i in range(RECIPIENTS)]
    tagged, _ = tag_call(call, tags)
    results = parse_response(tagged, 200, answer, sandbox=False)
    recipients: dict[str, str | None] = {}
    for result in results:
        recipients.update(result.message_ids)
    flat = [address for request in call.recipients for address in request]

    def record() -> None:
        with store.redis.pipeline(transaction=True) as pipe:
            store.record(
                pipe,
                PartRef(SEND_ID, 3, "g" * 32, "c", RECIPIENTS),
                PartResult("sent", recipients),
                flat,
            )

    rows = [
        ("baseline: encode the tagged body (json.dumps)", lambda: json.dumps(tagged.json)),
        ("tag the 500 requests (tag_call)", lambda: tag_call(call, tags)),
        (
            "read the answer (parse_response)",
            lambda: parse_response(tagged, 200, answer, sandbox=False),
        ),
        ("build the 500 status writes (StatusStore.record)", record),
        ("the whole call", lambda: one_call(call, answer, store)),
    ]
    print(f"one merge-data campaign call of {RECIPIENTS} requests; CPU ms per call, best of 5")
    for label, work in rows:
        print(f"    {label:<50} {best_ms(work, calls):7.2f} ms")


if __name__ == "__main__":
    main()
