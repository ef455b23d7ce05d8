"""The parts the tests and the demo run, used in a ``with`` block: started for it, stopped after.

The local Mailtrap, a private Redis, a Sentinel group and a worker process
share this one way of being used.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["Running"]

_R = TypeVar("_R", bound="Running")


class Running:
    """A context manager that starts its part for the block and stops it after."""

    def start(self: _R) -> _R:
        raise NotImplementedError

    def stop(self) -> object:
        """Stop the part; what it returns (an exit status, say) is the part's own."""
        raise NotImplementedError

    def __enter__(self: _R) -> _R:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
