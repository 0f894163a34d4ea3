"""The per-upload stage coroutine and the worker pool that runs it.

A feeder reads pending groups from the journal page by page into a bounded
memory stream; a fixed pool of workers takes them one at a time through::

    reconcile? -> pack -> slot -> intent -> POST -> poll -> verify -> edit -> poll
               -> publish (opt-in) -> poll -> done

Every durable transition is awaited (shielded) before the next stage starts.
Item-level errors (API answers, processing failures, packing problems) are
recorded and the run goes on; run-level errors (credentials, configuration,
journal) cancel the pool and are raised by :meth:`Pipeline.run`.
"""

from __future__ import annotations

import contextlib
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..client import NomadClient
from ..errors import (
    AlreadyPublishedError,
    ApiError,
    AuthError,
    ConfigError,
    JournalError,
    NomadBulkError,
    NotFoundError,
    OutcomeUnknownError,
    PackingError,
    ProcessingError,
    ProcessingTimeoutError,
    TooLargeError,
    TransportError,
    UploadLimitError,
    ValidationError,
)
from ..journal import AsyncJournal, GroupRecord, ItemRecord
from ..models import Entry, ProcessStatus, Upload
from ..packing import PackedUpload, pack_group
from ._backoff import DurationEstimator, poll_delays
from .events import BytesSent, EventBus, GroupFailed, Notice, Stage, StageChanged
from .limits import ByteBudget, SlotsExhaustedError, UploadSlots
from .options import Metadata, RunOptions, format_size
from .plan import group_from_records, is_done, needs_edit

__all__ = ["GroupJob", "Pipeline"]

_log = logging.getLogger("nomad_bulk.engine")

#: Errors that stop the whole run: every other upload would fail the same way.
_FATAL = (AuthError, ConfigError, JournalError)
#: Emit a BytesSent event at most every this many bytes of one body.
_PROGRESS_STEP = 256 * 1024
#: How often one group may POST before it gives up for this run.
_MAX_POSTS = 3


class _Deferred(Exception):
    """No upload slot is left for this group in this run."""


