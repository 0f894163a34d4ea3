"""The blocking client: same methods as the async one, usable from any thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import anyio
import pytest

from nomad_bulk.client import NomadClient as AsyncNomadClient
from nomad_bulk.client import ResponseInfo
from nomad_bulk.config import Secret, Settings
from nomad_bulk.errors import AuthError, NotFoundError
from nomad_bulk.models import ProcessStatus
from nomad_bulk.server import LocalServer, ServerConfig
from nomad_bulk.sync import (
    NomadClient,
    SyncNomadClient,
    _Cancel,
    _cancellable,
    _portal,
    running_server,
)

USER1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"


def _async_methods() -> list[str]:
    return sorted(
        name
        for name, member in inspect.getmembers(AsyncNomadClient)
        if not name.startswith("_")
        and name != "aclose"
        and (inspect.iscoroutinefunction(member) or inspect.isasyncgenfunction(member))
    )


def _shape(func: object) -> list[tuple[str, object, object]]:
    params = inspect.signature(func).parameters.values()  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default) for p in params]


def test_every_async_method_has_a_blocking_twin_with_the_same_parameters() -> None:
    """Each public coroutine of the async client exists here as a plain method, same parameters."""
    names = _async_methods()
    assert "create_upload" in names and "iter_uploads" in names
    for name in names:
        twin = getattr(SyncNomadClient, name, None)
        assert twin is not None, f"sync.NomadClient lacks {name}"
        assert not inspect.iscoroutinefunction(twin) and not inspect.isasyncgenfunction(twin)
        assert _shape(twin) == _shape(getattr(AsyncNomadClient, name)), name


def test_script_round_trip_upload_wait_entries(
    settings: Settings, server: LocalServer, calc_zips: list[Path]
) -> None:
    """From a plain script: upload, wait, read entries, edit and publish, all blocking."""
    with NomadClient(settings) as nomad:
        upload = nomad.create_upload(calc_zips[0], upload_name="script-1")
        done = nomad.wait_for_process(upload.upload_id, initial_wait=0.01)
        entries = nomad.get_entries(upload.upload_id)
        dataset = nomad.create_dataset("script dataset")
        nomad.edit_upload(upload.upload_id, datasets=[dataset.dataset_id])
        nomad.wait_for_process(upload.upload_id, initial_wait=0.01)
        nomad.publish_upload(upload.upload_id)
        published = nomad.wait_published(upload.upload_id, initial_wait=0.01)
    assert done.process_status is ProcessStatus.SUCCESS and done.entries == 1
    assert [e.mainfile for e in entries] == ["aims.out"]
    assert published.published
    (record,) = server.state.uploads()
    assert record.upload_name == "script-1" and record.published and record.main_author == USER1
    assert record.entries[0].datasets == [dataset.dataset_id]


@pytest.mark.anyio
async def test_blocking_calls_work_from_inside_a_running_event_loop(
    settings: Settings, server: LocalServer, calc_zips: list[Path]
) -> None:
    """A coroutine on a running loop (as in a Jupyter cell) calls the blocking API directly."""
    loop = asyncio.get_running_loop()
    assert loop.is_running()
    with NomadClient(settings) as nomad:
        upload = nomad.create_upload(calc_zips[0])
        done = nomad.wait_for_process(upload.upload_id, initial_wait=0.01)
        listed = list(nomad.iter_uploads())
        me = nomad.me()
    assert done.succeeded and me.user_id == USER1
    assert [u.upload_id for u in listed] == [upload.upload_id]
    assert [u.upload_id for u in server.state.uploads()] == [upload.upload_id]


def test_one_client_serves_several_plain_threads(
    settings: Settings, server: LocalServer, calc_zips: list[Path]
) -> None:
    """Threads share one blocking client; each gets its own result and nothing is lost."""
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    with NomadClient(settings) as nomad:

        def work(index: int) -> None:
            try:
                upload = nomad.create_upload(calc_zips[index], upload_name=f"thread-{index}")
                results[index] = nomad.wait_for_process(
                    upload.upload_id, initial_wait=0.01
                ).upload_id
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    by_name = {str(u.upload_name): u for u in server.state.uploads()}
    assert sorted(by_name) == ["thread-0", "thread-1", "thread-2"]
    assert {i: by_name[f"thread-{i}"].upload_id for i in range(3)} == results
    assert all(u.process_status == "SUCCESS" for u in by_name.values())


def test_iterators_are_lazy_plain_iterators_over_all_pages(
    settings: Settings, server: LocalServer, calc_zips: list[Path]
) -> None:
    """iter_uploads yields every page on demand; leaving early releases the async iterator."""
    with NomadClient(settings) as nomad:
        ids = [nomad.create_upload(path).upload_id for path in calc_zips]
        for upload_id in ids:
            nomad.wait_for_process(upload_id, initial_wait=0.01)
        iterator = nomad.iter_uploads(page_size=1)
        before = server.state.route_counts["GET /uploads"]
        first = next(iterator)
        after_first = server.state.route_counts["GET /uploads"]
        iterator.close()  # type: ignore[attr-defined]
        everything = list(nomad.iter_uploads(page_size=1, order_by="upload_create_time"))
    assert after_first - before == 1  # only the first page was fetched
    assert first.upload_id in ids
    assert [u.upload_id for u in everything] == ids


def test_errors_are_the_typed_exceptions_of_the_async_client(
    settings: Settings, server: LocalServer
) -> None:
    """NOMAD's answers arrive as nomad-bulk exceptions in the calling thread."""
    with NomadClient(settings) as nomad, pytest.raises(NotFoundError):
        nomad.get_upload("no-such-upload-id-000000")
    wrong = settings.with_(password="not the password")
    with NomadClient(wrong) as nomad, pytest.raises(AuthError) as caught:
        nomad.me()
    assert "not the password" not in str(caught.value)


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "nomad-bulk-loop"]


