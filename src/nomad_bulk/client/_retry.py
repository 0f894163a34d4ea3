"""Retry policy: the one place that states the backoff formula.

``wait(n) = min(max_wait, initial_wait * 2 ** (n - 1) + U(0, jitter))`` for the
n-th retry, bounded in attempts and in total time. A server-given delay
(``Retry-After``) replaces the computed one. All durations are float seconds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["RetryPolicy", "backoff_delay", "parse_retry_after"]


def backoff_delay(
    attempt: int,
    *,
    initial: float,
    cap: float,
    jitter: float,
    rng: random.Random | None = None,
) -> float:
    """Delay before the ``attempt``-th retry (1-based): exponential, jittered, capped."""
    n = max(1, attempt)
    # Exponent clamped so that huge attempt numbers cannot overflow a float.
    base = initial * (2.0 ** min(n - 1, 60))
    noise = (rng or random).uniform(0.0, jitter) if jitter > 0 else 0.0
    return max(0.0, min(cap, base + noise))


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    reference = time.time() if now is None else now
    return max(0.0, moment.timestamp() - reference)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long the client retries a failed idempotent request.

    ``max_attempts`` counts every try including the first; ``max_time`` bounds
    the time from the first try until a retry would start. ``jitter`` is the
    upper bound of the uniform noise added to each computed wait.
    """

    max_attempts: int = 7
    max_time: float = 300.0
    initial_wait: float = 0.5
    max_wait: float = 30.0
    jitter: float = 0.5
    #: Cap for a server's ``Retry-After``; longer requests end the retries.
    max_retry_after: float = 300.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        for name in ("max_time", "initial_wait", "max_wait", "jitter", "max_retry_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """Build the policy from ``Settings.max_retries`` and the ``retry_*`` fields."""
        return cls(
            max_attempts=max(1, settings.max_retries + 1),
            max_time=settings.retry_max_time,
            initial_wait=settings.retry_initial_wait,
            max_wait=settings.retry_max_wait,
            jitter=settings.retry_initial_wait,
        )

    @classmethod
    def no_retries(cls) -> RetryPolicy:
        """A policy that makes exactly one attempt."""
        return cls(max_attempts=1, max_time=0.0)

    def delay(
        self, retry: int, *, retry_after: float | None = None, rng: random.Random | None = None
    ) -> float:
        """Delay before the ``retry``-th retry; a server-given ``retry_after`` wins."""
        if retry_after is not None:
            return retry_after
        return backoff_delay(
            retry, initial=self.initial_wait, cap=self.max_wait, jitter=self.jitter, rng=rng
        )

    def next_delay(
        self,
        attempts_made: int,
        elapsed: float,
        *,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Delay before the next try, or None when attempts or time are used up."""
        if attempts_made >= self.max_attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after:
            return None
        wait = self.delay(attempts_made, retry_after=retry_after, rng=rng)
        if elapsed + wait > self.max_time:
            return None
        return wait
