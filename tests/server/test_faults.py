"""Fault injection: each kind fires as planned, is counted, and leaves the server sane."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from nomad_bulk.server import FaultPlan, FaultRule, ServerConfig

from .helpers import Api, calc_zip

pytestmark = pytest.mark.anyio


def _cfg(**plan: object) -> ServerConfig:
    return ServerConfig(faults=FaultPlan(**plan))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "server_config", [_cfg(error_rate={"GET /uploads/{upload_id}": 0.5}, seed=7)]
)
async def test_error_rate_per_route_is_seeded_and_counted(api: Api) -> None:
    """A share of one route's requests get 500; other routes are untouched; counts match."""
    data = await api.upload(calc_zip(1), wait=False)
    await api.idle(data["upload_id"])
    statuses = [(await api.call("GET", f"/uploads/{data['upload_id']}"))[0] for _ in range(40)]
    assert set(statuses) == {200, 500}
    assert api.server.state.fault_counts["error"] == statuses.count(500)
    assert api.server.state.fault_counts["status:500"] == statuses.count(500)
    others = [(await api.call("GET", "/uploads"))[0] for _ in range(5)]
    assert others == [200] * 5


async def test_same_seed_same_faults() -> None:
    """Two injectors with the same plan and seed make the same decisions."""
    from nomad_bulk.server import FaultInjector

    plan = FaultPlan(error_rate={"*": 0.3})
    a, b = FaultInjector(plan, 3), FaultInjector(plan, 3)
    picks_a = [a.pick("GET", "/x") is not None for _ in range(100)]
    picks_b = [b.pick("GET", "/x") is not None for _ in range(100)]
    assert picks_a == picks_b and 10 < sum(picks_a) < 60


@pytest.mark.parametrize(
    "server_config",
    [
        _cfg(
            rules=(
                FaultRule(
                    route="/uploads", method="GET", status=429, retry_after=2, skip=1, times=2
                ),
            )
        )
    ],
)
async def test_burst_with_retry_after(api: Api) -> None:
    """skip=1, times=2: the 2nd and 3rd requests get 429 with Retry-After, then normal."""
    seen = []
    for _ in range(5):
        async with api.session.get(f"{api.url}/uploads", headers=api.headers()) as resp:
            seen.append((resp.status, resp.headers.get("Retry-After")))
    assert seen == [(200, None), (429, "2"), (429, "2"), (200, None), (200, None)]
    assert api.server.state.faults.rule_counts == [2]


@pytest.mark.parametrize(
    "server_config",
    [_cfg(rules=(FaultRule(kind="after", method="POST", route="/uploads", status=502, times=1),))],
)
async def test_response_lost_after_upload_created(api: Api) -> None:
    """kind=after: the upload is created but the client sees 502 (then reconciles by name)."""
    status, _ = await api.call(
        "POST",
        "/uploads",
        params={"file_name": "a.zip", "upload_name": "lost-answer"},
        data=calc_zip(1),
        headers={"Accept": "application/json"},
    )
    assert status == 502
    records = api.server.state.uploads()
    assert [r.upload_name for r in records] == ["lost-answer"]
    await api.idle(records[0].upload_id)
    _, found = await api.call("GET", "/uploads", params={"upload_name": "lost-answer"})
    assert found["pagination"]["total"] == 1
    assert api.server.state.fault_counts["after"] == 1


@pytest.mark.parametrize(
    "server_config",
    [
        _cfg(
            rules=(
                FaultRule(
                    kind="drop", method="POST", route="/uploads", drop_after_bytes=1000, times=1
                ),
            )
        )
    ],
)
async def test_connection_dropped_mid_body_creates_nothing(api: Api) -> None:
    """kind=drop: the connection dies mid-body; no upload exists; the next POST works."""
    with pytest.raises(aiohttp.ClientError):
        await api.call(
            "POST",
            "/uploads",
            params={"file_name": "a.zip"},
            data=calc_zip(50),
            headers={"Accept": "application/json"},
        )
    assert api.server.state.uploads() == []
    assert api.server.state.fault_counts["drop"] == 1
    data = await api.upload(calc_zip(1))
    assert data["data"]["process_status"] == "SUCCESS"


