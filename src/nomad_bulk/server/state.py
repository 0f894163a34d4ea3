"""The server's state: users, uploads, entries, datasets, processing and persistence.

Processing runs as one asyncio task per upload that works through the upload's
job list (one process at a time); blocking file work runs in worker threads.
With a ``data_dir`` every change is written to ``state.json`` there (atomically),
and jobs that were in flight are started again after a restart.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio

from .auth import TokenSigner
from .config import ServerConfig, UserSpec
from .faults import FaultInjector
from .parsers import PARSERS
from .storage import BadArchiveError, add_files, match_files

__all__ = [
    "PROCESSING_STATUSES",
    "DatasetRecord",
    "EntryRecord",
    "Job",
    "ServerState",
    "UploadRecord",
    "UserRecord",
    "entry_id_for",
    "new_id",
    "utcnow",
]

logger = logging.getLogger(__name__)

#: Statuses during which a process counts as running.
PROCESSING_STATUSES = frozenset({"PENDING", "RUNNING", "WAITING_FOR_RESULT"})
#: Job kinds that block everything else (NOMAD's blocking processes).
BLOCKING_KINDS = frozenset({"publish", "delete"})

_PROCESS_NAMES = {
    "1.3": {
        "process": "process_upload",
        "edit": "edit_upload_metadata",
        "publish": "publish_upload",
        "delete": "delete_upload",
    },
    "2.0": {
        "process": "_process_upload",
        "edit": "_edit_metadata",
        "publish": "_publish_upload",
        "delete": "delete_upload",
    },
}


def utcnow() -> datetime:
    """Now in UTC, to milliseconds (NOMAD stores times in MongoDB at that precision)."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def new_id() -> str:
    """A NOMAD id: 22 characters of URL-safe base64 of a random UUID4."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii")[:22]


def entry_id_for(upload_id: str, mainfile: str) -> str:
    """NOMAD's entry id: first 28 characters of URL-safe base64 of SHA-512(upload_id+mainfile)."""
    digest = hashlib.sha512(f"{upload_id}{mainfile}".encode()).digest()
    return base64.b64encode(digest, altchars=b"-_").decode("ascii")[:28]