def test_lifecycle_the_loop_thread_lives_exactly_while_open(settings: Settings) -> None:
    """Opening starts one event-loop thread, closing ends it; a closed client stays closed."""
    nomad = NomadClient(settings)
    with pytest.raises(RuntimeError, match="not open"):
        nomad.me()
    before = len(_loop_threads())
    with nomad:
        assert len(_loop_threads()) == before + 1
        assert nomad.is_open and nomad.settings.url == settings.url
        assert nomad.me().username == "test1"
    assert len(_loop_threads()) == before
    assert "closed" in repr(nomad)
    with pytest.raises(RuntimeError, match="closed"):
        nomad.open()
    assert "password" not in repr(nomad)


@pytest.mark.timeout(30)
def test_interrupt_while_waiting_cancels_the_coroutine(
    tmp_path: Path, calc_zips: list[Path]
) -> None:
    """Ctrl-C during a blocking call raises KeyboardInterrupt there and cancels the coroutine.

    Processing takes 120 s on this server and the client polls once a minute: had the
    polling coroutine kept sleeping, closing the client would wait for it and the test
    would hit its 30 s timeout.
    """
    main = threading.main_thread().ident
    assert main == threading.get_ident()
    armed = threading.Event()
    sent = threading.Event()

    def on_response(info: ResponseInfo) -> None:
        if armed.is_set() and not sent.is_set() and main is not None:
            sent.set()
            signal.pthread_kill(main, signal.SIGINT)

    with running_server(ServerConfig(processing_time=120.0)) as srv:
        settings = Settings(url=srv.url, username="test1", password=Secret("password"))
        with NomadClient(settings, on_response=on_response) as nomad:
            upload = nomad.create_upload(calc_zips[0])
            armed.set()
            with pytest.raises(KeyboardInterrupt):
                nomad.wait_for_process(upload.upload_id, initial_wait=60.0, max_wait=60.0)
            still = nomad.get_upload(upload.upload_id)
        assert sent.is_set()
        assert still.process_running  # the server was still processing: the wait was cut short


def test_importing_the_blocking_api_patches_and_starts_nothing() -> None:
    """Importing sync and compat leaves asyncio alone, starts no thread and reads no settings."""
    code = textwrap.dedent(
        """
        import asyncio, sys, threading
        originals = (asyncio.run, asyncio.new_event_loop, asyncio.BaseEventLoop.run_until_complete)
        threads = threading.active_count()
        import nomad_bulk.sync, nomad_bulk.compat
        assert originals == (
            asyncio.run, asyncio.new_event_loop, asyncio.BaseEventLoop.run_until_complete
        )
        assert threading.active_count() == threads
        assert "nest_asyncio" not in sys.modules
        print("untouched")
        """
    )
    # An unusable NOMAD_URL would raise if anything resolved settings at import time.
    env = {**os.environ, "NOMAD_URL": "not a url at all"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untouched"


def test_a_cancel_requested_before_the_task_starts_still_cancels_it() -> None:
    """Ctrl-C can land while the task is being handed to the loop; it is cancelled anyway."""
    with _portal() as portal:
        handle = _Cancel()
        handle.cancel(portal)  # before the task exists: only the flag can be set
        future = portal.start_task_soon(_cancellable, handle, anyio.sleep_forever)
        with pytest.raises(concurrent.futures.CancelledError):
            future.result(timeout=30)
