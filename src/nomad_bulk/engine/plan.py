"""Planning: discovered calculations become uploads recorded in the journal.

The plan is streamed: :func:`~nomad_bulk.packing.discover` and
:func:`~nomad_bulk.packing.group_calculations` are lazy, and every group goes
straight into the journal, which is the only place the whole plan exists.
Uploads that reached the server in an earlier run keep their composition;
everything else is planned afresh on every run, so new folders, changed folders
and changed grouping options are picked up.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..journal import GroupRecord, ItemRecord, Journal
from ..packing import Calculation, Group, discover, group_calculations
from .options import Metadata, RunOptions, format_size

__all__ = [
    "Plan",
    "PlanCounts",
    "SkippedItem",
    "calculation_from_record",
    "calculation_to_record",
    "is_done",
    "needs_edit",
    "plan_into_journal",
    "upload_name_for",
]

#: Commit the planning transaction every this many groups (keeps the WAL small).
_BATCH = 500
_LABEL_MAX = 120


@dataclass(frozen=True, slots=True)
class SkippedItem:
    """A calculation this run does not upload, and why."""

    key: str
    reason: str
    failed: bool = False


@dataclass(frozen=True, slots=True)
class PlanCounts:
    """What the planning pass found."""

    calculations: int = 0
    skipped: tuple[SkippedItem, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What a run will do, known after pre-flight and before the first byte is sent.

    Groups are uploads. ``groups_new`` need a new upload, ``groups_resumed``
    already have one on the server from an earlier run, ``groups_retried``
    failed before and are tried again, ``groups_done`` need nothing.
    """

    root: Path
    url: str
    journal_path: Path | None
    publish: bool
    per_upload: bool
    max_upload_size: int
    max_per_upload: int | None
    calculations: int
    skipped: tuple[SkippedItem, ...]
    groups_total: int
    groups_done: int
    groups_new: int
    groups_resumed: int
    groups_retried: int
    items_to_run: int
    bytes_to_send: int
    user: str | None = None
    server_version: str | None = None
    held_uploads: int | None = None
    upload_limit: int | None = None
    free_slots: int | None = None
    dataset_name: str | None = None
    dataset_id: str | None = None
    coauthors: tuple[str, ...] = ()
    notices: tuple[str, ...] = field(default_factory=tuple)
    #: The ``--pattern`` that selected the folders, if any.
    pattern: str | None = None

    @property
    def groups_to_run(self) -> int:
        """Uploads this run works on."""
        return self.groups_new + self.groups_resumed + self.groups_retried

    @property
    def server_checked(self) -> bool:
        """True when pre-flight talked to the server (a dry run without credentials does not)."""
        return self.user is not None

    @property
    def deferred_estimate(self) -> int:
        """New uploads that cannot start for lack of slots when nothing is published."""
        if self.publish or self.free_slots is None:
            return 0
        return max(0, self.groups_new - self.free_slots)

    def describe(self) -> str:
        """The plan in a few human lines."""
        mode = "one upload per calculation" if self.per_upload else "packed uploads"
        lines = [
            f"Root:        {self.root}",
            f"NOMAD:       {self.url}"
            + (f" (version {self.server_version})" if self.server_version else ""),
        ]
        if self.user:
            lines.append(f"Account:     {self.user}")
        lines.append(
            f"Found:       {self.calculations} calculations; {len(self.skipped)} not uploaded"
        )
        lines.append(
            f"Uploads:     {self.groups_total} ({mode}); {self.groups_done} already done, "
            f"{self.groups_new} new, {self.groups_resumed} to resume, "
            f"{self.groups_retried} to retry"
        )
        lines.append(
            f"To send:     {self.items_to_run} calculations, {format_size(self.bytes_to_send)}"
        )
        if self.upload_limit is not None:
            lines.append(
                f"Slots:       you hold {self.held_uploads} unpublished uploads of NOMAD's "
                f"limit of {self.upload_limit}; {self.free_slots} free"
            )
        elif self.server_checked:
            lines.append("Slots:       not limited (administrator account)")
        if self.dataset_name:
            state = self.dataset_id or "will be created"
            lines.append(f"Dataset:     {self.dataset_name} ({state})")
        if self.coauthors:
            lines.append(f"Coauthors:   {', '.join(self.coauthors)}")
        lines.append(f"Publish:     {'yes' if self.publish else 'no'}")
        for item in self.skipped[:20]:
            lines.append(f"  not uploaded: {item.key}: {item.reason}")
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more not uploaded")
        lines.extend(f"Note: {text}" for text in self.notices)
        return "\n".join(lines)


def calculation_to_record(calc: Calculation) -> dict[str, Any]:
    """The JSON the journal keeps of a calculation (enough to pack it again)."""
    ready: str | None = None
    if calc.ready_zip is not None:
        ready = calc.ready_zip.relative_to(calc.path).as_posix()
    folder = calc.key
    if calc.root is not None:
        folder = calc.path.relative_to(calc.root).as_posix()
    return {
        "folder": folder,
        "files": list(calc.files),
        "ready_zip": ready,
        "mainfiles": list(calc.mainfiles),
        "parsers": list(calc.parsers),
        "problems": list(calc.problems),
        "content_size": calc.content_size,
    }