def _dt(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse_dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


@dataclass(slots=True)
class UserRecord:
    """A user account as the API shows it."""

    user_id: str
    username: str
    email: str
    first_name: str | None
    last_name: str | None
    affiliation: str | None
    is_admin: bool
    password: str = field(repr=False)
    created: datetime = field(default_factory=lambda: datetime(2024, 1, 1, tzinfo=timezone.utc))

    @property
    def name(self) -> str:
        """Full display name."""
        return " ".join(p for p in (self.first_name, self.last_name) if p) or self.username

    @classmethod
    def from_spec(cls, spec: UserSpec) -> UserRecord:
        """Build the record of a configured user."""
        return cls(
            user_id=spec.resolved_user_id,
            username=spec.username,
            email=spec.resolved_email,
            first_name=spec.first_name,
            last_name=spec.last_name,
            affiliation=spec.affiliation,
            is_admin=spec.is_admin,
            password=spec.password,
        )


@dataclass(slots=True)
class EntryRecord:
    """One entry (a matched mainfile) of an upload."""

    entry_id: str
    mainfile: str
    parser_name: str
    entry_create_time: datetime
    process_status: str = "READY"
    last_status_message: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete_time: datetime | None = None
    datasets: list[str] = field(default_factory=list)
    comment: str | None = None
    references: list[str] = field(default_factory=list)
    external_id: str | None = None

    @property
    def process_running(self) -> bool:
        """True while the entry is being processed."""
        return self.process_status in PROCESSING_STATUSES

    def to_json(self) -> dict[str, Any]:
        """Persistable form."""
        return {
            "entry_id": self.entry_id,
            "mainfile": self.mainfile,
            "parser_name": self.parser_name,
            "entry_create_time": _dt(self.entry_create_time),
            "process_status": self.process_status,
            "last_status_message": self.last_status_message,
            "errors": self.errors,
            "warnings": self.warnings,
            "complete_time": _dt(self.complete_time),
            "datasets": self.datasets,
            "comment": self.comment,
            "references": self.references,
            "external_id": self.external_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EntryRecord:
        """Inverse of :meth:`to_json`."""
        values = dict(data)
        values["entry_create_time"] = _parse_dt(values["entry_create_time"])
        values["complete_time"] = _parse_dt(values.get("complete_time"))
        return cls(**values)


@dataclass(slots=True)
class Job:
    """A process queued or running on an upload: process, edit, publish or delete."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def blocking(self) -> bool:
        """Publish and delete block every other process."""
        return self.kind in BLOCKING_KINDS


@dataclass(slots=True)
class UploadRecord:
    """One upload with its entries and its processing state."""

    upload_id: str
    upload_name: str | None
    main_author: str
    upload_create_time: datetime
    coauthors: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    embargo_length: int = 0
    published: bool = False
    publish_time: datetime | None = None
    license: str = "CC BY 4.0"
    external_db: str | None = None
    process_status: str = "READY"
    current_process: str | None = None
    last_status_message: str | None = None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    complete_time: datetime | None = None
    entries: list[EntryRecord] = field(default_factory=list)
    publish_directly: bool = False
    staged: list[str] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)
    processed_once: bool = False

    @property
    def process_running(self) -> bool:
        """True iff a process is pending or running."""
        return self.process_status in PROCESSING_STATUSES

    @property
    def blocked(self) -> bool:
        """True while a blocking process (publish, delete) runs or waits."""
        return any(job.blocking for job in self.jobs)

    @property
    def writers(self) -> list[str]:
        """Main author and coauthors."""
        return [self.main_author, *(c for c in self.coauthors if c != self.main_author)]

    @property
    def viewers(self) -> list[str]:
        """Writers and reviewers."""
        writers = self.writers
        return [*writers, *(r for r in self.reviewers if r not in writers)]

    def entry(self, entry_id: str) -> EntryRecord | None:
        """The entry with this id, if any."""
        for entry in self.entries:
            if entry.entry_id == entry_id:
                return entry
        return None

    def to_json(self) -> dict[str, Any]:
        """Persistable form."""
        return {
            "upload_id": self.upload_id,
            "upload_name": self.upload_name,
            "main_author": self.main_author,
            "upload_create_time": _dt(self.upload_create_time),
            "coauthors": self.coauthors,
            "reviewers": self.reviewers,
            "embargo_length": self.embargo_length,
            "published": self.published,
            "publish_time": _dt(self.publish_time),
            "license": self.license,
            "external_db": self.external_db,
            "process_status": self.process_status,
            "current_process": self.current_process,
            "last_status_message": self.last_status_message,
            "errors": self.errors,
            "warnings": self.warnings,
            "complete_time": _dt(self.complete_time),
            "entries": [e.to_json() for e in self.entries],
            "publish_directly": self.publish_directly,
            "staged": self.staged,
            "jobs": [{"kind": j.kind, "params": j.params} for j in self.jobs],
            "processed_once": self.processed_once,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadRecord:
        """Inverse of :meth:`to_json`."""
        values = dict(data)
        for key in ("upload_create_time", "publish_time", "complete_time"):
            values[key] = _parse_dt(values.get(key))
        values["entries"] = [EntryRecord.from_json(e) for e in values.get("entries", [])]
        values["jobs"] = [Job(j["kind"], j.get("params", {})) for j in values.get("jobs", [])]
        return cls(**values)


@dataclass(slots=True)
class DatasetRecord:
    """A dataset; entries refer to it by id."""

    dataset_id: str
    dataset_name: str
    user_id: str
    dataset_create_time: datetime
    dataset_modified_time: datetime
    dataset_type: str = "owned"
    doi: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Persistable form."""
        return {
            "dataset_id": self.dataset_id,
            "dataset_name": self.dataset_name,
            "user_id": self.user_id,
            "dataset_create_time": _dt(self.dataset_create_time),
            "dataset_modified_time": _dt(self.dataset_modified_time),
            "dataset_type": self.dataset_type,
            "doi": self.doi,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DatasetRecord:
        """Inverse of :meth:`to_json`."""
        values = dict(data)
        values["dataset_create_time"] = _parse_dt(values["dataset_create_time"])
        values["dataset_modified_time"] = _parse_dt(values["dataset_modified_time"])
        return cls(**values)


class ServerState:
    """Everything the server knows; also the in-process view tests assert on."""

    def __init__(self, config: ServerConfig, root: Path) -> None:
        self.config = config
        self.root = root
        self.persistent = config.data_dir is not None
        self.users: dict[str, UserRecord] = {}
        for spec in config.users:
            record = UserRecord.from_spec(spec)
            self.users[record.user_id] = record
        self._uploads: dict[str, UploadRecord] = {}
        self._datasets: dict[str, DatasetRecord] = {}
        #: every request the server answered (or dropped)
        self.request_count = 0
        #: requests per ``"METHOD /route/{template}"``
        self.route_counts: Counter[str] = Counter()
        #: answers per HTTP status
        self.status_counts: Counter[int] = Counter()
        self.faults = FaultInjector(config.faults, config.seed)
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._changed = asyncio.Event()
        self._save_scheduled = False
        self._stopping = False
        secret = self._load()
        self.signer = TokenSigner(secret)

    # -- in-process views ---------------------------------------------------

    @property
    def fault_counts(self) -> dict[str, int]:
        """Injected faults by kind (error, after, drop, drop_after, latency, ...)."""
        return dict(self.faults.counts)

    def uploads(self) -> list[UploadRecord]:
        """All uploads of all users, oldest first."""
        return list(self._uploads.values())

    def datasets(self) -> list[DatasetRecord]:
        """All datasets of all users, oldest first."""
        return list(self._datasets.values())

    def get_upload(self, upload_id: str) -> UploadRecord | None:
        """The upload with this id, if it exists."""
        return self._uploads.get(upload_id)

    def get_dataset(self, dataset_id: str) -> DatasetRecord | None:
        """The dataset with this id, if it exists."""
        return self._datasets.get(dataset_id)

    def find_entry(self, entry_id: str) -> tuple[UploadRecord, EntryRecord] | None:
        """The entry with this id and its upload."""
        for upload in self._uploads.values():
            entry = upload.entry(entry_id)
            if entry is not None:
                return upload, entry
        return None

    def user_by_name(self, name: str) -> UserRecord | None:
        """A user by username or e-mail (case-insensitive e-mail)."""
        for user in self.users.values():
            if user.username == name or user.email.lower() == name.lower():
                return user
        return None

    def resolve_user_ref(self, ref: str) -> UserRecord | None:
        """A user by id, then username, then e-mail (NOMAD's order)."""
        return self.users.get(ref) or self.user_by_name(ref)

    def process_name(self, kind: str) -> str:
        """The process name of a job kind in the configured API generation."""
        return _PROCESS_NAMES[self.config.api_version][kind]

    def upload_dir(self, upload_id: str) -> Path:
        """Directory holding an upload's files."""
        return self.root / "uploads" / upload_id

    def raw_dir(self, upload_id: str) -> Path:
        """The raw directory of an upload."""
        return self.upload_dir(upload_id) / "raw"

    def staging_dir(self, upload_id: str) -> Path:
        """Where received files wait for processing."""
        return self.upload_dir(upload_id) / "staging"

    def tmp_dir(self) -> Path:
        """Scratch space for request bodies being received."""
        path = self.root / "tmp"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- mutations -----------------------------------------------------------

    def create_upload(
        self,
        user: UserRecord,
        *,
        upload_name: str | None,
        embargo_length: int,
        publish_directly: bool,
        files: Iterable[tuple[Path, str]] = (),
    ) -> UploadRecord:
        """Create an upload; received files are moved in and processing is scheduled."""
        upload_id = new_id()
        upload = UploadRecord(
            upload_id=upload_id,
            upload_name=upload_name,
            main_author=user.user_id,
            upload_create_time=utcnow(),
            embargo_length=embargo_length,
            publish_directly=publish_directly,
        )
        staging = self.staging_dir(upload_id)
        staging.mkdir(parents=True, exist_ok=True)
        self.raw_dir(upload_id).mkdir(parents=True, exist_ok=True)
        for path, name in files:
            os.replace(path, staging / name)
            upload.staged.append(name)
        self._uploads[upload_id] = upload
        if upload.staged:
            self.schedule(upload, Job("process"))
        self.mark_dirty()
        return upload

    def create_dataset(self, user: UserRecord, name: str, dataset_type: str) -> DatasetRecord:
        """Create a dataset owned by ``user``."""
        now = utcnow()
        dataset = DatasetRecord(new_id(), name, user.user_id, now, now, dataset_type)
        self._datasets[dataset.dataset_id] = dataset
        self.mark_dirty()
        return dataset

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset and remove it from all entries."""
        self._datasets.pop(dataset_id, None)
        for upload in self._uploads.values():
            for entry in upload.entries:
                if dataset_id in entry.datasets:
                    entry.datasets.remove(dataset_id)
        self.mark_dirty()

    def schedule(self, upload: UploadRecord, job: Job) -> None:
        """Add a job; it starts now (PENDING) or waits behind the running one (1.3 queue)."""
        upload.jobs.append(job)
        if len(upload.jobs) == 1:
            self._set_pending(upload, job)
        self._ensure_worker(upload.upload_id)
        self.mark_dirty()

    async def preempt(self, upload: UploadRecord) -> None:
        """Stop whatever runs on the upload and drop its queue (2.0 delete)."""
        task = self._workers.pop(upload.upload_id, None)
        upload.jobs.clear()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _set_pending(self, upload: UploadRecord, job: Job) -> None:
        name = self.process_name(job.kind)
        upload.current_process = name
        upload.process_status = "PENDING"
        if not self.config.is_v2:
            # NOMAD: 2.0 keeps the previous message while a workflow is pending.
            upload.last_status_message = f"Pending: {name}"
        upload.errors = []
        upload.warnings = []

    def _set(self, upload: UploadRecord, status: str, message: str) -> None:
        upload.process_status = status
        upload.last_status_message = message
        self.mark_dirty()

    # -- processing ----------------------------------------------------------

    def _ensure_worker(self, upload_id: str) -> None:
        if self._stopping:
            return
        task = self._workers.get(upload_id)
        if task is None or task.done():
            loop = asyncio.get_running_loop()
            self._workers[upload_id] = loop.create_task(self._work(upload_id))

    async def _work(self, upload_id: str) -> None:
        try:
            while True:
                upload = self._uploads.get(upload_id)
                if upload is None or not upload.jobs:
                    return
                job = upload.jobs[0]
                if upload.process_status != "PENDING" or upload.current_process != (
                    self.process_name(job.kind)
                ):
                    self._set_pending(upload, job)
                try:
                    ok = await self._run(upload, job)
                except BadArchiveError as exc:
                    ok = self._fail(upload, job, self._bad_archive_error(exc))
                except Exception as exc:
                    logger.exception("processing of upload %s crashed", upload_id)
                    ok = self._fail(upload, job, f"{type(exc).__name__}: {exc}")
                if upload_id not in self._uploads:
                    return
                if upload.jobs and upload.jobs[0] is job:
                    upload.jobs.pop(0)
                if not ok:
                    # NOMAD: queued processes are discarded when a process fails.
                    upload.jobs.clear()
                elif upload.jobs:
                    self._set_pending(upload, upload.jobs[0])
                self.mark_dirty()
                self._notify()
        finally:
            if self._workers.get(upload_id) is asyncio.current_task():
                del self._workers[upload_id]
            self._notify()

    def _bad_archive_error(self, exc: BadArchiveError) -> str:
        # NOMAD: 1.3 reports an AssertionError from its extraction helper; 2.0 checks the
        # archive first and raises ValueError('Bad archive.').
        if self.config.is_v2:
            return "ValueError: Bad archive." if exc.unreadable else f"ValueError: {exc}"
        return f"AssertionError: {exc}"

    def _succeed(self, upload: UploadRecord, job: Job) -> bool:
        name = self.process_name(job.kind)
        upload.process_status = "SUCCESS"
        upload.complete_time = utcnow()
        if self.config.is_v2:
            upload.last_status_message = "Process completed successfully"
        elif upload.warnings:
            upload.last_status_message = f"Process {name} completed with warnings"
        else:
            upload.last_status_message = f"Process {name} completed successfully"
        return True

    def _fail(self, upload: UploadRecord, job: Job, error: str) -> bool:
        name = self.process_name(job.kind)
        upload.process_status = "FAILURE"
        upload.errors = [error]
        upload.complete_time = utcnow()
        upload.last_status_message = f"Process {name} failed: {error}"
        return False

    async def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _sleep_until(self, deadline: float) -> None:
        await self._sleep(deadline - asyncio.get_running_loop().time())

    async def _run(self, upload: UploadRecord, job: Job) -> bool:
        name = self.process_name(job.kind)
        self._set(upload, "RUNNING", f"Started: {name}")
        if job.kind == "process":
            return await self._process_upload(upload, job)
        if job.kind == "edit":
            await self._sleep(self.config.edit_time)
            self.apply_edit(upload, job.params)
            return self._succeed(upload, job)
        if job.kind == "publish":
            await self._sleep(self.config.publish_time)
            self._publish(upload, job.params.get("embargo_length"))
            return self._succeed(upload, job)
        if job.kind == "delete":
            await self._sleep(self.config.delete_time)
            await self._delete(upload)
            return True
        raise ValueError(f"unknown job kind {job.kind!r}")

    def _publish(self, upload: UploadRecord, embargo_length: int | None) -> None:
        if embargo_length is not None:
            upload.embargo_length = embargo_length
        upload.published = True
        upload.publish_time = utcnow()

    async def _delete(self, upload: UploadRecord) -> None:
        await anyio.to_thread.run_sync(
            lambda: shutil.rmtree(self.upload_dir(upload.upload_id), ignore_errors=True)
        )
        self._uploads.pop(upload.upload_id, None)
        upload.jobs.clear()
        self.mark_dirty()

    async def _process_upload(self, upload: UploadRecord, job: Job) -> bool:
        # The configured durations are deadlines from the start, not sleeps on top of
        # the work: unpacking and matching run inside the entries' time, and timer
        # slack does not add up over many entries.
        start = asyncio.get_running_loop().time()
        parsing = start + self.config.processing_time + self.faults.plan.processing_delay
        await self._sleep_until(parsing)
        upload_id = upload.upload_id
        self._set(upload, "RUNNING", "Adding files")
        staged = list(upload.staged)
        raw_dir = self.raw_dir(upload_id)
        await anyio.to_thread.run_sync(add_files, self.staging_dir(upload_id), staged, raw_dir)
        upload.staged = [name for name in upload.staged if name not in staged]
        self._set(upload, "RUNNING", "Matching")
        result = await anyio.to_thread.run_sync(match_files, raw_dir)
        existing = {entry.mainfile: entry for entry in upload.entries}
        version = self.config.api_version
        entries = []
        fail_entries = {}
        for matched in result.mainfiles:
            entry = existing.get(matched.mainfile)
            if entry is None:
                entry = EntryRecord(
                    entry_id=entry_id_for(upload_id, matched.mainfile),
                    mainfile=matched.mainfile,
                    parser_name=matched.parser.name(version),
                    entry_create_time=utcnow(),
                )
            entry.process_status = "PENDING"
            entry.last_status_message = "Pending: process_entry"
            entry.errors = []
            entries.append(entry)
            fail_entries[entry.entry_id] = matched.fail_entry
        upload.entries = entries
        self._set(upload, "RUNNING", "Parsing level 0")
        self._set(upload, "WAITING_FOR_RESULT", "Waiting for results (level 0)")
        per_entry = self.config.time_per_entry
        for done, entry in enumerate(entries, start=1):
            entry.process_status = "RUNNING"
            entry.last_status_message = "Started: process_entry"
            if per_entry > 0:
                await self._sleep_until(parsing + done * per_entry)
            failed = fail_entries[entry.entry_id] or self.faults.fail_entry()
            entry.complete_time = utcnow()
            if failed:
                entry.process_status = "FAILURE"
                entry.errors = ["ParserError: The mainfile could not be parsed."]
                entry.last_status_message = (
                    "Process process_entry failed: ParserError: The mainfile could not be parsed."
                )
            else:
                entry.process_status = "SUCCESS"
                # NOMAD: 2.0 leaves the last step's message ("Archiving") on entries.
                entry.last_status_message = (
                    "Archiving"
                    if self.config.is_v2
                    else "Process process_entry completed successfully"
                )
            self.mark_dirty()
        self._set(upload, "RUNNING", "Cleanup")
        first = not upload.processed_once
        upload.processed_once = True
        if result.fail_upload:
            return self._fail(
                upload, job, "RuntimeError: Processing failed on request (NOMAD_BULK_FAIL_UPLOAD)."
            )
        if self.faults.fail_upload():
            return self._fail(upload, job, "RuntimeError: Injected processing failure.")
        if upload.publish_directly and first and entries:
            self._publish(upload, None)
        return self._succeed(upload, job)

    def apply_edit(self, upload: UploadRecord, params: dict[str, Any]) -> None:
        """Apply a validated edit (see the app's edit handler for the shape)."""
        for key, value in params.get("upload", {}).items():
            if key in ("coauthors", "reviewers"):
                setattr(upload, key, _apply_op(getattr(upload, key), value))
            else:
                setattr(upload, key, value)
        all_entries = params.get("entries_all", {})
        per_entry: dict[str, dict[str, Any]] = params.get("entries", {})
        for entry in upload.entries:
            for changes in (all_entries, per_entry.get(entry.entry_id, {})):
                for key, value in changes.items():
                    if key in ("datasets", "references"):
                        setattr(entry, key, _apply_op(getattr(entry, key), value))
                    else:
                        setattr(entry, key, value)
        self.mark_dirty()

    # -- waiting ---------------------------------------------------------------

    def _notify(self) -> None:
        old, self._changed = self._changed, asyncio.Event()
        old.set()

    async def wait_idle(self, upload_id: str) -> None:
        """Wait until the upload runs nothing (or is gone)."""
        while True:
            upload = self._uploads.get(upload_id)
            if upload is None or (not upload.jobs and not upload.process_running):
                return
            await self._changed.wait()

    # -- lifecycle and persistence ----------------------------------------------

    async def start(self) -> None:
        """Start workers for jobs that were in flight when the state was saved."""
        self._stopping = False
        self._changed = asyncio.Event()
        for upload in self._uploads.values():
            if upload.jobs:
                self._set_pending(upload, upload.jobs[0])
                self._ensure_worker(upload.upload_id)
            elif upload.process_running:
                # A process that left no job behind cannot resume: settle it.
                self._fail(upload, Job("process"), "RuntimeError: Interrupted by a restart.")

    async def stop(self) -> None:
        """Cancel processing (jobs stay recorded so a reload resumes them) and save."""
        self._stopping = True
        tasks = list(self._workers.values())
        self._workers.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.save()

    def mark_dirty(self) -> None:
        """Schedule a save of the state (coalesced; no-op without a data_dir)."""
        if not self.persistent or self._save_scheduled:
            return
        self._save_scheduled = True
        try:
            asyncio.get_running_loop().call_soon(self.save)
        except RuntimeError:
            self.save()

    def _state_file(self) -> Path:
        return self.root / "state.json"

    def save(self) -> None:
        """Write the state to ``state.json`` atomically (only with a data_dir)."""
        self._save_scheduled = False
        if not self.persistent:
            return
        data = {
            "format": 1,
            "api_version": self.config.api_version,
            "secret": self.signer_secret_hex,
            "uploads": [u.to_json() for u in self._uploads.values()],
            "datasets": [d.to_json() for d in self._datasets.values()],
        }
        path = self._state_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)

    def _load(self) -> bytes:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self._state_file()
        if not self.persistent or not path.exists():
            secret = secrets.token_bytes(32)
            self.signer_secret_hex = secret.hex()
            return secret
        data = json.loads(path.read_text(encoding="utf-8"))
        for raw in data.get("uploads", []):
            upload = UploadRecord.from_json(raw)
            self._uploads[upload.upload_id] = upload
        for raw in data.get("datasets", []):
            dataset = DatasetRecord.from_json(raw)
            self._datasets[dataset.dataset_id] = dataset
        self.signer_secret_hex = str(data["secret"])
        return bytes.fromhex(self.signer_secret_hex)


def _apply_op(current: list[str], op: dict[str, list[str]]) -> list[str]:
    if "set" in op:
        return list(dict.fromkeys(op["set"]))
    result = [v for v in current if v not in op.get("remove", [])]
    for value in op.get("add", []):
        if value not in result:
            result.append(value)
    return result


#: Parser names of both generations, for ``/info``.
PARSER_NAMES = tuple(p.name_v1 for p in PARSERS)
