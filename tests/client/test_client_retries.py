"""Retries under injected faults: what is repeated, how often, and what never is."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from client_helpers import FAST_POLL, calc_zip, connect, serve

from nomad_bulk.client import ResponseInfo, RetryPolicy
from nomad_bulk.errors import OutcomeUnknownError, ServerError
from nomad_bulk.server import FaultPlan, FaultRule

pytestmark = pytest.mark.anyio

#: Enough attempts to ride out four consecutive faults on one request.
PATIENT = RetryPolicy(max_attempts=6, max_time=10, initial_wait=0.001, max_wait=0.005, jitter=0)


async def _processed_upload(nomad, archive: Path, name: str) -> str:  # type: ignore[no-untyped-def]
    upload = await nomad.create_upload(archive, upload_name=name)
    await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
    return str(upload.upload_id)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_5xx_burst_on_a_read_is_retried(status: int) -> None:
    """Two 5xx answers in a row cost exactly two retries, then the read succeeds."""
    plan = FaultPlan(rules=(FaultRule(route="/info", status=status, times=2),))
    async with serve(faults=plan) as srv, connect(srv) as nomad:
        info = await nomad.info()
        assert info.version
        assert nomad.stats.retries == 2
        assert nomad.stats.count(status) == 2 and nomad.stats.count(200) == 1
    assert srv.state.route_counts["GET /info"] == 3


async def test_429_with_retry_after_is_honoured(api_version: str) -> None:
    """429 answers carry Retry-After to the observer and are retried until success."""
    seen: list[ResponseInfo] = []
    plan = FaultPlan(rules=(FaultRule(route="/uploads", status=429, times=3, retry_after=0.0),))
    async with (
        serve(api_version=api_version, faults=plan) as srv,
        connect(srv, on_response=seen.append) as nomad,
    ):
        assert await nomad.list_uploads() == []
        assert nomad.stats.retries == 3
    limited = [info for info in seen if info.status == 429]
    assert len(limited) == 3 and all(info.retry_after == 0.0 for info in limited)
    assert [info.attempt for info in limited] == [1, 2, 3]


async def test_503_with_retry_after_waits_as_told() -> None:
    """A 503 with a Retry-After longer than the policy allows ends the retries at once."""
    plan = FaultPlan(rules=(FaultRule(route="/info", status=503, retry_after=3600.0),))
    async with serve(faults=plan) as srv, connect(srv) as nomad:
        with anyio.fail_after(5), pytest.raises(ServerError, match="503"):
            await nomad.info()
        assert nomad.stats.requests == 1 and nomad.stats.retries == 0


async def test_dropped_connection_on_a_read_is_retried() -> None:
    """A connection dropped without an answer is a transport error, retried once."""
    plan = FaultPlan(rules=(FaultRule(kind="drop", route="/users/me", times=1),))
    async with serve(faults=plan) as srv, connect(srv) as nomad:
        me = await nomad.me()
        assert me.username == "test1"
        assert nomad.stats.transport_errors == 1 and nomad.stats.retries == 1
    assert srv.state.fault_counts["drop"] == 1


async def test_polling_survives_a_fault_storm(api_version: str, tmp_path: Path) -> None:
    """wait_for_process keeps going through 5xx, 429 and drops on its status reads."""
    archive = calc_zip(tmp_path / "storm.zip")
    rules = (
        FaultRule(route="/uploads/{upload_id}", method="GET", status=502, times=2),
        FaultRule(route="/uploads/{upload_id}", method="GET", status=429, times=1, retry_after=0.0),
        FaultRule(kind="drop", route="/uploads/{upload_id}", method="GET", times=1),
    )
    plan = FaultPlan(rules=rules)
    async with (
        serve(api_version=api_version, faults=plan, processing_time=0.05) as srv,
        connect(srv, retry=PATIENT) as nomad,
    ):
        upload = await nomad.create_upload(archive)
        done = await nomad.wait_for_process(upload.upload_id, **FAST_POLL)
        assert done.succeeded
        assert nomad.stats.retries == 4
    assert srv.state.fault_counts["error"] == 3 and srv.state.fault_counts["drop"] == 1


@pytest.mark.parametrize("kind", ["after", "drop_after"])
async def test_lost_create_answer_is_outcome_unknown_then_reconciled(
    api_version: str, kind: str, tmp_path: Path
) -> None:
    """A lost create answer raises OutcomeUnknownError; its name finds exactly one upload."""
    archive = calc_zip(tmp_path / "lost.zip")
    rule = FaultRule(kind=kind, method="POST", route="/uploads", status=502, times=1)
    async with (
        serve(api_version=api_version, faults=FaultPlan(rules=(rule,))) as srv,
        connect(srv) as nomad,
    ):
        with pytest.raises(OutcomeUnknownError) as caught:
            await nomad.create_upload(archive, upload_name="run-7/calc-1")
        assert caught.value.upload_name == "run-7/calc-1"
        assert nomad.stats.retries == 0
        found = await nomad.find_uploads(caught.value.upload_name)
        assert len(found) == 1
    assert [u.upload_name for u in srv.state.uploads()] == ["run-7/calc-1"]
    assert srv.state.route_counts["POST /uploads"] == 1


async def test_create_refused_before_the_body_is_not_retried_blindly(tmp_path: Path) -> None:
    """A 503 to a fully sent create is not repeated: the caller must reconcile."""
    archive = calc_zip(tmp_path / "r.zip")
    rule = FaultRule(method="POST", route="/uploads", status=503, times=1)
    async with serve(faults=FaultPlan(rules=(rule,))) as srv, connect(srv) as nomad:
        with pytest.raises(OutcomeUnknownError):
            await nomad.create_upload(archive, upload_name="once")
        assert await nomad.find_uploads("once") == []
    assert srv.state.route_counts["POST /uploads"] == 1


async def test_create_dropped_mid_body_is_resent(tmp_path: Path) -> None:
    """A connection dropped before the whole file left is safe to repeat: one upload results."""
    big = tmp_path / "big.zip"
    big.write_bytes(calc_zip(tmp_path / "small.zip").read_bytes())
    with big.open("ab") as handle:  # incompressible padding after the archive
        handle.write(os.urandom(24 * 1024 * 1024))
    rule = FaultRule(kind="drop", method="POST", route="/uploads", drop_after_bytes=4096, times=1)
    async with serve(faults=FaultPlan(rules=(rule,))) as srv, connect(srv) as nomad:
        with anyio.fail_after(30):
            upload = await nomad.create_upload(big, upload_name="resent")
        assert nomad.stats.retries == 1 and nomad.stats.transport_errors == 1
        assert [u.upload_id for u in await nomad.find_uploads("resent")] == [upload.upload_id]
    assert [u.upload_name for u in srv.state.uploads()] == ["resent"]


@pytest.mark.parametrize("kind", ["after", "error", "drop_after"])
async def test_create_dataset_never_makes_twins(api_version: str, kind: str) -> None:
    """A dataset create with an unknown outcome looks the name up before creating again."""
    rule = FaultRule(kind=kind, method="POST", route="/datasets*", status=500, times=1)
    async with (
        serve(api_version=api_version, faults=FaultPlan(rules=(rule,))) as srv,
        connect(srv) as nomad,
    ):
        dataset = await nomad.create_dataset("exactly-one")
        assert dataset.dataset_name == "exactly-one"
        assert await nomad.find_dataset("exactly-one") == dataset
    assert [d.dataset_name for d in srv.state.datasets()] == ["exactly-one"]


async def test_lost_edit_answer_is_reconciled(api_version: str, tmp_path: Path) -> None:
    """An edit whose answer is lost is repeated safely and applied once."""
    archive = calc_zip(tmp_path / "e.zip")
    rule = FaultRule(
        kind="after", method="POST", route="/uploads/{upload_id}/edit", status=502, times=1
    )
    async with (
        serve(api_version=api_version, faults=FaultPlan(rules=(rule,)), edit_time=0.2) as srv,
        connect(srv) as nomad,
    ):
        upload_id = await _processed_upload(nomad, archive, "edit-me")
        await nomad.edit_upload(upload_id, comment="once")
        done = await nomad.wait_for_process(upload_id, process="edit_upload_metadata", **FAST_POLL)
        assert done.succeeded and nomad.stats.retries == 1
    assert srv.state.uploads()[0].entries[0].comment == "once"


async def test_lost_publish_answer_is_reconciled(api_version: str, tmp_path: Path) -> None:
    """A publish whose answer is lost ends published, without an error to the caller."""
    archive = calc_zip(tmp_path / "p.zip")
    rule = FaultRule(
        kind="after",
        method="POST",
        route="/uploads/{upload_id}/action/publish",
        status=504,
        times=1,
    )
    async with (
        serve(api_version=api_version, faults=FaultPlan(rules=(rule,)), publish_time=0.2) as srv,
        connect(srv) as nomad,
    ):
        upload_id = await _processed_upload(nomad, archive, "publish-me")
        await nomad.publish_upload(upload_id)
        done = await nomad.wait_published(upload_id, **FAST_POLL)
        assert done.published and nomad.stats.retries == 1
    assert srv.state.uploads()[0].published


async def test_lost_delete_answer_is_reconciled(api_version: str, tmp_path: Path) -> None:
    """A delete whose answer is lost still ends with the upload gone."""
    archive = calc_zip(tmp_path / "d.zip")
    rule = FaultRule(kind="drop_after", method="DELETE", route="/uploads/{upload_id}", times=1)
    async with (
        serve(api_version=api_version, faults=FaultPlan(rules=(rule,)), delete_time=0.2) as srv,
        connect(srv) as nomad,
    ):
        upload_id = await _processed_upload(nomad, archive, "delete-me")
        with anyio.fail_after(10):
            await nomad.delete_upload(upload_id, timeout=10)
        assert nomad.stats.retries == 1
    assert srv.state.uploads() == []


async def test_request_gate_is_awaited_before_every_attempt() -> None:
    """The gate runs once per HTTP attempt, retries and logins included."""
    calls = 0

    async def gate() -> None:
        nonlocal calls
        calls += 1

    plan = FaultPlan(rules=(FaultRule(route="/users/me", status=503, times=2),))
    async with serve(faults=plan) as srv, connect(srv, request_gate=gate) as nomad:
        await nomad.me()
        assert calls == nomad.stats.requests == 4  # login + 2 failures + success
    assert srv.state.request_count == 4


async def test_a_failing_observer_does_not_break_requests() -> None:
    """An on_response observer that raises is logged and ignored."""

    def broken(info: ResponseInfo) -> None:
        raise RuntimeError("observer bug")

    async with serve() as srv, connect(srv, on_response=broken) as nomad:
        assert (await nomad.me()).username == "test1"


async def test_retry_budget_in_time_is_respected() -> None:
    """Retries stop when the next wait would pass max_time, whatever max_attempts says."""
    policy = RetryPolicy(max_attempts=100, max_time=0.0, initial_wait=0.02, max_wait=0.02, jitter=0)
    plan = FaultPlan(rules=(FaultRule(route="/info", status=502),))
    async with serve(faults=plan) as srv, connect(srv, retry=policy) as nomad:
        with pytest.raises(ServerError, match="502"):
            await nomad.info()
        assert nomad.stats.requests == 1 and nomad.stats.retries == 0
    assert srv.state.route_counts["GET /info"] == 1