class _GroupFailure(Exception):
    """The group failed; recorded, reported, and retried by the next run."""

    def __init__(
        self,
        stage: Stage,
        message: str,
        *,
        discard: bool,
        item_messages: Mapping[str, str] | None = None,
        isolate: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.discard = discard
        self.item_messages = dict(item_messages or {})
        self.isolate = tuple(isolate)


class _Hold(enum.Enum):
    NONE = 0
    POOL = 1  # a slot taken from this run's pool
    EXTERNAL = 2  # an upload held since an earlier run


class _Slot:
    """The unpublished-upload slot one group holds, and how it ends."""

    __slots__ = ("hold", "slots")

    def __init__(self, slots: UploadSlots, hold: _Hold) -> None:
        self.slots = slots
        self.hold = hold

    def release(self) -> None:
        """The upload was published or deleted: its slot is free again."""
        if self.hold is _Hold.POOL:
            self.slots.release()
        elif self.hold is _Hold.EXTERNAL:
            self.slots.add()
        self.hold = _Hold.NONE

    def keep(self) -> None:
        """The upload stays unpublished on the server."""
        if self.hold is _Hold.POOL:
            self.slots.keep()
        elif self.hold is _Hold.EXTERNAL:
            self.slots.drop_releaser()
        self.hold = _Hold.NONE

    def lost(self) -> None:
        """An upload believed held turned out not to exist (or vanished)."""
        if self.hold is _Hold.POOL:
            self.slots.release()
        elif self.hold is _Hold.EXTERNAL:
            # It may not have been counted as held at pre-flight: free nothing.
            self.slots.drop_releaser()
        self.hold = _Hold.NONE


@dataclass(slots=True)
class GroupJob:
    """One group on its way through the pipeline."""

    record: GroupRecord
    items: list[ItemRecord]
    mainfiles: dict[str, tuple[str, ...]] = field(default_factory=dict)
    meta_digest: str | None = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The calculation keys of the group."""
        return tuple(item.key for item in self.items)


def _server_text(exc: BaseException) -> str:
    if isinstance(exc, ApiError) and exc.server_message:
        return exc.server_message
    return str(exc)


def _entry_problem(entry: Entry) -> str:
    return "; ".join(entry.errors) or entry.last_status_message or "no message"


def _upload_problem(upload: Upload) -> str:
    return (
        "; ".join(upload.errors)
        or upload.last_status_message
        or f"status {upload.process_status.value}"
    )


class Pipeline:
    """Runs every pending group of a journal through the stages, within the limits."""

    def __init__(
        self,
        *,
        client: NomadClient,
        journal: AsyncJournal,
        root: Path,
        options: RunOptions,
        metadata: Metadata,
        bus: EventBus,
        slots: UploadSlots,
        transfers: anyio.CapacityLimiter,
        spool_dir: Path,
        spool: ByteBudget,
        workers: int,
        estimator: DurationEstimator | None = None,
    ) -> None:
        self.client = client
        self.journal = journal
        self.root = root
        self.options = options
        self.metadata = metadata
        self.bus = bus
        self.slots = slots
        self.transfers = transfers
        self.spool_dir = spool_dir
        self.spool = spool
        self.workers = workers
        self.estimator = estimator or DurationEstimator()
        self.pack_limiter = anyio.CapacityLimiter(options.pack_threads)
        self._fatal: NomadBulkError | None = None
        self._cancel: anyio.CancelScope | None = None
        #: Groups left unstarted because no upload slot was left.
        self.deferred = 0

    # -- the pool ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Process every pending group; raise the first run-level error, if any."""
        send, receive = anyio.create_memory_object_stream[GroupJob](max_buffer_size=self.workers)
        async with anyio.create_task_group() as tg:
            self._cancel = tg.cancel_scope
            tg.start_soon(self._feed, send)
            async with receive:
                for _ in range(self.workers):
                    tg.start_soon(self._worker, receive.clone())
        if self._fatal is not None:
            raise self._fatal

    async def _feed(self, send: MemoryObjectSendStream[GroupJob]) -> None:
        j = self.journal
        async with send:
            last = 0
            while True:
                batch = await j.call(j.journal.groups_after, last, 256)
                if not batch:
                    return
                for record in batch:
                    last = record.seq
                    if is_done(record, publish=self.options.publish, metadata=self.metadata):
                        continue
                    if record.stage == "planned" and self.slots.exhausted:
                        self.deferred += 1
                        continue
                    items = await j.call(j.journal.group_items, record.seq)
                    mainfiles = {i.key: i.upload_mainfiles for i in items if i.upload_mainfiles}
                    job = GroupJob(record, items, mainfiles, record.meta_digest)
                    await send.send(job)

    async def _worker(self, receive: MemoryObjectReceiveStream[GroupJob]) -> None:
        async with receive:
            async for job in receive:
                try:
                    await self._process(job)
                except _FATAL as exc:
                    if self._fatal is None:
                        self._fatal = exc
                    if self._cancel is not None:
                        self._cancel.cancel()
                    return

    # -- helpers ----------------------------------------------------------------------------

    def _stage(self, job: GroupJob, stage: Stage, upload_id: str | None = None) -> None:
        record = job.record
        self.bus.emit(
            StageChanged(
                group=record.key,
                items=job.keys,
                stage=stage,
                upload_id=upload_id,
                upload_name=record.upload_name,
                size=record.size,
            )
        )

    # -- one group --------------------------------------------------------------------------

    async def _process(self, job: GroupJob) -> None:
        record = job.record
        jr = self.journal.journal
        slot = _Slot(self.slots, _Hold.EXTERNAL if record.has_upload else _Hold.NONE)
        stage = record.stage
        upload_id = record.upload_id
        posted = False  # POSTed in this run: its processing time is worth learning from
        try:
            if record.failed:
                await self.journal.durable(jr.clear_failure, record.seq)
            if stage == "posting":
                upload_id = await self._reconcile(job)
                if upload_id is None:
                    slot.lost()
                    stage = "planned"
                else:
                    stage = "uploaded"
            if stage == "planned":
                if self.slots.exhausted:
                    raise _Deferred
                upload_id = await self._pack_and_post(job, slot)
                posted = True
                stage = "uploaded"
            if upload_id is None:  # pragma: no cover - the journal never stores this
                raise JournalError(f"the journal lost the upload id of group {record.key}")
            if stage == "uploaded":
                if not posted:
                    self._stage(job, Stage.PROCESSING, upload_id)
                upload = await self._wait(
                    upload_id, "process", job, Stage.PROCESSING, observe=posted
                )
                entry_ids = await self._verify(job, upload_id, upload)
                await self.journal.durable(jr.set_verified, record.seq, entry_ids)
                stage = "verified"
            if stage == "publishing":
                await self._resume_publish(job, upload_id, slot)
                stage = "published"
            if stage in ("verified", "described", "published"):
                current = _with_digest(record, job.meta_digest)
                if needs_edit(current, self.metadata):
                    await self._describe(job, upload_id, published=stage == "published")
                elif stage == "verified":
                    await self.journal.durable(jr.set_described, record.seq, self.metadata.digest)
                if stage == "verified":
                    stage = "described"
            if stage == "described" and self.options.publish:
                await self._publish(job, upload_id, slot)
                stage = "published"
            if stage != "published":
                slot.keep()
            self._stage(job, Stage.DONE, upload_id)
        except _Deferred:
            slot.keep()
            self.deferred += 1
            self._stage(job, Stage.DEFERRED)
        except _GroupFailure as known:
            await self._fail(job, upload_id, slot, known)
        except _FATAL:
            slot.keep()
            raise
        except NotFoundError as exc:
            if upload_id is None:
                await self._fail(
                    job, None, slot, _GroupFailure(Stage.FAILED, _server_text(exc), discard=False)
                )
                return
            # Deleted on the server meanwhile (in the web GUI, say): start it over.
            slot.lost()
            await self.journal.durable(jr.reset, record.seq)
            vanished = _GroupFailure(
                Stage.FAILED,
                f"the upload {upload_id} no longer exists on NOMAD ({_server_text(exc)}); "
                "the next run uploads it again",
                discard=False,
            )
            await self._fail(job, None, slot, vanished)
        except (ApiError, TransportError, ProcessingError, OutcomeUnknownError) as exc:
            # Anything else NOMAD answered: the upload (if any) is kept and the next
            # run resumes from the last durable stage.
            other = _GroupFailure(Stage.FAILED, _server_text(exc), discard=False)
            await self._fail(job, upload_id, slot, other)

    async def _fail(
        self, job: GroupJob, upload_id: str | None, slot: _Slot, failure: _GroupFailure
    ) -> None:
        record = job.record
        jr = self.journal.journal
        await self.journal.durable(
            jr.set_failed,
            record.seq,
            stage=failure.stage.value,
            message=failure.message,
            discard=failure.discard,
            item_messages=failure.item_messages,
        )
        if failure.isolate:
            await self.journal.durable(jr.isolate, list(failure.isolate))
        self.bus.emit(
            GroupFailed(
                group=record.key,
                items=job.keys,
                stage=failure.stage,
                message=failure.message,
                upload_id=upload_id,
            )
        )
        if not (failure.discard and upload_id and not self.options.keep_failed):
            slot.keep()
            return
        # A failed upload is deleted so that it frees its slot; its messages are
        # in the journal and the manifest, and the next run uploads it again.
        self._stage(job, Stage.DELETING, upload_id)
        try:
            await self.client.delete_upload(
                upload_id, wait=True, timeout=self.options.processing_timeout
            )
        except NotFoundError:
            pass
        except _FATAL:
            slot.keep()
            raise
        except (ApiError, TransportError, ProcessingError) as exc:
            _log.warning("could not delete failed upload %s: %s", upload_id, exc)
            self.bus.emit(
                Notice(
                    f"could not delete the failed upload {upload_id} ({_server_text(exc)}); "
                    "the next run deletes it before retrying"
                )
            )
            slot.keep()
            return
        await self.journal.durable(jr.set_deleted, record.seq)
        slot.release()

    # -- stages -----------------------------------------------------------------------------

    async def _reconcile(self, job: GroupJob) -> str | None:
        """Find the upload of a POST whose answer never reached the journal."""
        record = job.record
        self._stage(job, Stage.RECONCILING)
        found = await self.client.find_uploads(record.upload_name)
        if not found:
            return None

        def rank(upload: Upload) -> tuple[int, int, float]:
            created = upload.upload_create_time
            return (
                0 if upload.published else 1,
                1 if upload.failed else 0,
                created.timestamp() if created is not None else 0.0,
            )

        keep, *extras = sorted(found, key=rank)
        for extra in extras:
            # Names are not unique on NOMAD: an earlier attempt made a twin. The
            # twin is deleted; its slot is not counted as free (it may be ours).
            with contextlib.suppress(NotFoundError):
                await self.client.delete_upload(
                    extra.upload_id, wait=True, timeout=self.options.processing_timeout
                )
            self.bus.emit(
                Notice(f"deleted {extra.upload_id}, a duplicate upload of {record.label}")
            )
        await self.journal.durable(self.journal.journal.set_uploaded, record.seq, keep.upload_id)
        return keep.upload_id

    async def _pack(self, job: GroupJob) -> PackedUpload:
        group = group_from_records(self.root, job.record, job.items)
        self._stage(job, Stage.PACKING)
        try:
            return await anyio.to_thread.run_sync(
                pack_group, group, self.spool_dir, limiter=self.pack_limiter
            )
        except PackingError as exc:
            raise _GroupFailure(Stage.PACKING, str(exc), discard=False) from exc

    async def _pack_and_post(self, job: GroupJob, slot: _Slot) -> str:
        record = job.record
        jr = self.journal.journal
        group_as_is = len(job.items) == 1 and bool(job.items[0].calc.get("ready_zip"))
        reserved = await self.spool.acquire(0 if group_as_is else record.size)
        packed: PackedUpload | None = None
        try:
            packed = await self._pack(job)
            if not packed.owned:
                self.spool.release(reserved)
                reserved = 0
            job.mainfiles = {k: tuple(v) for k, v in packed.mainfiles.items()}
            posts = 0
            while True:
                if slot.hold is _Hold.NONE:
                    self._stage(job, Stage.WAITING)
                    try:
                        await self.slots.acquire()
                    except SlotsExhaustedError:
                        raise _Deferred from None
                    slot.hold = _Hold.POOL
                posts += 1
                await self.journal.durable(
                    jr.set_intent,
                    record.seq,
                    file_name=packed.file_name,
                    sha256=packed.sha256,
                    packed_size=packed.size,
                    mainfiles=job.mainfiles,
                )
                try:
                    upload = await self._post(job, packed)
                except UploadLimitError:
                    # Someone else (another client, the web GUI) took a slot we
                    # counted as free: NOMAD created nothing, so wait for one of ours.
                    self.slots.shrink()
                    slot.hold = _Hold.NONE
                    await self.journal.durable(jr.reset, record.seq)
                    self.bus.emit(
                        Notice(
                            "NOMAD refused a new upload: the limit of unpublished uploads "
                            "is reached (another client holds one); waiting for a free slot"
                        )
                    )
                    continue
                except OutcomeUnknownError as exc:
                    found = await self._reconcile(job)
                    if found is not None:
                        return found
                    if posts >= _MAX_POSTS:
                        raise _GroupFailure(Stage.UPLOADING, str(exc), discard=False) from exc
                    continue
                except _FATAL:
                    raise
                except (ApiError, TransportError) as exc:
                    # A definite answer (or no connection at all before the body
                    # left): NOMAD created nothing, so the slot is free again.
                    slot.release()
                    await self.journal.durable(jr.reset, record.seq)
                    advice = ""
                    if isinstance(exc, TooLargeError):
                        advice = (
                            f"; the server takes less than {format_size(packed.size)} in one "
                            "upload: lower --max-upload-size (and --max-per-upload), or split "
                            "the folder"
                        )
                    raise _GroupFailure(
                        Stage.UPLOADING,
                        f"NOMAD refused the upload: {_server_text(exc)}{advice}",
                        discard=False,
                    ) from exc
                await self.journal.durable(jr.set_uploaded, record.seq, upload.upload_id)
                return upload.upload_id
        finally:
            if packed is not None and packed.owned:
                with contextlib.suppress(OSError):
                    packed.path.unlink()
            if reserved:
                self.spool.release(reserved)

    async def _post(self, job: GroupJob, packed: PackedUpload) -> Upload:
        record = job.record
        last = 0

        def progress(sent: int, total: int) -> None:
            nonlocal last
            if sent - last >= _PROGRESS_STEP or sent >= total:
                last = sent
                self.bus.emit(BytesSent(group=record.key, sent=sent, total=total))

        async with self.transfers:
            self._stage(job, Stage.UPLOADING)
            upload = await self.client.create_upload(
                packed.path,
                file_name=packed.file_name,
                upload_name=record.upload_name,
                embargo_length=self.options.embargo,
                on_progress=progress,
            )
            # Still inside the transfer limit: observers see transfers end in order.
            self._stage(job, Stage.PROCESSING, upload.upload_id)
        return upload

    async def _wait(
        self,
        upload_id: str,
        kind: str,
        job: GroupJob,
        stage: Stage,
        *,
        initial: Upload | None = None,
        observe: bool = True,
    ) -> Upload:
        """Poll until NOMAD's current process on the upload has finished."""
        if initial is not None and not initial.process_running:
            return initial
        units = max(1, job.record.expected_entries)
        delays = poll_delays(self.options.poll, expected=self.estimator.expected(kind, units))
        started = anyio.current_time()
        timeout = self.options.processing_timeout
        with anyio.move_on_after(timeout):
            running_at = 0.0
            while True:
                await anyio.sleep(next(delays))
                asked = anyio.current_time() - started
                upload = await self.client.get_upload(upload_id)
                if not upload.process_running:
                    if observe:
                        # It ended between the last poll that saw it running and
                        # this one: the midpoint is the unbiased guess.
                        self.estimator.observe(kind, (running_at + asked) / 2, units)
                    return upload
                running_at = asked
        raise _GroupFailure(
            stage,
            str(
                ProcessingTimeoutError(
                    f"NOMAD did not finish the {kind} of upload {upload_id} within "
                    f"{timeout:.0f} s; re-run later to keep waiting",
                    upload_id=upload_id,
                )
            ),
            discard=False,
        )

    async def _verify(
        self, job: GroupJob, upload_id: str, upload: Upload
    ) -> dict[str, tuple[str, ...]]:
        """Check processing and entries; map every calculation to its entry ids."""
        self._stage(job, Stage.VERIFYING, upload_id)
        if upload.process_status is not ProcessStatus.SUCCESS:
            # NOMAD does not say which calculation broke a packed upload: a re-run
            # uploads each on its own, so that the culprit cannot hold back the others.
            raise _GroupFailure(
                Stage.PROCESSING,
                f"NOMAD could not process the upload: {_upload_problem(upload)}",
                discard=True,
                isolate=job.keys if len(job.items) > 1 else (),
            )
        entries = await self.client.get_entries(upload_id)
        by_file = {entry.mainfile: entry for entry in entries if entry.mainfile}
        entry_ids: dict[str, tuple[str, ...]] = {}
        problems: dict[str, str] = {}
        predicted = 0
        for item in job.items:
            ids: list[str] = []
            notes: list[str] = []
            for mainfile in job.mainfiles.get(item.key, ()):
                predicted += 1
                entry = by_file.pop(mainfile, None)
                if entry is None:
                    notes.append(f"NOMAD made no entry for {mainfile}")
                    continue
                ids.append(entry.entry_id)
                if entry.failed:
                    notes.append(
                        f"entry {entry.entry_id} ({mainfile}) failed: {_entry_problem(entry)}"
                    )
            entry_ids[item.key] = tuple(ids)
            if notes:
                problems[item.key] = "; ".join(notes)
        for mainfile in sorted(by_file):
            owner = next(
                (i.key for i in job.items if mainfile.startswith(i.key.rstrip("/") + "/")), None
            )
            note = f"NOMAD made an entry nobody predicted: {mainfile}"
            if owner is not None:
                problems[owner] = f"{problems[owner]}; {note}" if owner in problems else note
            else:
                problems.setdefault(job.items[0].key, note)
        if not problems and len(entries) == predicted:
            return entry_ids
        if len(job.items) == 1:
            message = problems.get(job.items[0].key) or (
                f"NOMAD made {len(entries)} entries, {predicted} were predicted"
            )
            raise _GroupFailure(
                Stage.VERIFYING, message, discard=True, item_messages={job.items[0].key: message}
            )
        bad = sorted(problems)
        shown = ", ".join(bad[:5]) + (" …" if len(bad) > 5 else "")
        message = (
            f"{len(bad)} of {len(job.items)} calculations in this upload have failed or missing "
            f"entries ({shown}); nothing of it is published. A re-run uploads those alone."
        )
        item_messages = {
            item.key: problems.get(item.key)
            or f"not published: other calculations in the same upload failed ({shown})"
            for item in job.items
        }
        raise _GroupFailure(
            Stage.VERIFYING, message, discard=True, item_messages=item_messages, isolate=bad
        )

    async def _describe(self, job: GroupJob, upload_id: str, *, published: bool) -> None:
        """Edit the upload's metadata and wait for NOMAD to apply it."""
        record = job.record
        meta = self.metadata
        self._stage(job, Stage.EDITING, upload_id)
        try:
            upload = await self.client.edit_upload(
                upload_id,
                upload_name=record.upload_name,
                datasets=[meta.dataset_id] if meta.dataset_id else None,
                coauthors=list(meta.coauthors) or None,
                references=list(meta.references) or None,
                comment=meta.comment,
                # NOMAD: on a published upload the embargo can only be lifted.
                embargo_length=meta.embargo if meta.embargo and not published else None,
            )
        except ValidationError as exc:
            if not any(loc[:1] == ("metadata",) for loc in exc.locations):
                raise
            raise ConfigError(
                f"NOMAD refused the metadata of upload {upload_id}: {_server_text(exc)}; "
                "fix --dataset/--coauthor/--reference/--comment/--embargo and run again"
            ) from exc
        upload = await self._wait(upload_id, "edit", job, Stage.EDITING, initial=upload)
        if upload.process_status is ProcessStatus.FAILURE:
            raise _GroupFailure(
                Stage.EDITING,
                f"NOMAD could not apply the metadata: {_upload_problem(upload)}",
                discard=False,
            )
        jr = self.journal.journal
        if published:
            await self.journal.durable(jr.set_meta_digest, record.seq, meta.digest)
        else:
            await self.journal.durable(jr.set_described, record.seq, meta.digest)
        job.meta_digest = meta.digest

    async def _publish(self, job: GroupJob, upload_id: str, slot: _Slot) -> None:
        record = job.record
        self._stage(job, Stage.PUBLISHING, upload_id)
        await self.journal.durable(self.journal.journal.set_publishing, record.seq)
        try:
            upload = await self.client.publish_upload(upload_id)
        except AlreadyPublishedError:
            upload = await self.client.get_upload(upload_id)
        except _FATAL:
            raise
        except ApiError as exc:
            raise _GroupFailure(
                Stage.PUBLISHING, f"NOMAD refused to publish: {_server_text(exc)}", discard=False
            ) from exc
        await self._finish_publish(job, upload_id, slot, upload)

    async def _resume_publish(self, job: GroupJob, upload_id: str, slot: _Slot) -> None:
        upload = await self.client.get_upload(upload_id)
        if upload.published or upload.process_running:
            await self._finish_publish(job, upload_id, slot, upload, observe=False)
        else:
            # The publish request of an earlier run may never have arrived.
            await self._publish(job, upload_id, slot)

    async def _finish_publish(
        self, job: GroupJob, upload_id: str, slot: _Slot, upload: Upload, *, observe: bool = True
    ) -> None:
        if not upload.published:
            upload = await self._wait(
                upload_id, "publish", job, Stage.PUBLISHING, initial=upload, observe=observe
            )
        if not upload.published:
            raise _GroupFailure(
                Stage.PUBLISHING,
                f"NOMAD did not publish the upload: {_upload_problem(upload)}",
                discard=False,
            )
        await self.journal.durable(self.journal.journal.set_published, job.record.seq)
        slot.release()


def _with_digest(record: GroupRecord, digest: str | None) -> GroupRecord:
    return record if record.meta_digest == digest else replace(record, meta_digest=digest)
