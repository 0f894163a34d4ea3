"""Typed, immutable views of NOMAD's JSON, parsed at the boundary.

NOMAD omits fields whose value is null, so every optional field defaults to
``None``; unknown fields are ignored so newer servers keep working. Timestamps
come naive-UTC from NOMAD 1.3 and with a ``Z`` from 2.0: both parse to aware UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "Dataset",
    "Entry",
    "ProcessStatus",
    "RawDirectory",
    "RawFile",
    "Upload",
    "User",
    "parse_timestamp",
]


class ProcessStatus(str, enum.Enum):
    """NOMAD's process states of an upload or entry."""

    READY = "READY"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING_FOR_RESULT = "WAITING_FOR_RESULT"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    DELETED = "DELETED"

    @property
    def is_running(self) -> bool:
        """True while a process is scheduled or running."""
        return self in _RUNNING

    def __str__(self) -> str:
        return self.value


_RUNNING = frozenset(
    {ProcessStatus.PENDING, ProcessStatus.RUNNING, ProcessStatus.WAITING_FOR_RESULT}
)


def parse_timestamp(value: object) -> datetime | None:
    """Parse NOMAD's timestamps (naive UTC in 1.3, ``Z``-suffixed in 2.0) to aware UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, (int, float)):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    else:
        text = str(value).strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _status(value: object) -> ProcessStatus:
    try:
        return ProcessStatus(str(value))
    except ValueError:
        return ProcessStatus.READY


def _strs(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    return (str(value),)


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class User:
    """A NOMAD account (public fields; ``email`` only for ``/users/me``)."""

    user_id: str
    username: str | None = None
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    affiliation: str | None = None
    is_admin: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        """Build from a NOMAD user object."""
        first, last = data.get("first_name"), data.get("last_name")
        name = data.get("name") or " ".join(p for p in (first, last) if p) or None
        return cls(
            user_id=str(data.get("user_id", "")),
            username=_opt_str(data.get("username")),
            name=name,
            first_name=_opt_str(first),
            last_name=_opt_str(last),
            email=data.get("email") or None,
            affiliation=_opt_str(data.get("affiliation")),
            is_admin=bool(data.get("is_admin", False)),
        )


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload's processing state and metadata (NOMAD's ``UploadProcData``)."""

    upload_id: str
    process_status: ProcessStatus = ProcessStatus.READY
    process_running: bool = False
    current_process: str | None = None
    last_status_message: str | None = None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    upload_name: str | None = None
    upload_create_time: datetime | None = None
    complete_time: datetime | None = None
    main_author: str | None = None
    coauthors: tuple[str, ...] = ()
    reviewers: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()
    viewers: tuple[str, ...] = ()
    published: bool = False
    publish_time: datetime | None = None
    published_to: tuple[str, ...] = ()
    with_embargo: bool = False
    embargo_length: int = 0
    license: str | None = None
    entries: int = 0
    upload_files_server_path: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        """True when the last process finished with SUCCESS."""
        return not self.process_running and self.process_status is ProcessStatus.SUCCESS

    @property
    def failed(self) -> bool:
        """True when the last process finished with FAILURE."""
        return not self.process_running and self.process_status is ProcessStatus.FAILURE

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Upload:
        """Build from ``UploadProcData`` (the ``data`` member of NOMAD's answers)."""
        status = _status(data.get("process_status", "READY"))
        running = data.get("process_running")
        return cls(
            upload_id=str(data.get("upload_id", "")),
            process_status=status,
            process_running=status.is_running if running is None else bool(running),
            current_process=_opt_str(data.get("current_process")),
            last_status_message=_opt_str(data.get("last_status_message")),
            errors=_strs(data.get("errors")),
            warnings=_strs(data.get("warnings")),
            upload_name=_opt_str(data.get("upload_name")),
            upload_create_time=parse_timestamp(data.get("upload_create_time")),
            complete_time=parse_timestamp(data.get("complete_time")),
            main_author=_opt_str(data.get("main_author")),
            coauthors=_strs(data.get("coauthors")),
            reviewers=_strs(data.get("reviewers")),
            writers=_strs(data.get("writers")),
            viewers=_strs(data.get("viewers")),
            published=bool(data.get("published", False)),
            publish_time=parse_timestamp(data.get("publish_time")),
            published_to=_strs(data.get("published_to")),
            with_embargo=bool(data.get("with_embargo", False)),
            embargo_length=int(data.get("embargo_length") or 0),
            license=_opt_str(data.get("license")),
            entries=int(data.get("entries") or 0),
            upload_files_server_path=_opt_str(data.get("upload_files_server_path")),
            raw=dict(data),
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of an upload: processing state plus, once indexed, its metadata."""

    entry_id: str
    upload_id: str | None = None
    mainfile: str | None = None
    parser_name: str | None = None
    process_status: ProcessStatus = ProcessStatus.READY
    process_running: bool = False
    current_process: str | None = None
    last_status_message: str | None = None
    errors: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    entry_create_time: datetime | None = None
    complete_time: datetime | None = None
    processed: bool | None = None
    published: bool | None = None
    comment: str | None = None
    references: tuple[str, ...] = ()
    dataset_ids: tuple[str, ...] = ()
    upload_name: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def failed(self) -> bool:
        """True when NOMAD could not process this entry."""
        return self.process_status is ProcessStatus.FAILURE or self.processed is False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Entry:
        """Build from ``EntryProcData`` or from a search-index entry document."""
        meta: Mapping[str, Any] = data.get("entry_metadata") or {}
        if not meta and "processed" in data:
            meta = data  # a search document from /entries or /entries/query
        status_value = data.get("process_status")
        if status_value is None and "processed" in meta:
            status_value = "SUCCESS" if meta.get("processed") else "FAILURE"
        status = _status(status_value or "READY")
        running = data.get("process_running")
        datasets = meta.get("datasets") or ()
        dataset_ids = tuple(
            str(d.get("dataset_id")) if isinstance(d, Mapping) else str(d) for d in datasets
        )
        processed = meta.get("processed")
        errors = _strs(data.get("errors")) or _strs(meta.get("processing_errors"))
        return cls(
            entry_id=str(data.get("entry_id", "")),
            upload_id=_opt_str(data.get("upload_id", meta.get("upload_id"))),
            mainfile=_opt_str(data.get("mainfile", meta.get("mainfile"))),
            parser_name=_opt_str(data.get("parser_name", meta.get("parser_name"))),
            process_status=status,
            process_running=status.is_running if running is None else bool(running),
            current_process=_opt_str(data.get("current_process")),
            last_status_message=_opt_str(data.get("last_status_message")),
            errors=errors,
            warnings=_strs(data.get("warnings")),
            entry_create_time=parse_timestamp(
                data.get("entry_create_time", meta.get("entry_create_time"))
            ),
            complete_time=parse_timestamp(data.get("complete_time")),
            processed=None if processed is None else bool(processed),
            published=None if meta.get("published") is None else bool(meta.get("published")),
            comment=_opt_str(meta.get("comment")),
            references=_strs(meta.get("references")),
            dataset_ids=dataset_ids,
            upload_name=_opt_str(meta.get("upload_name")),
            metadata=dict(meta),
        )


@dataclass(frozen=True, slots=True)
class Dataset:
    """A NOMAD dataset."""

    dataset_id: str
    dataset_name: str
    user_id: str | None = None
    dataset_type: str | None = None
    doi: str | None = None
    dataset_create_time: datetime | None = None
    dataset_modified_time: datetime | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dataset:
        """Build from a NOMAD dataset object."""
        return cls(
            dataset_id=str(data.get("dataset_id", "")),
            dataset_name=str(data.get("dataset_name", "")),
            user_id=_opt_str(data.get("user_id")),
            dataset_type=_opt_str(data.get("dataset_type")),
            doi=_opt_str(data.get("doi")),
            dataset_create_time=parse_timestamp(data.get("dataset_create_time")),
            dataset_modified_time=parse_timestamp(data.get("dataset_modified_time")),
        )


@dataclass(frozen=True, slots=True)
class RawFile:
    """One file or folder in an upload's raw directory listing."""

    name: str
    is_file: bool
    size: int = 0
    entry_id: str | None = None
    parser_name: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RawFile:
        """Build from one item of ``directory_metadata.content``."""
        return cls(
            name=str(data.get("name", "")),
            is_file=bool(data.get("is_file", True)),
            size=int(data.get("size") or 0),
            entry_id=_opt_str(data.get("entry_id")),
            parser_name=_opt_str(data.get("parser_name")),
        )


@dataclass(frozen=True, slots=True)
class RawDirectory:
    """A raw directory listing of an upload (all pages joined)."""

    path: str
    size: int
    content: tuple[RawFile, ...] = ()
    access: str | None = None
