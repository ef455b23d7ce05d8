"""Waiting for a state with a deadline, as the tests and benchmarks do: never a fixed sleep."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["wait_for"]

T = TypeVar("T")


def wait_for(what: Callable[[], T], timeout: float, describe: str, interval: float = 0.05) -> T:
    """Call ``what`` until it returns something true and return that; at ``timeout``, fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout} s: {describe}")
