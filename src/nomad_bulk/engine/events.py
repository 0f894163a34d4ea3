"""Events the engine emits, and the observer protocol that receives them.

Events are frozen, slotted dataclasses. Observers are plain callables that run
synchronously on the event loop's thread, so they must be cheap; one that
raises is logged and detached and never fails the run. The journal is not an
observer: the engine awaits every durable transition itself.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from .plan import Plan
    from .report import RunReport

__all__ = [
    "BytesSent",
    "Event",
    "EventBus",
    "GroupFailed",
    "Notice",
    "Observer",
    "PlanReady",
    "RunFinished",
    "RunStarted",
    "Stage",
    "StageChanged",
    "Throttled",
]

_log = logging.getLogger("nomad_bulk.engine")


class Stage(str, enum.Enum):
    """Where one upload (a group of calculations) is in the pipeline."""

    PLANNED = "planned"
    RECONCILING = "reconciling"
    PACKING = "packing"
    WAITING = "waiting"
    UPLOADING = "uploading"
    PROCESSING = "processing"
    VERIFYING = "verifying"
    EDITING = "editing"
    PUBLISHING = "publishing"
    DELETING = "deleting"
    DONE = "done"
    FAILED = "failed"
    DEFERRED = "deferred"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class RunStarted:
    """A run began: where from, to which deployment, and whether it only plans."""

    root: Path
    url: str
    dry_run: bool
    publish: bool


@dataclass(frozen=True, slots=True)
class PlanReady:
    """Pre-flight finished; ``plan`` says what this run will do."""

    plan: Plan


@dataclass(frozen=True, slots=True)
class StageChanged:
    """An upload entered ``stage``; ``items`` are the calculation keys it carries."""

    group: str
    items: tuple[str, ...]
    stage: Stage
    upload_id: str | None = None
    upload_name: str | None = None
    size: int = 0


@dataclass(frozen=True, slots=True)
class BytesSent:
    """``sent`` of ``total`` bytes of one upload's body reached the socket."""

    group: str
    sent: int
    total: int


@dataclass(frozen=True, slots=True)
class GroupFailed:
    """An upload failed at ``stage``; ``message`` is NOMAD's own text where it gave one."""

    group: str
    items: tuple[str, ...]
    stage: Stage
    message: str
    upload_id: str | None = None


@dataclass(frozen=True, slots=True)
class Throttled:
    """The adaptive controller changed the request rate or the transfer concurrency."""

    reason: str
    requests_per_second: float | None
    transfers: int


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the user should read (a deferred group, a changed option, a cleanup)."""

    message: str


@dataclass(frozen=True, slots=True)
class RunFinished:
    """The run ended (also after an interruption); ``report`` is the final state."""

    report: RunReport


#: Every event the engine emits.
Event: TypeAlias = (
    RunStarted
    | PlanReady
    | StageChanged
    | BytesSent
    | GroupFailed
    | Throttled
    | Notice
    | RunFinished
)


class Observer(Protocol):
    """Receives every event; runs on the loop thread and must return quickly."""

    def __call__(self, event: Event, /) -> None:
        """Handle one event."""


class EventBus:
    """Delivers events to observers; an observer that raises is logged and detached."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: list[Observer] = list(observers)

    def subscribe(self, observer: Observer) -> None:
        """Add an observer."""
        self._observers.append(observer)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every observer still attached."""
        for observer in tuple(self._observers):
            try:
                observer(event)
            except Exception:
                # A broken progress bar must never fail a 30,000-folder run.
                _log.exception("observer %r raised; it is detached", observer)
                self._observers.remove(observer)
