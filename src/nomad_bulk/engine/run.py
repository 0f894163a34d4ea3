"""``run_upload``: pre-flight, plan, pipeline, report and manifest of one run."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import anyio.to_thread

from ..client import NomadClient
from ..config import Settings, sanitize_url
from ..errors import (
    ApiError,
    ConfigError,
    NomadBulkError,
    NotFoundError,
    ProcessingError,
    TransportError,
)
from ..journal import AsyncJournal, Journal, RunIdentity, default_journal_path, private_dirs
from ._backoff import DurationEstimator
from .events import EventBus, Notice, Observer, PlanReady, RunFinished, RunStarted, Throttled
from .limits import AdaptiveController, ByteBudget, RateLimiter, UploadSlots
from .options import Metadata, RunOptions
from .pipeline import Pipeline
from .plan import Plan, PlanCounts, is_done, plan_into_journal
from .report import RunReport, build_items, manifest_data, write_manifest

__all__ = ["MANIFEST_NAME", "Confirm", "run_upload"]

_log = logging.getLogger("nomad_bulk.engine")

#: The manifest's file name next to the journal (the tutorial's name).
MANIFEST_NAME = "PIDs.json"
#: Stand-in dataset id while planning, before a missing dataset is created.
_NEW_DATASET = "<new dataset>"

#: Asked after pre-flight, before the first byte is sent; False cancels the run.
Confirm = Callable[[Plan], Awaitable[bool]]


@dataclass(slots=True)
class _Preflight:
    user: str | None = None
    is_admin: bool = False
    server_version: str | None = None
    held: int | None = None
    dataset_id: str | None = None
    coauthors: tuple[str, ...] = ()
    coauthor_names: tuple[str, ...] = ()


@dataclass(slots=True)
class _Tally:
    total: int = 0
    done: int = 0
    new: int = 0
    resumed: int = 0
    retried: int = 0
    items: int = 0
    bytes: int = 0
    releasers: int = 0


def _tally(journal: Journal, options: RunOptions, metadata: Metadata) -> _Tally:
    tally = _Tally()
    for record in journal.iter_groups():
        tally.total += 1
        if is_done(record, publish=options.publish, metadata=metadata):
            tally.done += 1
            continue
        tally.items += record.n_items
        if record.failed:
            tally.retried += 1
        elif record.stage == "planned":
            tally.new += 1
            tally.bytes += record.size
        else:
            tally.resumed += 1
        if record.has_upload:
            tally.releasers += 1
    return tally


def _last_run(options: RunOptions, metadata: Metadata) -> str:
    # What `nomad-bulk status` needs to judge the journal as this run did.
    return json.dumps(
        {
            "publish": options.publish,
            "started": time.time(),
            "metadata": {
                "dataset_id": metadata.dataset_id,
                "coauthors": list(metadata.coauthors),
                "references": list(metadata.references),
                "comment": metadata.comment,
                "embargo": metadata.embargo,
            },
        }
    )


def _leaf(exc: BaseException) -> BaseException:
    while True:
        inner = getattr(exc, "exceptions", None)
        if not inner:
            return exc
        exc = next((e for e in inner if isinstance(e, NomadBulkError)), inner[0])


async def _all_of(steps: Sequence[Callable[[], Awaitable[None]]]) -> None:
    """Run independent steps concurrently; raise the failure of the earliest one.

    No step is cancelled for another's failure, so the exception raised is
    the one the steps run one after the other would have raised (a single
    exception, never a group), whichever failed first in time.
    """
    failures: dict[int, Exception] = {}

    async def run(index: int, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception as exc:
            failures[index] = exc

    async with anyio.create_task_group() as tg:
        for index, step in enumerate(steps):
            tg.start_soon(run, index, step)
    if failures:
        raise failures[min(failures)]


def _spool_budget(options: RunOptions, spool_dir: Path) -> int:
    if options.spool_max_bytes is not None:
        return options.spool_max_bytes
    try:
        free = shutil.disk_usage(spool_dir).free
    except OSError:
        free = options.max_upload_size
    wanted = (options.transfers + 2) * options.max_upload_size
    return max(1, min(wanted, free // 2))


def _check_root(root: Path) -> Path:
    path = root.expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path} is not a folder; give the folder holding the calculations")
    return path.resolve()


def _clean_spool(spool_dir: Path) -> None:
    # The spool directory is ours alone: leftovers of a killed run go.
    private_dirs(spool_dir)
    for leftover in spool_dir.iterdir():
        if leftover.is_file():
            with contextlib.suppress(OSError):
                leftover.unlink()


async def run_upload(
    root: str | Path,
    *,
    client: NomadClient | None = None,
    settings: Settings | None = None,
    options: RunOptions | None = None,
    observers: Iterable[Observer] = (),
    journal_path: str | Path | None = None,
    manifest_path: str | Path | None = None,
    confirm: Confirm | None = None,
) -> RunReport:
    """Upload every calculation folder under ``root`` to NOMAD; resumable.

    Pre-flight checks the server, the account, the upload slots, the dataset
    and the coauthors before the first byte is sent; ``options.dry_run`` stops
    there and returns the plan. The run is recorded in a journal (default
    ``<root>/.nomad-bulk/journal.sqlite``): calling again with the same root and
    deployment resumes. The manifest (default ``PIDs.json`` next to the journal)
    is rewritten at the end, also after an interruption.

    ``client`` gets this run's request-rate limit and adaptive throttling for
    the duration of the run, on top of its own hooks; otherwise a client is made
    from ``settings`` with them. Without ``settings`` the environment (``NOMAD_URL``,
    ``NOMAD_USERNAME``, ``NOMAD_PASSWORD``, ``NOMAD_TOKEN``) is read, but no
    ``.env`` file: pass ``settings=Settings.from_env()`` to read one.
    ``confirm`` is awaited with the plan before anything is sent; returning
    False cancels the run.

    Item failures are reported in the returned :class:`RunReport`. Run-level
    problems raise one exception: :class:`~nomad_bulk.errors.ConfigError`,
    :class:`~nomad_bulk.errors.AuthError`, :class:`~nomad_bulk.errors.JournalError`,
    :class:`~nomad_bulk.errors.TransportError` (server unreachable) or another
    :class:`~nomad_bulk.errors.NomadBulkError`.
    """
    opts = options if options is not None else RunOptions()
    opts.validate()
    root_path = await anyio.to_thread.run_sync(_check_root, Path(root))
    bus = EventBus(observers)
    rate = RateLimiter(
        opts.requests_per_second,
        burst=max(1, round(opts.requests_per_second or 1)),
    )
    transfers = anyio.CapacityLimiter(opts.transfers)

    def throttled(reason: str, rps: float | None, count: int) -> None:
        bus.emit(Throttled(reason=reason, requests_per_second=rps, transfers=count))

    controller = AdaptiveController(rate, transfers, on_change=throttled)
    run = _Run(
        root=root_path,
        options=opts,
        bus=bus,
        transfers=transfers,
        journal_path=Path(journal_path) if journal_path else None,
        manifest_path=Path(manifest_path) if manifest_path else None,
        confirm=confirm,
    )
    try:
        if client is not None:
            with client.hooks(request_gate=rate, on_response=controller.on_response):
                return await run.execute(client, client.settings)
        cfg = settings if settings is not None else Settings.from_env(dotenv=False)
        if opts.dry_run and not cfg.has_credentials:
            return await run.execute(None, cfg)
        if not cfg.has_credentials:
            raise ConfigError(
                "no NOMAD credentials: set NOMAD_USERNAME and NOMAD_PASSWORD (or NOMAD_TOKEN) "
                "in the environment or a .env file, or pass Settings(username=..., password=...)"
            )
        async with NomadClient(cfg, request_gate=rate, on_response=controller.on_response) as nomad:
            return await run.execute(nomad, cfg)
    except NomadBulkError:
        raise
    except Exception as exc:
        leaf = _leaf(exc)
        if leaf is exc:
            raise
        if isinstance(leaf, NomadBulkError):
            raise copy.copy(leaf) from exc
        raise leaf from exc


class _Run:
    """The state of one :func:`run_upload` call."""

    def __init__(
        self,
        *,
        root: Path,
        options: RunOptions,
        bus: EventBus,
        transfers: anyio.CapacityLimiter,
        journal_path: Path | None,
        manifest_path: Path | None,
        confirm: Confirm | None,
    ) -> None:
        self.root = root
        self.options = options
        self.bus = bus
        self.transfers = transfers
        self.journal_path = journal_path or default_journal_path(root)
        self.manifest_path = manifest_path or self.journal_path.parent / MANIFEST_NAME
        self.confirm = confirm
        self.started = time.monotonic()
        self.journal_existed = False

    def _identity(self, url: str) -> RunIdentity:
        o = self.options
        return RunIdentity(
            root=str(self.root),
            url=sanitize_url(url),
            per_upload=o.per_upload,
            max_upload_size=o.max_upload_size,
            max_per_upload=o.max_per_upload,
            pattern=o.pattern,
        )

    async def execute(self, client: NomadClient | None, settings: Settings) -> RunReport:
        opts = self.options
        identity = self._identity(settings.url)
        self.journal_existed = await anyio.to_thread.run_sync(self.journal_path.exists)
        in_memory = opts.dry_run and not self.journal_existed
        journal = await anyio.to_thread.run_sync(
            lambda: Journal.open(
                None if in_memory else self.journal_path, identity=identity, lock=True
            )
        )
        aj = AsyncJournal(journal)
        try:
            return await self._execute(client, aj, identity, settings)
        finally:
            with anyio.CancelScope(shield=True):
                await aj.call(journal.close)

    async def _preflight(self, client: NomadClient, aj: AsyncJournal) -> _Preflight:
        """Check the server, the account, the slots, the dataset and the coauthors.

        The independent requests run concurrently (two round trips after the log-in
        instead of one per request); a failure raises what the same checks made one
        after the other would raise first.
        """
        opts = self.options
        pre = _Preflight()
        user_known = anyio.Event()

        async def server() -> None:
            pre.server_version = (await client.info()).version

        async def account() -> None:
            try:
                me = await client.me()
            finally:
                user_known.set()
            pre.user = me.username or me.name or me.user_id
            pre.is_admin = me.is_admin
            if not opts.dry_run:
                await self._retire_failed(client, aj)
            if not me.is_admin:
                pre.held = await client.count_uploads(roles="main_author", is_published=False)

        async def dataset() -> None:
            # The lookup is by owner: let the client reuse the account's answer.
            await user_known.wait()
            found = await client.find_dataset(opts.dataset or "")
            pre.dataset_id = found.dataset_id if found is not None else None

        async def coauthors() -> None:
            try:
                users = await client.resolve_users(opts.coauthors)
            except NotFoundError as exc:
                raise ConfigError(
                    f"{exc} (from --coauthor); every coauthor needs a NOMAD account"
                ) from exc
            ids: list[str] = []
            names: list[str] = []
            for ref in opts.coauthors:
                user = users.get(ref.strip())
                if user is not None and user.user_id not in ids:
                    ids.append(user.user_id)
                    names.append(f"{user.name or user.username or ref} ({ref})")
            pre.coauthors = tuple(ids)
            pre.coauthor_names = tuple(names)

        steps: list[Callable[[], Awaitable[None]]] = [server, account]
        if opts.dataset:
            steps.append(dataset)
        if opts.coauthors:
            steps.append(coauthors)
        await _all_of(steps)
        return pre

    async def _retire_failed(self, client: NomadClient, aj: AsyncJournal) -> None:
        """Delete uploads that failed on the server in earlier runs, so they can be retried."""
        journal = aj.journal
        for record in await aj.call(journal.discarded_groups):
            if record.has_upload and record.upload_id:
                try:
                    await client.delete_upload(
                        record.upload_id, wait=True, timeout=self.options.processing_timeout
                    )
                except NotFoundError:
                    pass
                except (ApiError, TransportError, ProcessingError) as exc:
                    self.bus.emit(
                        Notice(
                            f"could not delete the failed upload {record.upload_id} "
                            f"({exc}); it is not retried in this run"
                        )
                    )
                    continue
            await aj.durable(journal.reset, record.seq)

    async def _execute(
        self,
        client: NomadClient | None,
        aj: AsyncJournal,
        identity: RunIdentity,
        settings: Settings,
    ) -> RunReport:
        opts = self.options
        journal = aj.journal
        url = sanitize_url(settings.url)
        self.bus.emit(
            RunStarted(root=self.root, url=url, dry_run=opts.dry_run, publish=opts.publish)
        )
        notices: list[str] = []
        pre = _Preflight()
        if client is not None:
            pre = await self._preflight(client, aj)
        else:
            notices.append("no credentials: the server was not checked (dry run only)")
        if await aj.call(journal.grouping_changed, identity):
            notices.append(
                "the grouping options differ from the previous run; they apply to uploads "
                "that have not started yet"
            )
        counts: PlanCounts = await aj.call(
            plan_into_journal, journal, self.root, opts, commit=not opts.dry_run
        )
        if not opts.dry_run:
            await aj.durable(journal.record_grouping, identity)
        planned_dataset = pre.dataset_id or (_NEW_DATASET if opts.dataset else None)
        metadata = Metadata(
            dataset_id=planned_dataset,
            coauthors=pre.coauthors,
            references=opts.references,
            comment=opts.comment,
            embargo=opts.embargo,
        )
        tally = await aj.call(_tally, journal, opts, metadata)
        free: int | None = None
        limit: int | None = None
        if pre.held is not None:
            limit = opts.upload_limit
            free = max(0, limit - pre.held)
        plan = Plan(
            root=self.root,
            url=url,
            journal_path=None
            if opts.dry_run and not self.journal_path.exists()
            else self.journal_path,
            publish=opts.publish,
            per_upload=opts.per_upload,
            max_upload_size=opts.max_upload_size,
            max_per_upload=opts.max_per_upload,
            calculations=counts.calculations,
            skipped=counts.skipped,
            groups_total=tally.total,
            groups_done=tally.done,
            groups_new=tally.new,
            groups_resumed=tally.resumed,
            groups_retried=tally.retried,
            items_to_run=tally.items,
            bytes_to_send=tally.bytes,
            user=pre.user,
            server_version=pre.server_version,
            held_uploads=pre.held,
            upload_limit=limit,
            free_slots=free,
            dataset_name=opts.dataset,
            dataset_id=pre.dataset_id,
            coauthors=pre.coauthor_names,
            notices=tuple(notices) + self._slot_notices(tally, free, pre),
            pattern=opts.pattern,
        )
        self.bus.emit(PlanReady(plan))
        if opts.dry_run:
            items = await aj.call(
                build_items, journal, publish=opts.publish, metadata=metadata, dry_run=True
            )
            await aj.call(journal.rollback)
            report = RunReport(
                plan=plan,
                items=items,
                dataset_id=pre.dataset_id,
                journal_path=plan.journal_path,
                dry_run=True,
                elapsed=time.monotonic() - self.started,
                notices=plan.notices,
            )
            self.bus.emit(RunFinished(report))
            return report
        if client is None:  # pragma: no cover - only dry runs go without a client
            raise ConfigError("no NOMAD credentials")
        if self.confirm is not None and plan.groups_to_run and not await self.confirm(plan):
            return await self._finish(
                aj, plan, metadata, notices=("Cancelled: nothing was sent.",), cancelled=True
            )
        if opts.dataset and pre.dataset_id is None and plan.groups_to_run:
            dataset = await client.create_dataset(opts.dataset)
            pre.dataset_id = dataset.dataset_id
            self.bus.emit(Notice(f"created dataset {opts.dataset!r} ({dataset.dataset_id})"))
        metadata = replace(metadata, dataset_id=pre.dataset_id)
        if pre.dataset_id:
            await aj.durable(journal.set_meta, "dataset_id", pre.dataset_id)
            await aj.durable(journal.set_meta, "dataset_name", opts.dataset or "")
        await aj.durable(journal.set_meta, "last_run", _last_run(opts, metadata))
        spool_dir = (opts.spool_dir or self.journal_path.parent) / "spool"
        await anyio.to_thread.run_sync(_clean_spool, spool_dir)
        slots = UploadSlots(free if limit is not None else None, releasers=tally.releasers)
        workers = opts.workers or min(64, (limit or 16) + opts.transfers)
        pipeline = Pipeline(
            client=client,
            journal=aj,
            root=self.root,
            options=opts,
            metadata=metadata,
            bus=self.bus,
            slots=slots,
            transfers=self.transfers,
            spool_dir=spool_dir,
            spool=ByteBudget(_spool_budget(opts, spool_dir)),
            workers=workers,
            estimator=DurationEstimator(),
        )
        try:
            await pipeline.run()
        finally:
            with anyio.CancelScope(shield=True):
                report = await self._finish(
                    aj, plan, metadata, notices=self._end_notices(pipeline, slots, plan)
                )
        return report

    def _slot_notices(self, tally: _Tally, free: int | None, pre: _Preflight) -> tuple[str, ...]:
        if free is None or self.options.publish or tally.new <= free:
            return ()
        return (
            f"only {free} of the {tally.new} new uploads can be made without publishing: "
            f"NOMAD lets each user hold {self.options.upload_limit} unpublished uploads and "
            f"you hold {pre.held}. The rest waits for a re-run with --publish, or use --packed "
            "with a larger --max-per-upload/--max-upload-size to need fewer uploads.",
        )

    def _end_notices(self, pipeline: Pipeline, slots: UploadSlots, plan: Plan) -> tuple[str, ...]:
        if not pipeline.deferred:
            return ()
        held = (
            f" You held {plan.held_uploads} unpublished uploads before this run started."
            if plan.held_uploads
            else ""
        )
        if self.options.publish:
            advice = (
                "Publish or delete some of the unpublished uploads you hold (in NOMAD's web "
                "interface, for instance), then re-run"
            )
        else:
            advice = (
                "Re-run with --publish (publishing frees each slot), or publish or delete "
                "uploads you hold"
            )
        return (
            f"{pipeline.deferred} uploads were not started: no upload slot was left (NOMAD's "
            f"limit of {self.options.upload_limit} unpublished uploads per user).{held} "
            f"{advice}; or use --packed with a larger --max-per-upload to need fewer uploads.",
        )

    async def _finish(
        self,
        aj: AsyncJournal,
        plan: Plan,
        metadata: Metadata,
        *,
        notices: tuple[str, ...] = (),
        cancelled: bool = False,
    ) -> RunReport:
        journal = aj.journal
        items = await aj.call(build_items, journal, publish=self.options.publish, metadata=metadata)
        report = RunReport(
            plan=plan,
            items=items,
            dataset_id=metadata.dataset_id if metadata.dataset_id != _NEW_DATASET else None,
            journal_path=self.journal_path,
            manifest_path=self.manifest_path,
            elapsed=time.monotonic() - self.started,
            notices=notices,
            cancelled=cancelled,
        )
        data = manifest_data(report)
        await anyio.to_thread.run_sync(write_manifest, self.manifest_path, data)
        await aj.call(journal.set_meta, "manifest", str(self.manifest_path))
        self.bus.emit(RunFinished(report))
        return report
