"""Unit behaviour of the engine's parts: limits, backoff, events, options, samples."""

from __future__ import annotations

import logging
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nomad_bulk.engine import (
    AdaptiveController,
    ByteBudget,
    EventBus,
    Notice,
    PollPolicy,
    RateLimiter,
    RunOptions,
    UploadSlots,
)
from nomad_bulk.engine._backoff import DurationEstimator, poll_delays
from nomad_bulk.engine.limits import SlotsExhaustedError
from nomad_bulk.engine.options import Metadata, format_size, parse_size
from nomad_bulk.errors import ConfigError
from nomad_bulk.samples import FAIL_ENTRY_MARKER, FAIL_UPLOAD_MARKER, make_samples


class Clock:
    """A hand-driven clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Answer:
    status: int | None


def test_rate_limiter_spaces_requests() -> None:
    """At 10 requests/s with no burst, each caller waits 0.1 s more than the previous one."""
    clock = Clock()
    limiter = RateLimiter(10.0, clock=clock)
    waits = [limiter.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_rate_limiter_allows_a_burst_after_quiet() -> None:
    """After a quiet period, `burst` callers go at once, then the rate applies."""
    clock = Clock()
    limiter = RateLimiter(10.0, burst=3, clock=clock)
    clock.now = 100.0
    waits = [limiter.reserve() for _ in range(4)]
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.1])


def test_rate_limiter_unlimited() -> None:
    """rate=None never makes anyone wait."""
    limiter = RateLimiter(None)
    assert all(limiter.reserve() == 0.0 for _ in range(100))


@pytest.mark.anyio
async def test_slots_wait_for_a_release() -> None:
    """A second caller waits for the slot the first one releases."""
    slots = UploadSlots(1)
    await slots.acquire()
    order: list[str] = []

    async def second() -> None:
        await slots.acquire()
        order.append("second")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            order.append("release")
            slots.release()
    assert order == ["release", "second"]


@pytest.mark.anyio
async def test_slots_exhausted_when_all_are_kept() -> None:
    """When every slot is kept for good, waiting callers get SlotsExhaustedError."""
    slots = UploadSlots(2)
    await slots.acquire()
    await slots.acquire()
    errors: list[BaseException] = []

    async def waiter() -> None:
        try:
            await slots.acquire()
        except SlotsExhaustedError as exc:
            errors.append(exc)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await anyio.wait_all_tasks_blocked()
            slots.keep()
            assert not slots.exhausted
            slots.keep()
    assert len(errors) == 1 and slots.exhausted


@pytest.mark.anyio
async def test_slots_from_earlier_uploads() -> None:
    """With no free slot, an earlier upload that gets published makes one."""
    slots = UploadSlots(0, releasers=1)
    exhausted_before = slots.exhausted
    slots.add()
    with anyio.fail_after(5):
        await slots.acquire()
    slots.keep()
    assert not exhausted_before and slots.exhausted
    with pytest.raises(SlotsExhaustedError):
        await slots.acquire()


@pytest.mark.anyio
async def test_slots_unlimited_for_admins() -> None:
    """free=None (an exempt account) never waits and is never exhausted."""
    slots = UploadSlots(None)
    for _ in range(100):
        await slots.acquire()
    assert not slots.exhausted and slots.free is None


@pytest.mark.anyio
async def test_byte_budget_bounds_spool_bytes() -> None:
    """A reservation beyond the budget waits until bytes are released; huge ones run alone."""
    budget = ByteBudget(100)
    assert await budget.acquire(60) == 60
    got: list[int] = []

    async def second() -> None:
        got.append(await budget.acquire(60))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert got == []
            budget.release(60)
    assert got == [60]
    budget.release(60)
    assert await budget.acquire(10_000) == 100


def test_adaptive_controller_halves_on_429_and_recovers() -> None:
    """A 429 halves rate and transfers; good answers bring them back to the configured values."""
    clock = Clock()
    rate = RateLimiter(20.0, clock=clock)
    transfers = anyio.CapacityLimiter(4)
    changes: list[tuple[str, float | None, int]] = []
    ctl = AdaptiveController(
        rate, transfers, recover_after=5, clock=clock, on_change=lambda *a: changes.append(a)
    )
    ctl.on_response(Answer(429))
    assert rate.rate == 10.0 and transfers.total_tokens == 2
    for _ in range(5 * 20):
        ctl.on_response(Answer(200))
    assert rate.rate == 20.0 and transfers.total_tokens == 4
    assert changes[0][0].startswith("server pressure") and changes[-1][0] == "server recovered"


def test_adaptive_controller_needs_a_burst_of_5xx() -> None:
    """Single 503s are tolerated; three within the window cut the rate once."""
    clock = Clock()
    rate = RateLimiter(8.0, clock=clock)
    ctl = AdaptiveController(rate, anyio.CapacityLimiter(2), burst_size=3, window=5.0, clock=clock)
    ctl.on_response(Answer(503))
    clock.now = 10.0
    ctl.on_response(Answer(503))
    assert rate.rate == 8.0
    ctl.on_response(Answer(None))
    ctl.on_response(Answer(502))
    assert rate.rate == 4.0
    ctl.on_response(Answer(503))
    ctl.on_response(Answer(503))
    ctl.on_response(Answer(503))
    assert rate.rate == 4.0  # not twice within one window


def test_adaptive_controller_from_unlimited() -> None:
    """With no configured rate, pressure sets one from the observed rate; recovery lifts it."""
    clock = Clock()
    rate = RateLimiter(None, clock=clock)
    ctl = AdaptiveController(rate, anyio.CapacityLimiter(4), recover_after=1, clock=clock)
    for _ in range(50):
        ctl.on_response(Answer(200))
    ctl.on_response(Answer(429))
    assert rate.rate is not None and rate.rate > 0
    for _ in range(200):
        ctl.on_response(Answer(200))
    assert rate.rate is None


@given(
    initial=st.floats(0.001, 5),
    max_wait=st.floats(0.01, 60),
    expected=st.one_of(st.none(), st.floats(0, 100)),
    seed=st.integers(0, 2**16),
)
def test_poll_delays_stay_within_bounds(
    initial: float, max_wait: float, expected: float | None, seed: int
) -> None:
    """Every poll delay is between min_step and max_wait, and they never shrink past the cap."""
    policy = PollPolicy(initial=initial, max_wait=max_wait, min_step=0.001)
    delays = poll_delays(policy, expected=expected, rng=random.Random(seed))
    values = [next(delays) for _ in range(30)]
    assert all(policy.min_step <= d <= max_wait for d in values)
    assert values[-1] == pytest.approx(max_wait, rel=0.5) or values[-1] <= max_wait


def test_poll_delays_follow_the_expected_duration() -> None:
    """With an expected duration, the first poll comes at 90 % of it, then in short steps."""
    policy = PollPolicy(initial=0.5, max_wait=10, jitter=0)
    delays = poll_delays(policy, expected=2.0)
    first, second, third = next(delays), next(delays), next(delays)
    assert first == pytest.approx(1.8)
    assert second == pytest.approx(0.1) and third == pytest.approx(0.15)


def test_duration_estimator_is_a_moving_mean_per_entry() -> None:
    """The estimate follows observations and scales with the number of entries."""
    est = DurationEstimator(alpha=0.5)
    assert est.expected("process") is None
    est.observe("process", 2.0)
    est.observe("process", 4.0)
    assert est.expected("process") == pytest.approx(3.0)
    est.observe("edit", 10.0, units=10)
    assert est.expected("edit", 5) == pytest.approx(5.0)


def test_event_bus_detaches_a_raising_observer(caplog: pytest.LogCaptureFixture) -> None:
    """An observer that raises is logged and detached; the others keep receiving events."""
    seen: list[object] = []
    calls = 0

    def broken(event: object) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("boom")

    bus = EventBus([broken, seen.append])
    with caplog.at_level(logging.ERROR, logger="nomad_bulk.engine"):
        bus.emit(Notice("one"))
        bus.emit(Notice("two"))
    assert calls == 1 and len(seen) == 2
    assert "detached" in caplog.text


def test_options_validate() -> None:
    """Sizes above NOMAD's 32 GiB, embargoes above 36 months and bad URLs are refused."""
    with pytest.raises(ConfigError, match="32 GiB"):
        RunOptions(max_upload_size=33 * 1024**3).validate()
    with pytest.raises(ConfigError, match="embargo"):
        RunOptions(embargo=37).validate()
    with pytest.raises(ConfigError, match="reference"):
        RunOptions(references=("doi:10.1/x",)).validate()
    RunOptions(max_upload_size=32 * 1024**3, embargo=36).validate()