def calculation_from_record(root: Path, item: ItemRecord) -> Calculation:
    """Rebuild a calculation from its journal record."""
    data = item.calc
    folder = str(data.get("folder") or item.key)
    path = root if folder == "." else root.joinpath(*folder.split("/"))
    ready = data.get("ready_zip")
    return Calculation(
        key=item.key,
        path=path,
        files=tuple(data.get("files") or ()),
        size=item.size,
        ready_zip=path / ready if ready else None,
        mainfiles=tuple(data.get("mainfiles") or ()),
        parsers=tuple(data.get("parsers") or ()),
        problems=tuple(data.get("problems") or ()),
        content_size=data.get("content_size"),
        root=root,
    )


def group_from_records(root: Path, record: GroupRecord, items: Iterable[ItemRecord]) -> Group:
    """Rebuild a group from its journal records."""
    calcs = tuple(calculation_from_record(root, item) for item in items)
    return Group(
        key=record.key,
        calculations=calcs,
        size=record.size,
        expected_entries=record.expected_entries,
    )


def _label(group: Group) -> str:
    keys = [c.key for c in group.calculations]
    if len(keys) == 1:
        label = keys[0]
    else:
        label = f"{keys[0]} … {keys[-1]} ({len(keys)} calculations)"
    return label if len(label) <= _LABEL_MAX else label[: _LABEL_MAX - 1] + "…"


def upload_name_for(run_id: str, group_key: str, label: str) -> str:
    """The deterministic ``upload_name`` of a group: readable, and unique to this run."""
    tag = hashlib.sha256(f"{run_id}:{group_key}".encode()).hexdigest()[:12]
    return f"{label} [nomad-bulk {tag}]"


def needs_edit(record: GroupRecord, metadata: Metadata) -> bool:
    """True if the upload has yet to receive this run's metadata."""
    return metadata.any and record.meta_digest != metadata.digest


def is_done(record: GroupRecord, *, publish: bool, metadata: Metadata) -> bool:
    """True if the group needs no work in a run with these options."""
    if record.failed:
        return False
    if record.stage == "published":
        return not needs_edit(record, metadata)
    if record.stage == "described" and not publish:
        return not needs_edit(record, metadata)
    return False


def _problem_text(calc: Calculation) -> str:
    return "; ".join(calc.problems)


def plan_into_journal(
    journal: Journal,
    root: Path,
    options: RunOptions,
    *,
    commit: bool,
) -> PlanCounts:
    """Discover, group and record every calculation not already on its way; blocking.

    With ``commit=False`` (a dry run) everything happens in one transaction that
    the caller rolls back.
    """
    journal.discard_unstarted()
    run_id = journal.run_id
    isolated = journal.isolated_keys()
    skipped: list[SkippedItem] = []
    set_aside: list[Calculation] = []
    count = 0

    def candidates() -> Iterator[Calculation]:
        nonlocal count
        for calc in discover(root, pattern=options.pattern):
            count += 1
            if journal.started_group_of(calc.key) is not None:
                continue
            record = calculation_to_record(calc)
            if calc.problems:
                reason = f"cannot be uploaded as it is: {_problem_text(calc)}"
                journal.add_skipped(calc.key, calc.size, record, reason, failed=True)
                skipped.append(SkippedItem(calc.key, reason, failed=True))
                continue
            if not calc.mainfiles and not options.allow_empty:
                reason = (
                    "no recognisable mainfile (such as an FHI-aims aims.out or a VASP "
                    "vasprun.xml); pass --allow-empty to upload it anyway"
                )
                journal.add_skipped(calc.key, calc.size, record, reason)
                skipped.append(SkippedItem(calc.key, reason))
                continue
            if calc.key in isolated and not options.per_upload:
                set_aside.append(calc)
                continue
            yield calc

    def add(group: Group) -> None:
        if group.too_large:
            calc = group.calculations[0]
            reason = (
                f"too large: {format_size(group.size)} exceeds the upload size limit of "
                f"{format_size(options.max_upload_size)}; split the folder or raise "
                "--max-upload-size (NOMAD accepts at most 32 GiB)"
            )
            journal.add_skipped(
                calc.key, calc.size, calculation_to_record(calc), reason, failed=True
            )
            skipped.append(SkippedItem(calc.key, reason, failed=True))
            return
        label = _label(group)
        journal.add_group(
            key=group.key,
            upload_name=upload_name_for(run_id, group.key, label),
            label=label,
            size=group.size,
            expected_entries=group.expected_entries,
            items=[(c.key, c.size, calculation_to_record(c)) for c in group.calculations],
        )

    journal.begin()
    try:
        groups = group_calculations(
            candidates(),
            per_upload=options.per_upload,
            max_upload_size=options.max_upload_size,
            max_per_upload=options.max_per_upload,
        )
        for n, group in enumerate(groups, 1):
            add(group)
            if commit and n % _BATCH == 0:
                journal.commit()
                journal.begin()
        # Calculations whose entries failed in a packed upload before are retried
        # alone, so that they cannot hold back the others again.
        for group in group_calculations(
            set_aside, per_upload=True, max_upload_size=options.max_upload_size
        ):
            add(group)
        if commit:
            journal.commit()
    except BaseException:
        journal.rollback()
        raise
    return PlanCounts(calculations=count, skipped=tuple(skipped))
