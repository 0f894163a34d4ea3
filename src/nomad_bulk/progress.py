"""Progress observers: tqdm bars for terminals and notebooks, throttled log lines for batch logs.

Both subscribe to the engine's events (:mod:`nomad_bulk.engine.events`); the
engine itself never imports tqdm. Observers run on the event loop's thread and
only count and render.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from .engine.events import (
    BytesSent,
    Event,
    GroupFailed,
    Notice,
    PlanReady,
    RunFinished,
    Stage,
    StageChanged,
    Throttled,
)
from .engine.options import format_size

__all__ = ["LogProgress", "ProgressState", "TqdmProgress"]

#: Stages shown as counts while work is under way.
_ACTIVE = (
    Stage.RECONCILING,
    Stage.PACKING,
    Stage.WAITING,
    Stage.UPLOADING,
    Stage.PROCESSING,
    Stage.VERIFYING,
    Stage.EDITING,
    Stage.PUBLISHING,
    Stage.DELETING,
)


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel."""
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    get = getattr(shell, "get_ipython", None)
    instance = get() if callable(get) else None
    return instance is not None and hasattr(instance, "kernel")


def _tqdm() -> Any:
    # Imported when a bar is drawn, so that importing this module stays cheap.
    from tqdm.auto import tqdm

    return tqdm


class ProgressState:
    """Counts kept from events: bytes sent, calculations per stage, finished and failed."""

    def __init__(self) -> None:
        self.items_total = 0
        self.bytes_total = 0
        self.bytes_sent = 0
        self.items_done = 0
        self.items_failed = 0
        self.items_deferred = 0
        self._sent: dict[str, int] = {}
        self._where: dict[str, Stage] = {}
        self._sizes: dict[str, int] = {}
        self._planned: dict[str, int] = {}

    def update(self, event: Event) -> int:
        """Apply one event; return the bytes it added to :attr:`bytes_sent`."""
        if isinstance(event, PlanReady):
            self.items_total = event.plan.items_to_run
            self.bytes_total = event.plan.bytes_to_send
        elif isinstance(event, BytesSent):
            if event.group not in self._sent and event.group in self._planned:
                # The plan counted an upper bound of the zip; now its size is known.
                self.bytes_total += event.total - self._planned.pop(event.group)
            delta = max(0, event.sent - self._sent.get(event.group, 0))
            self._sent[event.group] = event.sent
            self.bytes_sent += delta
            return delta
        elif isinstance(event, StageChanged):
            self._sizes[event.group] = len(event.items)
            if event.stage is Stage.PACKING:
                self._planned[event.group] = event.size
            if event.stage is Stage.DONE:
                self._where.pop(event.group, None)
                self.items_done += len(event.items)
            elif event.stage is Stage.DEFERRED:
                self._where.pop(event.group, None)
                self.items_deferred += len(event.items)
            elif event.stage is not Stage.DELETING:
                self._where[event.group] = event.stage
        elif isinstance(event, GroupFailed):
            self._where.pop(event.group, None)
            self.items_failed += len(event.items)
        return 0

    def stage_counts(self) -> dict[Stage, int]:
        """Calculations currently in each active stage."""
        counts: Counter[Stage] = Counter()
        for group, stage in self._where.items():
            counts[stage] += self._sizes.get(group, 1)
        return {stage: counts[stage] for stage in _ACTIVE if counts[stage]}

    def line(self) -> str:
        """One line: finished, failed, bytes, and what is in flight."""
        finished = self.items_done + self.items_failed
        total = f"/{self.items_total}" if self.items_total else ""
        parts = [f"{finished}{total} calculations finished"]
        if self.items_failed:
            parts.append(f"{self.items_failed} failed")
        parts.append(f"{format_size(self.bytes_sent)} sent")
        active = ", ".join(f"{stage.value} {n}" for stage, n in self.stage_counts().items())
        if active:
            parts.append(active)
        return "; ".join(parts)