def test_metadata_digest_changes_with_content() -> None:
    """Two metadata sets differ in digest exactly when their content differs."""
    a = Metadata(dataset_id="D", coauthors=("u2", "u1"), comment="c")
    b = Metadata(dataset_id="D", coauthors=("u1", "u2"), comment="c")
    assert a.digest == b.digest and a.any
    assert Metadata(dataset_id="D", comment="other").digest != a.digest
    assert not Metadata().any


@pytest.mark.parametrize(
    ("text", "size"),
    [("10G", 10 * 1024**3), ("500M", 500 * 1024**2), ("1.5GiB", int(1.5 * 1024**3)), ("42", 42)],
)
def test_parse_size(text: str, size: int) -> None:
    """Sizes read with binary units."""
    assert parse_size(text) == size


def test_parse_size_rejects_nonsense() -> None:
    """An unreadable size raises ValueError with an example."""
    with pytest.raises(ValueError, match="10G"):
        parse_size("ten gigs")
    assert format_size(1536) == "1.5 KiB"


def test_samples_layouts_and_markers(tmp_path: Path) -> None:
    """Samples carry the FHI-aims header, failure markers where asked, and the ready-zip layout."""
    folders = make_samples(tmp_path / "f", 3, fail_entry={2}, fail_upload={3})
    assert [p.name for p in folders] == ["DFT-1", "DFT-2", "DFT-3"]
    assert "Invoking FHI-aims" in (folders[0] / "aims.out").read_text()
    assert FAIL_ENTRY_MARKER in (folders[1] / "aims.out").read_text()[:12000]
    assert FAIL_UPLOAD_MARKER in (folders[2] / "broken.txt").read_text()
    zipped = make_samples(tmp_path / "z", 2, layout="ready-zip")
    archives = list(zipped[0].glob("*.zip"))
    assert len(archives) == 1 and len(archives[0].stem) == 28
    with zipfile.ZipFile(archives[0]) as zf:
        assert sorted(zf.namelist()) == ["aims.out", "control.in", "geometry.in"]
    again = make_samples(tmp_path / "z2", 2, layout="ready-zip")
    assert archives[0].read_bytes() == next(again[0].glob("*.zip")).read_bytes()
    mixed = make_samples(tmp_path / "m", 2, code="mixed", empty={1}, layout="nested")
    assert (mixed[0] / "README.txt").exists() and (mixed[1] / "vasprun.xml").exists()
    assert mixed[0].parent.name == "batch-1"