@pytest.mark.parametrize(
    "server_config",
    [_cfg(rules=(FaultRule(kind="drop_after", method="POST", route="/uploads/*/edit", times=1),))],
)
async def test_connection_dropped_after_handling(api: Api) -> None:
    """kind=drop_after: the edit happens but the answer never arrives."""
    data = await api.upload(calc_zip(1))
    with pytest.raises(aiohttp.ClientError):
        await api.call(
            "POST",
            f"/uploads/{data['upload_id']}/edit",
            json={"metadata": {"upload_name": "applied"}},
        )
    await api.idle(data["upload_id"])
    record = api.server.state.get_upload(data["upload_id"])
    assert record is not None and record.upload_name == "applied"


@pytest.mark.parametrize(
    "server_config", [_cfg(rules=(FaultRule(route="/inf*", status=503, retry_after=0.5, times=1),))]
)
async def test_503_on_any_route(api: Api) -> None:
    """A route pattern rule answers 503 with a fractional Retry-After once."""
    async with api.session.get(f"{api.url}/info") as resp:
        assert resp.status == 503 and resp.headers["Retry-After"] == "0.5"
    async with api.session.get(f"{api.url}/info") as resp:
        assert resp.status == 200


@pytest.mark.parametrize("server_config", [_cfg(token_max_age=0.0)])
async def test_early_token_expiry(api: Api) -> None:
    """token_max_age: login tokens are refused as invalid although exp is far away."""
    status, data = await api.call("GET", "/users/me")
    assert status == 401
    assert data == {"detail": "Could not validate credentials. The given token is invalid."}
    assert api.server.state.fault_counts["token_expired"] == 1


@pytest.mark.parametrize("server_config", [_cfg(upload_failure_rate=1.0)])
async def test_processing_failure_share(api: Api) -> None:
    """upload_failure_rate=1: every processing ends FAILURE with an error; counted."""
    data = await api.upload(calc_zip(1))
    assert data["data"]["process_status"] == "FAILURE"
    assert data["data"]["errors"] == ["RuntimeError: Injected processing failure."]
    assert api.server.state.fault_counts["upload_failure"] == 1


@pytest.mark.parametrize("server_config", [_cfg(entry_failure_rate=1.0)])
async def test_entry_failure_share(api: Api) -> None:
    """entry_failure_rate=1: entries fail while the upload itself succeeds."""
    data = await api.upload(calc_zip(3))
    assert data["data"]["process_status"] == "SUCCESS"
    _, entries = await api.call("GET", f"/uploads/{data['upload_id']}/entries")
    assert entries["processing_failed"] == 3
    assert api.server.state.fault_counts["entry_failure"] == 3


@pytest.mark.parametrize("server_config", [_cfg(processing_delay=0.2, latency=0.01)])
async def test_slow_processing_and_latency(api: Api) -> None:
    """processing_delay keeps the upload running; latency is counted per request."""
    data = await api.upload(calc_zip(1), wait=False)
    status, now = await api.call("GET", f"/uploads/{data['upload_id']}")
    assert status == 200 and now["data"]["process_running"] is True
    await api.idle(data["upload_id"])
    assert api.server.state.fault_counts["latency"] >= 2


def test_plan_from_spec_roundtrip(tmp_path: Path) -> None:
    """A plan loads from JSON or @file and survives to_dict/from_dict; bad keys are refused."""
    plan = FaultPlan(
        rules=(FaultRule(kind="after", method="POST", route="/uploads", status=502, times=3),),
        error_rate={"GET /uploads/{upload_id}": 0.2},
        latency=0.01,
        token_max_age=30,
        upload_failure_rate=0.1,
        seed=5,
    )
    text = json.dumps(plan.to_dict())
    assert FaultPlan.from_spec(text) == plan
    path = tmp_path / "plan.json"
    path.write_text(text)
    assert FaultPlan.from_spec(f"@{path}") == plan
    with pytest.raises(ValueError, match="unknown fault plan keys"):
        FaultPlan.from_spec('{"nope": 1}')
    with pytest.raises(ValueError, match="fault kind"):
        FaultPlan.from_spec('{"rules": [{"kind": "explode"}]}')
    with pytest.raises(ValueError, match="not valid JSON"):
        FaultPlan.from_spec("{")
