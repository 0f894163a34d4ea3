"""The typed outcome of a run, and the ``PIDs.json`` manifest made from it."""

from __future__ import annotations

import contextlib
import enum
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..journal import GroupRecord, ItemRecord, Journal, private_dirs
from .options import Metadata
from .plan import Plan, is_done

__all__ = [
    "ItemReport",
    "ItemStatus",
    "RunReport",
    "build_items",
    "manifest_data",
    "write_manifest",
]


class ItemStatus(str, enum.Enum):
    """Where one calculation ended up."""

    #: Verified, described and published.
    PUBLISHED = "published"
    #: Verified and described; not published (publishing was not asked for).
    DONE = "done"
    #: Failed; ``message`` says why (NOMAD's own words where it gave some). Re-run to retry.
    FAILED = "failed"
    #: Not uploaded: the folder holds no recognisable calculation.
    SKIPPED = "skipped"
    #: Not finished in this run (interrupted, or no upload slot was left). Re-run to go on.
    PENDING = "pending"
    #: A dry run planned it.
    PLANNED = "planned"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class ItemReport:
    """One calculation: its upload, its entries, and how it went."""

    key: str
    status: ItemStatus
    upload_id: str | None = None
    upload_name: str | None = None
    entry_ids: tuple[str, ...] = ()
    mainfiles: tuple[str, ...] = ()
    message: str | None = None
    stage: str | None = None
    sha256: str | None = None
    group: str | None = None

    @property
    def ok(self) -> bool:
        """True for published or done (and for skipped folders, which hold nothing)."""
        return self.status in (ItemStatus.PUBLISHED, ItemStatus.DONE, ItemStatus.SKIPPED)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunReport:
    """The outcome of :func:`~nomad_bulk.engine.run_upload`, item by item."""

    plan: Plan
    items: tuple[ItemReport, ...]
    dataset_id: str | None = None
    journal_path: Path | None = None
    manifest_path: Path | None = None
    dry_run: bool = False
    elapsed: float = 0.0
    notices: tuple[str, ...] = field(default_factory=tuple)
    #: True when ``confirm`` declined the plan: nothing was sent.
    cancelled: bool = False

    @property
    def counts(self) -> dict[str, int]:
        """Number of calculations per status (every status present, zeros included)."""
        counts = {status.value: 0 for status in ItemStatus}
        for item in self.items:
            counts[item.status.value] += 1
        return counts

    @property
    def failed(self) -> tuple[ItemReport, ...]:
        """The calculations that failed."""
        return tuple(i for i in self.items if i.status is ItemStatus.FAILED)

    @property
    def pending(self) -> tuple[ItemReport, ...]:
        """The calculations this run did not finish."""
        return tuple(i for i in self.items if i.status is ItemStatus.PENDING)

    @property
    def published(self) -> tuple[ItemReport, ...]:
        """The calculations now published."""
        return tuple(i for i in self.items if i.status is ItemStatus.PUBLISHED)

    @property
    def ok(self) -> bool:
        """True when every calculation is done, published or skipped (nothing failed or left)."""
        return not (self.dry_run or self.cancelled) and all(item.ok for item in self.items)

    @property
    def upload_ids(self) -> dict[str, str]:
        """Calculation key → upload id, for every calculation done or published."""
        return {
            i.key: i.upload_id
            for i in self.items
            if i.upload_id and i.status in (ItemStatus.PUBLISHED, ItemStatus.DONE)
        }

    @property
    def entry_ids(self) -> dict[str, list[str]]:
        """Calculation key → entry ids, for every calculation done or published."""
        return {
            i.key: list(i.entry_ids)
            for i in self.items
            if i.status in (ItemStatus.PUBLISHED, ItemStatus.DONE)
        }

    def summary(self) -> str:
        """A few human lines: counts, then each failure with its message."""
        counts = self.counts
        shown = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
        lines = [f"{len(self.items)} calculations: {shown or 'nothing to do'}"]
        if not self.items:
            where = f" matching --pattern {self.plan.pattern!r}" if self.plan.pattern else ""
            lines.append(
                f"No calculation folder found under {self.plan.root}{where}: a calculation "
                "is a folder holding files (such as aims.out or vasprun.xml) or a ready .zip. "
                "Check the path" + (" and the pattern." if where else ".")
            )
        if self.dataset_id:
            lines.append(f"Dataset id: {self.dataset_id}")
        failed = self.failed
        for item in failed[:50]:
            lines.append(f"  FAILED {item.key}: {item.message or 'no message'}")
        if len(failed) > 50:
            lines.append(f"  ... and {len(failed) - 50} more failures (see the manifest)")
        lines.extend(self.notices)
        if self.manifest_path is not None:
            lines.append(f"Manifest: {self.manifest_path}")
        return "\n".join(lines)


def _item_report(
    item: ItemRecord,
    group: GroupRecord | None,
    *,
    publish: bool,
    metadata: Metadata,
    dry_run: bool,
) -> ItemReport:
    mainfiles = item.upload_mainfiles or tuple(item.calc.get("mainfiles") or ())
    if group is None:
        return ItemReport(
            key=item.key,
            status=ItemStatus.FAILED if item.failed else ItemStatus.SKIPPED,
            mainfiles=mainfiles,
            message=item.skip,
            stage="planned",
        )
    upload_id = None if group.deleted else group.upload_id
    if group.failed:
        status, message = ItemStatus.FAILED, item.message or group.message
    elif group.stage == "published":
        status, message = ItemStatus.PUBLISHED, None
    elif is_done(group, publish=publish, metadata=metadata):
        status, message = ItemStatus.DONE, None
    else:
        status = ItemStatus.PLANNED if dry_run else ItemStatus.PENDING
        message = item.message
    return ItemReport(
        key=item.key,
        status=status,
        upload_id=upload_id,
        upload_name=group.upload_name,
        entry_ids=item.entry_ids,
        mainfiles=mainfiles,
        message=message,
        stage=group.failed_stage if group.failed else group.stage,
        sha256=group.sha256,
        group=group.key,
    )


def build_items(
    journal: Journal, *, publish: bool, metadata: Metadata, dry_run: bool = False
) -> tuple[ItemReport, ...]:
    """Every calculation of the journal as an :class:`ItemReport`; blocking."""
    return tuple(
        _item_report(item, group, publish=publish, metadata=metadata, dry_run=dry_run)
        for item, group in journal.iter_items()
    )


def manifest_data(report: RunReport, *, dataset_name: str | None = None) -> dict[str, Any]:
    """The manifest as JSON-able data (see :func:`write_manifest`)."""
    items: dict[str, Any] = {}
    for item in report.items:
        items[item.key] = {
            "status": item.status.value,
            "upload_id": item.upload_id,
            "upload_name": item.upload_name,
            "entry_ids": list(item.entry_ids),
            "mainfiles": list(item.mainfiles),
            "sha256": item.sha256,
            "stage": item.stage,
            "message": item.message,
        }
    return {
        "upload_ids": report.upload_ids,
        "entry_ids": report.entry_ids,
        "dataset_id": report.dataset_id or "",
        "dataset_name": dataset_name or report.plan.dataset_name,
        "nomad_url": report.plan.url,
        "root": str(report.plan.root),
        "published": report.plan.publish,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "summary": report.counts,
        "items": items,
    }


def write_manifest(path: Path, data: Mapping[str, Any]) -> Path:
    """Write the manifest atomically (temporary file, fsync, rename), readable by the owner only.

    Folders it has to create are owner-only too (0700).
    """
    path = Path(path)
    private_dirs(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
