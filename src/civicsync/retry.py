"""Retry with exponential backoff, for transient errors only."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from civicsync.errors import RetriesExhaustedError as RetriesExhaustedError  # re-exported: it lives in the one tree
from civicsync.errors import TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


class Retry(Protocol):
    """A backoff policy: the config's ``Retry`` model (civicsync.config.models) is one."""

    @property
    def attempts(self) -> int: ...
    @property
    def initial_delay(self) -> float: ...
    @property
    def max_delay(self) -> float: ...
    @property
    def multiplier(self) -> float: ...


def backoff_delays(retry: Retry) -> list[float]:
    """The pauses between attempts: initial, ×multiplier each time, capped at max_delay."""
    return [min(retry.initial_delay * retry.multiplier**i, retry.max_delay) for i in range(retry.attempts - 1)]


def with_retry(
    what: str,
    attempt: Callable[[int], T],
    retry: Retry,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[T, int]:
    """Call ``attempt(n)`` until it succeeds; retry only TransientError. Returns (result, attempts)."""
    delays = backoff_delays(retry)
    for n in range(1, retry.attempts + 1):
        try:
            return attempt(n), n
        except TransientError as exc:
            if n == retry.attempts:
                raise RetriesExhaustedError(what, n, exc) from exc
            delay = delays[n - 1]
            log.warning("%s: attempt %d of %d failed (%s); retrying in %.1fs", what, n, retry.attempts, exc, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
