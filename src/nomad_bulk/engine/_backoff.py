"""Polling delays: exponential backoff with jitter and a cap, informed by experience.

The one formula (stamina's): ``delay_n = min(cap, step * factor**(n-1) + U(0, jitter))``.
Before the first poll the engine waits for the duration it expects from the
uploads it has already seen (an exponentially weighted mean per kind of
process), so a 2-second processing is polled at about 2 s and then in short
steps, not at 0.5, 1.5 and 3.5 s. All durations are float seconds.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["DurationEstimator", "PollPolicy", "poll_delays"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """How patiently the engine polls NOMAD's processing.

    ``initial`` is the first delay when nothing is known yet, ``max_wait`` the
    cap of one delay, ``factor`` the growth per poll, ``jitter`` the largest
    random addition and ``min_step`` the smallest delay ever used.
    """

    initial: float = 0.5
    max_wait: float = 15.0
    factor: float = 1.5
    jitter: float = 0.1
    min_step: float = 0.01

    def __post_init__(self) -> None:
        if min(self.initial, self.max_wait, self.min_step) <= 0 or self.factor < 1:
            raise ValueError("poll delays must be positive and the factor at least 1")
        if self.jitter < 0:
            raise ValueError("poll jitter must be >= 0")


def poll_delays(
    policy: PollPolicy, *, expected: float | None = None, rng: random.Random | None = None
) -> Iterator[float]:
    """Yield the delays before each poll of one process.

    Without an ``expected`` duration the first delay is ``policy.initial``.
    With one, the first delay is 90 % of it and the following steps start at a
    twentieth of it, so the end of a process is seen soon after it happens.
    """
    rand = rng or random
    if expected is None:
        first = policy.initial
        step = policy.initial
    else:
        first = max(policy.min_step, 0.9 * expected)
        step = min(policy.initial, max(policy.min_step, expected / 20))
    yield min(policy.max_wait, first)
    n = 0
    while True:
        base = step * policy.factor**n
        # Jitter spreads polls of uploads that started together; a tenth of the
        # delay is enough for that and keeps short steps short.
        jitter = rand.uniform(0, min(policy.jitter, base / 10))
        yield max(policy.min_step, min(policy.max_wait, base + jitter))
        n += 1


class DurationEstimator:
    """Exponentially weighted mean duration of each kind of server process."""

    __slots__ = ("_alpha", "_means")

    def __init__(self, *, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self._means: dict[str, float] = {}

    def expected(self, kind: str, units: int = 1) -> float | None:
        """Expected seconds for a process of ``kind`` over ``units`` entries, if known."""
        mean = self._means.get(kind)
        return None if mean is None else mean * max(1, units)

    def observe(self, kind: str, seconds: float, units: int = 1) -> None:
        """Record that a process of ``kind`` over ``units`` entries took ``seconds``."""
        value = max(0.0, seconds) / max(1, units)
        mean = self._means.get(kind)
        self._means[kind] = value if mean is None else mean + self._alpha * (value - mean)
