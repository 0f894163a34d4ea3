"""The engine's limits: request rate, upload slots, spool bytes, adaptive pressure.

Three limits are separate on purpose (NOMAD's own constraints differ in kind):

- concurrent transfers: an :class:`anyio.CapacityLimiter` (bandwidth);
- unpublished uploads held on the server: :class:`UploadSlots` (NOMAD's
  per-user limit, freed only when a publish or a delete *completes*);
- a global request rate: :class:`RateLimiter`, a token bucket the client awaits
  before every HTTP attempt (its ``request_gate``).

:class:`AdaptiveController` watches every answer (the client's ``on_response``
hook) and halves the rate and the transfer concurrency when the server asks to
slow down (429, Retry-After) or when 5xx answers and transport failures come in
a burst, then raises them step by step while the server answers well (AIMD, as
TCP does). Isolated failures among good answers are left to the client's retries.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import anyio

__all__ = [
    "AdaptiveController",
    "ByteBudget",
    "RateLimiter",
    "SlotsExhaustedError",
    "UploadSlots",
]


class RateLimiter:
    """A token bucket: at most ``rate`` calls per second, bursts up to ``burst``.

    Awaiting the limiter reserves the next free instant (GCRA), so waiting
    callers are served in order without a lock. ``rate=None`` means unlimited.
    The rate may be changed while running (the adaptive controller does).
    """

    __slots__ = ("_burst", "_clock", "_next", "_rate", "waited")

    def __init__(
        self,
        rate: float | None,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._next = -math.inf
        #: Total seconds callers spent waiting (for benchmarks and reports).
        self.waited = 0.0

    @property
    def rate(self) -> float | None:
        """Requests per second, or ``None`` for unlimited."""
        return self._rate

    @rate.setter
    def rate(self, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ValueError("rate must be positive or None")
        self._rate = value

    def reserve(self) -> float:
        """Reserve the next slot and return how long the caller must wait."""
        if self._rate is None:
            return 0.0
        now = self._clock()
        interval = 1.0 / self._rate
        # Up to `burst` calls may go at once after a quiet period.
        start = max(self._next, now - (self._burst - 1) * interval)
        self._next = start + interval
        return max(0.0, start - now)

    async def __call__(self) -> None:
        """Wait until this caller may send a request."""
        delay = self.reserve()
        if delay > 0:
            self.waited += delay
            await anyio.sleep(delay)


class SlotsExhaustedError(Exception):
    """No upload slot is free and none can become free during this run."""


class UploadSlots:
    """Unpublished uploads this run may still create on the server.

    ``free`` starts at NOMAD's limit minus the uploads the user already holds.
    A slot taken for a new upload is either given back (:meth:`release`, after
    a publish or delete completed) or kept for good (:meth:`keep`, an upload
    left unpublished). Uploads of earlier runs that this run will publish or
    delete are *pending releasers*: when they finish they add a slot
    (:meth:`add`) or not (:meth:`drop_releaser`). :meth:`acquire` waits while a
    slot may still come free and raises :class:`SlotsExhaustedError` once none
    can.
    """

    __slots__ = ("_changed", "_exhausted", "_free", "_kept", "_releasers", "_taken", "unlimited")

    def __init__(self, free: int | None, *, releasers: int = 0) -> None:
        #: True when the user is exempt from the limit (NOMAD admins).
        self.unlimited = free is None
        self._free = max(0, free) if free is not None else 0
        self._taken = 0
        self._kept = 0
        self._releasers = releasers
        self._exhausted = False
        self._changed = anyio.Event()

    @property
    def free(self) -> int | None:
        """Slots free right now (``None`` when unlimited)."""
        return None if self.unlimited else self._free

    @property
    def exhausted(self) -> bool:
        """True once no slot can become free any more during this run."""
        if self.unlimited:
            return False
        if self._free > 0:
            return False
        in_flight = self._taken - self._kept
        return self._exhausted or (in_flight <= 0 and self._releasers <= 0)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def acquire(self) -> None:
        """Take a slot, waiting for one to be released; raise if none ever will."""
        if self.unlimited:
            return
        while True:
            if self._free > 0:
                self._free -= 1
                self._taken += 1
                return
            if self.exhausted:
                raise SlotsExhaustedError
            await self._changed.wait()

    def release(self) -> None:
        """Give back a slot taken with :meth:`acquire` (its upload was published or deleted)."""
        if self.unlimited:
            return
        self._taken -= 1
        self._free += 1
        self._notify()

    def keep(self) -> None:
        """A slot taken with :meth:`acquire` stays held (the upload stays unpublished)."""
        if self.unlimited:
            return
        self._kept += 1
        self._notify()

    def add(self, *, releaser: bool = True) -> None:
        """An upload held before this run was published or deleted: one more slot."""
        if self.unlimited:
            return
        if releaser:
            self._releasers = max(0, self._releasers - 1)
        self._free += 1
        self._notify()

    def drop_releaser(self) -> None:
        """An upload held before this run will stay held: it frees nothing."""
        if self.unlimited:
            return
        self._releasers = max(0, self._releasers - 1)
        self._notify()

    def shrink(self) -> None:
        """NOMAD refused a create with its limit error: someone else took a slot."""
        if self.unlimited:
            return
        # The slot we believed free is held elsewhere; count ours as given back and
        # the other one as kept for good.
        self._taken -= 1
        self._notify()


class ByteBudget:
    """Bounds the bytes of packed zips waiting in the spool directory."""

    __slots__ = ("_changed", "_total", "_used")

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("the spool budget must be at least one byte")
        self._total = total
        self._used = 0
        self._changed = anyio.Event()

    @property
    def used(self) -> int:
        """Bytes reserved right now."""
        return self._used

    async def acquire(self, size: int) -> int:
        """Reserve ``size`` bytes (at most the whole budget) and return what was reserved."""
        want = min(max(size, 0), self._total)
        while self._used + want > self._total and self._used > 0:
            await self._changed.wait()
        self._used += want
        return want

    def release(self, size: int) -> None:
        """Return bytes reserved with :meth:`acquire`."""
        self._used = max(0, self._used - size)
        self._changed.set()
        self._changed = anyio.Event()


class _ResponseLike(Protocol):
    @property
    def status(self) -> int | None: ...


class AdaptiveController:
    """AIMD control of the request rate and transfer concurrency from server answers.

    Two signals cut the rate and the transfer concurrency in half (at most once
    per ``window`` seconds): an explicit request to slow down (a 429, or any
    answer carrying ``Retry-After``), and a *burst*: ``burst_size`` failures in a
    row (5xx or no answer at all) with no good answer between them. Isolated
    failures among good answers are the client's retries' business and do not
    slow the run: a server that fails one request in five at random is not
    overloaded, and halving on every such failure would drive the rate to the
    floor. Every ``recover_after`` good answers (counted since the last change,
    not necessarily in a row) the rate grows by a tenth of its configured value
    and one transfer slot comes back, up to the configured values. With an
    unlimited configured rate, the first cut sets a rate of half the rate
    observed over the window, growth is by a quarter, and once it reaches four
    times that rate the limit is lifted again.
    """

    __slots__ = (
        "_ceiling",
        "_clock",
        "_good",
        "_last_cut",
        "_max_rate",
        "_max_transfers",
        "_min_rate",
        "_notify",
        "_rate",
        "_recent",
        "_run",
        "_transfers",
        "burst_size",
        "recover_after",
        "window",
    )

    def __init__(
        self,
        rate: RateLimiter,
        transfers: anyio.CapacityLimiter,
        *,
        window: float = 5.0,
        burst_size: int = 4,
        recover_after: int = 20,
        min_rate: float = 0.5,
        on_change: Callable[[str, float | None, int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rate = rate
        self._transfers = transfers
        self._max_rate = rate.rate
        self._max_transfers = int(transfers.total_tokens)
        self._min_rate = min_rate
        self.window = window
        self.burst_size = burst_size
        self.recover_after = recover_after
        self._notify = on_change
        self._clock = clock
        self._recent: deque[float] = deque()
        self._run = 0
        self._good = 0
        self._last_cut = -math.inf
        self._ceiling = math.inf

    def on_response(self, info: _ResponseLike) -> None:
        """Feed one answer (or transport failure, ``status is None``) to the controller."""
        now = self._clock()
        self._recent.append(now)
        while self._recent and self._recent[0] < now - self.window:
            self._recent.popleft()
        status = info.status
        # No answer at all, or a 5xx: the server (or a proxy before it) is struggling.
        failed = status is None or status >= 500
        asked = status == 429 or getattr(info, "retry_after", None) is not None
        if not (failed or asked):
            self._run = 0
            self._good += 1
            if self._good >= self.recover_after:
                self._good = 0
                self._grow()
            return
        if failed:
            self._run += 1
        if (asked or self._run >= self.burst_size) and now - self._last_cut >= self.window:
            self._cut(now, status)

    def _cut(self, now: float, status: int | None) -> None:
        self._last_cut = now
        self._run = 0
        self._good = 0
        current = self._rate.rate
        if current is None:
            # The rate seen recently, over the span actually observed (a run that
            # started a moment ago has not filled the window yet).
            span = max(now - self._recent[0], 1.0 / max(1, len(self._recent)), 0.1)
            observed = len(self._recent) / span
            current = max(self._min_rate * 2, observed)
            self._ceiling = 4 * current
        new_rate = max(self._min_rate, current / 2)
        self._rate.rate = new_rate
        tokens = int(self._transfers.total_tokens)
        self._transfers.total_tokens = max(1, tokens // 2)
        reason = f"server pressure (HTTP {status})" if status else "server pressure (no answer)"
        self._changed(reason)

    def _grow(self) -> None:
        changed = False
        current = self._rate.rate
        if current is not None and current != self._max_rate:
            if self._max_rate is None:
                grown = current * 1.25
                # After enough recovery an unlimited configuration is unlimited again.
                self._rate.rate = None if grown >= self._ceiling else grown
            else:
                grown = min(self._max_rate, current + max(self._max_rate / 10, 0.1))
                self._rate.rate = grown
            changed = True
        tokens = int(self._transfers.total_tokens)
        if tokens < self._max_transfers:
            self._transfers.total_tokens = tokens + 1
            changed = True
        if changed:
            self._changed("server recovered")

    def _changed(self, reason: str) -> None:
        if self._notify is not None:
            self._notify(reason, self._rate.rate, int(self._transfers.total_tokens))
