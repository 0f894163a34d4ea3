"""Blocking access to nomad-bulk for scripts and for notebook cells that do not ``await``.

Every blocking call runs the library's own coroutine on an event loop in a
dedicated thread (an anyio blocking portal) and waits for its result. That is
why the same code works in a plain script and in a thread whose event loop is
already running, such as a Jupyter cell: nothing here calls ``asyncio.run``
inside a running loop, nothing is patched, and importing this module starts
nothing. The aiohttp session of a :class:`NomadClient` is created, used and
closed inside the portal's loop.

In a notebook, prefer ``await`` on the async API (:class:`nomad_bulk.client.NomadClient`,
:func:`nomad_bulk.engine.run_upload`); this module is for code that cannot.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from concurrent.futures import Future
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import anyio
import anyio.to_thread
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .config import Secret, Settings
from .models import Dataset, Entry, RawDirectory, Upload, User

if TYPE_CHECKING:
    from .client import ClientStats, ResponseInfo, RetryPolicy, ServerInfo
    from .client import NomadClient as AsyncNomadClient
    from .engine import Observer, Plan, RunOptions, RunReport
    from .server import LocalServer, ServerConfig

__all__ = ["NomadClient", "SyncNomadClient", "run_upload", "running_server"]

T = TypeVar("T")
P = ParamSpec("P")

_BACKEND = "asyncio"  # aiohttp runs on asyncio only


class _Cancel:
    """Lets the waiting thread cancel a portal task at any moment, even before it starts."""

    __slots__ = ("requested", "scope")

    def __init__(self) -> None:
        self.requested = False
        self.scope: anyio.CancelScope | None = None

    def cancel(self, portal: BlockingPortal) -> None:
        # Either the task sees ``requested`` when it starts, or its scope is already set
        # here: whichever way the two threads interleave, the task gets cancelled.
        self.requested = True
        scope = self.scope
        if scope is not None:
            with contextlib.suppress(RuntimeError):  # the portal is already stopping
                portal.call(scope.cancel)


async def _cancellable(handle: _Cancel, func: Callable[[], Awaitable[T]]) -> T:
    with anyio.CancelScope() as scope:
        handle.scope = scope
        if handle.requested:
            scope.cancel()
        return await func()
    # Only reached when cancelled: the waiting thread has already raised.
    raise anyio.get_cancelled_exc_class()()


def _run(portal: BlockingPortal, func: Callable[[], Awaitable[T]]) -> T:
    """Run ``func()`` on the portal's loop and wait for it.

    If the wait is interrupted (Ctrl-C, a kernel interrupt in Jupyter), the coroutine is
    cancelled too, instead of running on unseen in the loop thread.
    """
    handle = _Cancel()
    future: Future[T] | None = None
    try:
        future = portal.start_task_soon(_cancellable, handle, func)
        return future.result()
    except BaseException:
        if future is None or not future.done():
            handle.cancel(portal)
        raise


@contextmanager
def _portal() -> Iterator[BlockingPortal]:
    # anyio >= 4.5 runs the portal in a daemon thread, so a portal that is still open
    # at interpreter exit can be closed by an atexit hook instead of hanging the exit.
    with start_blocking_portal(_BACKEND, name="nomad-bulk-loop") as portal:
        yield portal


class NomadClient:
    """Blocking twin of :class:`nomad_bulk.client.NomadClient`, method for method.

    Use it as a context manager (or call :meth:`open` and :meth:`close`). Each
    method runs the async client's method of the same name on the portal's event
    loop and returns its result; errors are the same typed exceptions. Async
    iterators become plain iterators. Callbacks (``on_progress``, ``on_response``)
    run on the portal's thread. The client is thread-safe: several threads may
    call it at once, as the async client allows concurrent calls.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        retry: RetryPolicy | None = None,
        request_gate: Callable[[], Awaitable[None]] | None = None,
        on_response: Callable[[ResponseInfo], None] | None = None,
    ) -> None:
        self._settings_arg = settings
        self._options: dict[str, Any] = {
            "retry": retry,
            "request_gate": request_gate,
            "on_response": on_response,
        }
        self._stack: ExitStack | None = None
        self._portal: BlockingPortal | None = None
        self._nomad: AsyncNomadClient | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> NomadClient:
        """Start the event-loop thread and open the async client inside it."""
        if self._closed:
            raise RuntimeError("this NomadClient was closed; create a new one")
        if self._stack is not None:
            raise RuntimeError("this NomadClient is already open")
        from .client import NomadClient as AsyncNomadClient

        stack = ExitStack()
        try:
            portal = stack.enter_context(_portal())
            # Built on the loop thread so that anything it binds belongs to that loop.
            nomad = portal.call(
                functools.partial(AsyncNomadClient, self._settings_arg, **self._options)
            )
            stack.enter_context(portal.wrap_async_context_manager(nomad))
        except BaseException:
            stack.close()
            raise
        self._stack, self._portal, self._nomad = stack, portal, nomad
        return self

    def close(self) -> None:
        """Close the async client (and its session) and stop the event-loop thread."""
        self.__exit__(None, None, None)

    def __enter__(self) -> NomadClient:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        self._closed = True
        self._portal = None
        if stack is not None:
            stack.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        state = "open" if self._stack is not None else ("closed" if self._closed else "new")
        url = self._settings_arg.url if self._settings_arg is not None else "from environment"
        return f"<nomad_bulk.sync.NomadClient {state} url={url!r}>"

    @property
    def is_open(self) -> bool:
        """True between :meth:`open` and :meth:`close`."""
        return self._stack is not None

    @property
    def settings(self) -> Settings:
        """The resolved settings of the underlying async client."""
        return self._client().settings

    @property
    def stats(self) -> ClientStats:
        """Request counters of the underlying async client."""
        return self._client().stats

    # -- the one implementation every method goes through ------------------------------

    def _parts(self) -> tuple[AsyncNomadClient, BlockingPortal]:
        if self._nomad is None or self._portal is None:
            raise RuntimeError(
                "this NomadClient is not open; use 'with NomadClient(...) as nomad:' "
                "or call open() first"
            )
        return self._nomad, self._portal

    def _client(self) -> AsyncNomadClient:
        return self._parts()[0]

    def _call(self, func: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        _, portal = self._parts()
        return _run(portal, functools.partial(func, *args, **kwargs))

    def _iterate(self, make: Callable[[AsyncNomadClient], AsyncIterator[T]]) -> Iterator[T]:
        nomad, portal = self._parts()
        # Created on the loop thread, like everything the async client makes.
        return self._drain(portal, portal.call(make, nomad))

    def _drain(self, portal: BlockingPortal, iterator: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                more, item = _run(portal, functools.partial(_next, iterator))
                if not more:
                    return
                yield cast(T, item)
        finally:
            aclose = getattr(iterator, "aclose", None)
            # An iterator abandoned after close() has nothing left to release.
            if aclose is not None and self._portal is portal:
                _run(portal, aclose)

    # -- mirrored methods (generated from nomad_bulk.client.NomadClient's signatures) ----

    def info(self, *, refresh: bool = False) -> ServerInfo:
        """Blocking :meth:`nomad_bulk.client.NomadClient.info`."""
        return self._call(self._client().info, refresh=refresh)

    def me(self) -> User:
        """Blocking :meth:`nomad_bulk.client.NomadClient.me`."""
        return self._call(self._client().me)

    def create_app_token(self, expires_in: float) -> Secret:
        """Blocking :meth:`nomad_bulk.client.NomadClient.create_app_token`."""
        return self._call(self._client().create_app_token, expires_in)

    def get_user(self, user_id: str) -> User:
        """Blocking :meth:`nomad_bulk.client.NomadClient.get_user`."""
        return self._call(self._client().get_user, user_id)

    def search_users(self, prefix: str) -> list[User]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.search_users`."""
        return self._call(self._client().search_users, prefix)

    def resolve_users(self, refs: Sequence[str]) -> dict[str, User]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.resolve_users`."""
        return self._call(self._client().resolve_users, refs)

    def create_upload(
        self,
        path: str | Path,
        *,
        file_name: str | None = None,
        upload_name: str | None = None,
        embargo_length: int = 0,
        publish_directly: bool = False,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Upload:
        """Blocking :meth:`nomad_bulk.client.NomadClient.create_upload`."""
        return self._call(
            self._client().create_upload,
            path,
            file_name=file_name,
            upload_name=upload_name,
            embargo_length=embargo_length,
            publish_directly=publish_directly,
            on_progress=on_progress,
        )

    def get_upload(self, upload_id: str) -> Upload:
        """Blocking :meth:`nomad_bulk.client.NomadClient.get_upload`."""
        return self._call(self._client().get_upload, upload_id)

    def iter_uploads(
        self,
        *,
        upload_id: str | Sequence[str] | None = None,
        upload_name: str | Sequence[str] | None = None,
        is_processing: bool | None = None,
        is_published: bool | None = None,
        roles: str | Sequence[str] | None = None,
        include_all: bool | None = None,
        page_size: int = 100,
        order_by: str | None = None,
        order: str | None = None,
    ) -> Iterator[Upload]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.iter_uploads`: a lazy iterator."""
        return self._iterate(
            lambda nomad: nomad.iter_uploads(
                upload_id=upload_id,
                upload_name=upload_name,
                is_processing=is_processing,
                is_published=is_published,
                roles=roles,
                include_all=include_all,
                page_size=page_size,
                order_by=order_by,
                order=order,
            )
        )

    def list_uploads(
        self,
        *,
        upload_id: str | Sequence[str] | None = None,
        upload_name: str | Sequence[str] | None = None,
        is_processing: bool | None = None,
        is_published: bool | None = None,
        roles: str | Sequence[str] | None = None,
        include_all: bool | None = None,
        page_size: int = 100,
        order_by: str | None = None,
        order: str | None = None,
    ) -> list[Upload]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.list_uploads`."""
        return self._call(
            self._client().list_uploads,
            upload_id=upload_id,
            upload_name=upload_name,
            is_processing=is_processing,
            is_published=is_published,
            roles=roles,
            include_all=include_all,
            page_size=page_size,
            order_by=order_by,
            order=order,
        )

    def count_uploads(
        self,
        *,
        upload_id: str | Sequence[str] | None = None,
        upload_name: str | Sequence[str] | None = None,
        is_processing: bool | None = None,
        is_published: bool | None = None,
        roles: str | Sequence[str] | None = None,
        include_all: bool | None = None,
    ) -> int:
        """Blocking :meth:`nomad_bulk.client.NomadClient.count_uploads`."""
        return self._call(
            self._client().count_uploads,
            upload_id=upload_id,
            upload_name=upload_name,
            is_processing=is_processing,
            is_published=is_published,
            roles=roles,
            include_all=include_all,
        )

    def find_uploads(self, upload_name: str) -> list[Upload]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.find_uploads`."""
        return self._call(self._client().find_uploads, upload_name)

    def delete_upload(
        self,
        upload_id: str,
        *,
        wait: bool = True,
        timeout: float = 600,
    ) -> None:
        """Blocking :meth:`nomad_bulk.client.NomadClient.delete_upload`."""
        return self._call(self._client().delete_upload, upload_id, wait=wait, timeout=timeout)

    def edit_upload(
        self,
        upload_id: str,
        *,
        upload_name: str | None = None,
        datasets: Sequence[str] | Mapping[str, Any] | None = None,
        coauthors: Sequence[str] | Mapping[str, Any] | None = None,
        reviewers: Sequence[str] | Mapping[str, Any] | None = None,
        references: Sequence[str] | Mapping[str, Any] | None = None,
        comment: str | None = None,
        embargo_length: int | None = None,
        verify_only: bool = False,
    ) -> Upload:
        """Blocking :meth:`nomad_bulk.client.NomadClient.edit_upload`."""
        return self._call(
            self._client().edit_upload,
            upload_id,
            upload_name=upload_name,
            datasets=datasets,
            coauthors=coauthors,
            reviewers=reviewers,
            references=references,
            comment=comment,
            embargo_length=embargo_length,
            verify_only=verify_only,
        )

    def publish_upload(self, upload_id: str, *, embargo_length: int | None = None) -> Upload:
        """Blocking :meth:`nomad_bulk.client.NomadClient.publish_upload`."""
        return self._call(self._client().publish_upload, upload_id, embargo_length=embargo_length)

    def wait_for_process(
        self,
        upload_id: str,
        *,
        process: str | None = None,
        timeout: float = 3600,
        initial_wait: float = 0.5,
        max_wait: float = 30.0,
        raise_on_failure: bool = True,
    ) -> Upload:
        """Blocking :meth:`nomad_bulk.client.NomadClient.wait_for_process`."""
        return self._call(
            self._client().wait_for_process,
            upload_id,
            process=process,
            timeout=timeout,
            initial_wait=initial_wait,
            max_wait=max_wait,
            raise_on_failure=raise_on_failure,
        )

    def wait_published(
        self,
        upload_id: str,
        *,
        timeout: float = 3600,
        initial_wait: float = 0.5,
        max_wait: float = 30.0,
    ) -> Upload:
        """Blocking :meth:`nomad_bulk.client.NomadClient.wait_published`."""
        return self._call(
            self._client().wait_published,
            upload_id,
            timeout=timeout,
            initial_wait=initial_wait,
            max_wait=max_wait,
        )

    def iter_entries(self, upload_id: str, *, page_size: int = 1000) -> Iterator[Entry]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.iter_entries`: a lazy iterator."""
        return self._iterate(lambda nomad: nomad.iter_entries(upload_id, page_size=page_size))

    def get_entries(self, upload_id: str, *, page_size: int = 1000) -> list[Entry]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.get_entries`."""
        return self._call(self._client().get_entries, upload_id, page_size=page_size)

    def get_entry(self, entry_id: str) -> Entry:
        """Blocking :meth:`nomad_bulk.client.NomadClient.get_entry`."""
        return self._call(self._client().get_entry, entry_id)

    def query_entries(
        self,
        query: Mapping[str, Any],
        *,
        owner: str = "visible",
        page_size: int = 100,
        required: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.query_entries`."""
        return self._call(
            self._client().query_entries,
            query,
            owner=owner,
            page_size=page_size,
            required=required,
            limit=limit,
        )

    def list_raw_directory(self, upload_id: str, path: str = "") -> RawDirectory:
        """Blocking :meth:`nomad_bulk.client.NomadClient.list_raw_directory`."""
        return self._call(self._client().list_raw_directory, upload_id, path)

    def download_entry_raw(self, entry_id: str, dest: str | Path) -> Path:
        """Blocking :meth:`nomad_bulk.client.NomadClient.download_entry_raw`."""
        return self._call(self._client().download_entry_raw, entry_id, dest)

    def download_entry_archive(self, entry_id: str, dest: str | Path) -> Path:
        """Blocking :meth:`nomad_bulk.client.NomadClient.download_entry_archive`."""
        return self._call(self._client().download_entry_archive, entry_id, dest)

    def create_dataset(self, name: str) -> Dataset:
        """Blocking :meth:`nomad_bulk.client.NomadClient.create_dataset`."""
        return self._call(self._client().create_dataset, name)

    def get_dataset(self, dataset_id: str) -> Dataset:
        """Blocking :meth:`nomad_bulk.client.NomadClient.get_dataset`."""
        return self._call(self._client().get_dataset, dataset_id)

    def list_datasets(
        self,
        *,
        dataset_name: str | None = None,
        user_id: str | None = None,
        prefix: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> list[Dataset]:
        """Blocking :meth:`nomad_bulk.client.NomadClient.list_datasets`."""
        return self._call(
            self._client().list_datasets,
            dataset_name=dataset_name,
            user_id=user_id,
            prefix=prefix,
            page_size=page_size,
            limit=limit,
        )

    def find_dataset(self, name: str, *, user_id: str | None = None) -> Dataset | None:
        """Blocking :meth:`nomad_bulk.client.NomadClient.find_dataset`."""
        return self._call(self._client().find_dataset, name, user_id=user_id)

    def delete_dataset(self, dataset_id: str) -> None:
        """Blocking :meth:`nomad_bulk.client.NomadClient.delete_dataset`."""
        return self._call(self._client().delete_dataset, dataset_id)


#: The same class under a name that cannot be confused with the async client.
SyncNomadClient = NomadClient


async def _next(iterator: AsyncIterator[T]) -> tuple[bool, T | None]:
    # StopAsyncIteration is turned into a flag here: it must not cross the portal as
    # an exception, since it means "done", not "failed".
    try:
        return True, await iterator.__anext__()
    except StopAsyncIteration:
        return False, None


def run_upload(
    root: str | Path,
    *,
    client: NomadClient | None = None,
    settings: Settings | None = None,
    options: RunOptions | None = None,
    observers: Iterable[Observer] | None = None,
    journal_path: str | Path | None = None,
    manifest_path: str | Path | None = None,
    confirm: Callable[[Plan], bool | Awaitable[bool]] | None = None,
) -> RunReport:
    """Blocking :func:`nomad_bulk.engine.run_upload`: same arguments, same report, same errors.

    Differences, both for code that does not ``await``: ``client`` is a blocking
    :class:`NomadClient` (its loop thread runs the engine; without one, a loop thread
    is started for this call); ``confirm`` may be a plain function (it runs in a
    worker thread, so it may prompt). ``observers=None`` (the default) draws a progress
    bar suited to where the code runs: a widget in a notebook (text bars if ipywidgets
    is missing), text bars in a terminal, nothing when output is not a terminal
    (batch jobs); pass ``()`` for none. Ctrl-C cancels the run the way the command
    does: the journal stays consistent and the same call resumes.
    """
    from .engine import run_upload as engine_run_upload

    watchers = _default_observers() if observers is None else tuple(observers)
    ask = _async_confirm(confirm)
    if client is not None:
        return client._call(
            engine_run_upload,
            root,
            client=client._client(),
            options=options,
            observers=watchers,
            journal_path=journal_path,
            manifest_path=manifest_path,
            confirm=ask,
        )
    with _portal() as portal:
        return _run(
            portal,
            functools.partial(
                engine_run_upload,
                root,
                settings=settings,
                options=options,
                observers=watchers,
                journal_path=journal_path,
                manifest_path=manifest_path,
                confirm=ask,
            ),
        )


def _async_confirm(
    confirm: Callable[[Plan], bool | Awaitable[bool]] | None,
) -> Callable[[Plan], Awaitable[bool]] | None:
    if confirm is None or inspect.iscoroutinefunction(confirm):
        return confirm
    ask = confirm

    async def confirm_in_thread(plan: Plan) -> bool:
        # A plain function may block (input()); it must not stall the loop thread.
        answer = await anyio.to_thread.run_sync(ask, plan)
        if inspect.isawaitable(answer):
            answer = await answer
        return bool(answer)

    return confirm_in_thread


def _in_notebook() -> bool:
    # A Jupyter kernel has its shell in sys.modules; a plain IPython terminal does not.
    shell = sys.modules.get("IPython")
    get_ipython = getattr(shell, "get_ipython", None)
    kernel = get_ipython() if callable(get_ipython) else None
    return kernel is not None and "ipykernel" in sys.modules and hasattr(kernel, "kernel")


def _default_observers() -> tuple[Observer, ...]:
    from .progress import TqdmProgress

    # tqdm's disable=None turns bars off when stderr is not a terminal, which is right for
    # batch jobs but also true of a notebook's output stream: there the bars are wanted.
    return (TqdmProgress(disable=False if _in_notebook() else None),)


def running_server(config: ServerConfig | None = None) -> AbstractContextManager[LocalServer]:
    """Run the local NOMAD server on an event loop in its own thread, for blocking code.

    ``with running_server() as srv:`` gives the running :class:`~nomad_bulk.server.LocalServer`
    (``srv.url`` is its API base URL on 127.0.0.1) and stops it on exit. Blocking
    clients in the calling thread can talk to it, since it is served from another
    thread. Async code should use :func:`nomad_bulk.server.running_server` directly.
    """
    return _running_server(config)


@contextmanager
def _running_server(config: ServerConfig | None) -> Iterator[LocalServer]:
    from .server import ServerConfig as _ServerConfig
    from .server import running_server as _async_running_server

    with _portal() as portal:
        cm = _async_running_server(config if config is not None else _ServerConfig())
        with portal.wrap_async_context_manager(cm) as srv:
            yield srv