class TqdmProgress:
    """Two tqdm bars (bytes sent, calculations finished) with the stages as postfix.

    Uses ``tqdm.auto`` (a widget in notebooks) with ``disable=None``, so nothing
    is drawn when the output is not a terminal (e.g. a SLURM log); use
    :class:`LogProgress` there.
    """

    def __init__(self, *, disable: bool | None = None, leave: bool = True) -> None:
        self.state = ProgressState()
        # A Jupyter kernel's stderr is no TTY, yet a person is watching: draw there too.
        self._disable = False if disable is None and _in_kernel() else disable
        self._leave = leave
        self._bytes: Any = None
        self._items: Any = None

    def _open(self) -> None:
        tqdm = _tqdm()
        self._bytes = tqdm(
            total=self.state.bytes_total or None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="sent",
            disable=self._disable,
            leave=self._leave,
            position=0,
        )
        self._items = tqdm(
            total=self.state.items_total or None,
            unit="calc",
            desc="done",
            disable=self._disable,
            leave=self._leave,
            position=1,
        )

    def _write(self, text: str) -> None:
        # Only next to visible bars; without them the caller's logs carry the news.
        if self._items is not None and not self._items.disable:
            _tqdm().write(text, file=sys.stderr)

    def __call__(self, event: Event) -> None:
        """Update the bars from one event."""
        state = self.state
        before = state.items_done + state.items_failed + state.items_deferred
        sent = state.update(event)
        if isinstance(event, PlanReady):
            self._open()
            return
        if self._items is None:
            return
        if sent:
            if state.bytes_total and self._bytes.total != state.bytes_total:
                self._bytes.total = state.bytes_total
            self._bytes.update(sent)
        after = state.items_done + state.items_failed + state.items_deferred
        if after > before:
            self._items.update(after - before)
        if isinstance(event, StageChanged | GroupFailed):
            counts = state.stage_counts()
            postfix = " ".join(f"{s.value}={n}" for s, n in counts.items())
            if state.items_failed:
                postfix = f"failed={state.items_failed} " + postfix
            self._items.set_postfix_str(postfix, refresh=False)
        if isinstance(event, GroupFailed):
            self._write(f"failed: {', '.join(event.items[:3])}: {event.message}")
        elif isinstance(event, Notice | Throttled):
            text = event.message if isinstance(event, Notice) else f"throttled: {event.reason}"
            self._write(text)
        elif isinstance(event, RunFinished):
            self.close()

    def close(self) -> None:
        """Close the bars."""
        for bar in (self._bytes, self._items):
            if bar is not None:
                bar.close()
        self._bytes = self._items = None


class LogProgress:
    """Plain log lines, at most one every ``interval`` seconds, for batch logs.

    Failures and notices are logged at once (as warnings); the run's start and
    end always get a line.
    """

    def __init__(
        self,
        *,
        interval: float = 30.0,
        logger: logging.Logger | None = None,
        level: int = logging.INFO,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.state = ProgressState()
        self.interval = interval
        self.logger = logger or logging.getLogger("nomad_bulk.progress")
        self.level = level
        self._clock = clock
        self._last = -float("inf")

    def __call__(self, event: Event) -> None:
        """Count the event; log a line when the interval has passed."""
        self.state.update(event)
        log = self.logger
        if isinstance(event, PlanReady):
            plan = event.plan
            log.log(
                self.level,
                "plan: %d uploads to run (%d calculations, %s), %d already done",
                plan.groups_to_run,
                plan.items_to_run,
                format_size(plan.bytes_to_send),
                plan.groups_done,
            )
            return
        if isinstance(event, GroupFailed):
            log.warning("failed: %s: %s", ", ".join(event.items[:3]), event.message)
            return
        if isinstance(event, Notice):
            log.warning("%s", event.message)
            return
        if isinstance(event, Throttled):
            log.warning(
                "throttled (%s): %s requests/s, %d transfers",
                event.reason,
                "unlimited" if event.requests_per_second is None else event.requests_per_second,
                event.transfers,
            )
            return
        if isinstance(event, RunFinished):
            if not event.report.dry_run:
                log.log(self.level, "finished: %s", self.state.line())
            return
        if not self.state.items_total:
            return  # nothing planned yet (or nothing to do): no routine line
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            log.log(self.level, "%s", self.state.line())
