"""The bulk engine: plan, upload, verify, describe and publish thousands of folders.

```
report = await run_upload("calculations/", options=RunOptions(dataset="My data", publish=True))
report.upload_ids, report.entry_ids, report.failed
```

:func:`run_upload` checks everything it can before the first byte (pre-flight),
then runs each upload through pack → POST → poll → verify → edit → publish
under three separate limits (transfers, NOMAD's unpublished uploads, request
rate), recording every durable step in a journal so that a re-run resumes.
Progress is reported as events (:mod:`nomad_bulk.engine.events`) to observers
such as :class:`nomad_bulk.progress.TqdmProgress`.
"""

from __future__ import annotations

from ._backoff import PollPolicy
from .events import (
    BytesSent,
    Event,
    EventBus,
    GroupFailed,
    Notice,
    Observer,
    PlanReady,
    RunFinished,
    RunStarted,
    Stage,
    StageChanged,
    Throttled,
)
from .limits import AdaptiveController, ByteBudget, RateLimiter, UploadSlots
from .options import MAX_UPLOAD_SIZE, GiB, Metadata, RunOptions
from .plan import Plan, SkippedItem
from .report import ItemReport, ItemStatus, RunReport, manifest_data, write_manifest
from .run import MANIFEST_NAME, Confirm, run_upload

__all__ = [
    "MANIFEST_NAME",
    "MAX_UPLOAD_SIZE",
    "AdaptiveController",
    "ByteBudget",
    "BytesSent",
    "Confirm",
    "Event",
    "EventBus",
    "GiB",
    "GroupFailed",
    "ItemReport",
    "ItemStatus",
    "Metadata",
    "Notice",
    "Observer",
    "Plan",
    "PlanReady",
    "PollPolicy",
    "RateLimiter",
    "RunFinished",
    "RunOptions",
    "RunReport",
    "RunStarted",
    "SkippedItem",
    "Stage",
    "StageChanged",
    "Throttled",
    "UploadSlots",
    "manifest_data",
    "run_upload",
    "write_manifest",
]
