"""Polling delays: a fixed fraction of the time already waited, informed by experience.

The one formula: after the first poll, ``delay = clamp(fraction * elapsed, floor, cap)``
plus a small jitter, where ``elapsed`` is the time since the wait began. The
poll times then grow geometrically by ``1 + fraction``, so the poll that sees a
process end comes at most about ``fraction`` of its duration (plus one round
trip) after the end, whatever the duration: 10 % by default, where a delay growing
1.5-fold per poll overshoots by up to 50 %. The first poll comes at 90 % of the duration
the engine expects from the uploads it has already seen (an exponentially
weighted mean per kind of process), or after ``policy.initial`` when nothing is
known; near the expected end the steps are finer still. All durations are
float seconds.

The price is more polls while nothing is known: about
``1 + ln(duration / initial) / ln(1 + fraction)`` for one process until the cap
``max_wait`` takes over (one poll per 15 s by default, from 150 s on): 8 polls
for 1 s, 32 for 10 s, 50 for a minute, 90 for ten minutes, against 2, 6, 11 and
47 with a growth of 1.5 per poll. Only the processes that start before the
first of their kind has ended pay this; once a duration is known, a process
of up to a minute takes 2-8 polls (longer ones one more per ``max_wait``),
about as many as with the growing delay. The engine's global
request rate (10 requests per second by default) bounds the sum: when the
uploads of a first wave poll at once, the rate gate delays their polls (a
little more overshoot) rather than sending more requests than allowed.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["DurationEstimator", "PollPolicy", "poll_delays"]

#: Near the expected end (up to this multiple of it) the steps are finer.
_NEAR_END = 1.25
#: Share of ``policy.fraction`` used near the expected end.
_NEAR_SHARE = 0.3


@dataclass(frozen=True, slots=True, kw_only=True)
class PollPolicy:
    """How patiently the engine polls NOMAD's processing.

    ``initial`` is the first delay when nothing is known yet, ``max_wait`` the
    cap of one delay, ``fraction`` the delay as a share of the time already
    waited (the bound on the relative overshoot), ``jitter`` the largest random
    addition and ``min_step`` the smallest delay ever used. The floor of a delay
    while nothing is known is ``max(min_step, initial / 10)``.
    """

    initial: float = 0.5
    max_wait: float = 15.0
    fraction: float = 0.1
    jitter: float = 0.1
    min_step: float = 0.01

    def __post_init__(self) -> None:
        if min(self.initial, self.max_wait, self.min_step, self.fraction) <= 0:
            raise ValueError("poll delays and the poll fraction must be positive")
        if self.jitter < 0:
            raise ValueError("poll jitter must be >= 0")

    @property
    def floor(self) -> float:
        """The shortest delay after the first poll when nothing is known."""
        return max(self.min_step, self.initial / 10)


def poll_delays(
    policy: PollPolicy,
    *,
    expected: float | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[float]:
    """Yield the delays before each poll of one process.

    The wait starts when the first delay is asked for; each later delay is
    ``policy.fraction`` of the time elapsed since then (read from ``clock``
    when the delay is asked for), at least the floor and at most
    ``policy.max_wait``. Without an ``expected`` duration the first delay is
    ``policy.initial``; with one it is 90 % of it, and until 1.25 times it has
    passed the steps are a third as long (down to ``min_step``), so the end of
    a process that takes as long as expected is seen within a few per cent.
    """
    rand = rng or random
    start = clock()
    cap = policy.max_wait
    if expected is None:
        first, near_until = policy.initial, 0.0
    else:
        first, near_until = max(policy.min_step, 0.9 * expected), _NEAR_END * expected
    yield min(cap, first)
    while True:
        elapsed = max(0.0, clock() - start)
        if elapsed < first - policy.min_step:
            # The cap shortened the first delay: keep aiming at the first poll's time.
            yield min(cap, first - elapsed)
            continue
        if elapsed < near_until:
            base = max(policy.min_step, _NEAR_SHARE * policy.fraction * elapsed)
        else:
            base = max(policy.floor, policy.fraction * elapsed)
        base = min(cap, base)
        # Jitter spreads polls of uploads that started together; a tenth of the
        # delay is enough for that and keeps the overshoot bound.
        jitter = rand.uniform(0, min(policy.jitter, base / 10))
        yield min(cap, base + jitter)


class DurationEstimator:
    """Exponentially weighted mean duration and size of each kind of server process.

    ``expected(kind, units)`` is the mean duration, scaled down for a process
    over fewer units (entries) than the mean: ``mean_seconds * min(1, units /
    mean_units)``. When durations grow affinely with the entries (a fixed part
    plus a part per entry) this never overestimates, for any size: a large
    upload after small ones is first polled after the small ones' duration, a
    small upload after large ones early; the fraction rule of
    :func:`poll_delays` finds the end from there.
    """

    __slots__ = ("_alpha", "_means")

    def __init__(self, *, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self._means: dict[str, tuple[float, float]] = {}

    def expected(self, kind: str, units: int = 1) -> float | None:
        """Expected seconds for a process of ``kind`` over ``units`` entries, if known."""
        mean = self._means.get(kind)
        if mean is None:
            return None
        seconds, mean_units = mean
        return seconds * min(1.0, max(1, units) / mean_units)

    def observe(self, kind: str, seconds: float, units: int = 1) -> None:
        """Record that a process of ``kind`` over ``units`` entries took ``seconds``."""
        value, size = max(0.0, seconds), float(max(1, units))
        mean = self._means.get(kind)
        if mean is None:
            self._means[kind] = (value, size)
            return
        a = self._alpha
        self._means[kind] = (mean[0] + a * (value - mean[0]), mean[1] + a * (size - mean[1]))
