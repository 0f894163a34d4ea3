"""Unit behaviour of the engine's parts: limits, backoff, pre-flight, events, options, samples."""

from __future__ import annotations

import itertools
import logging
import random
import zipfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nomad_bulk.client import NomadClient
from nomad_bulk.config import Secret, Settings
from nomad_bulk.engine import (
    AdaptiveController,
    ByteBudget,
    EventBus,
    Notice,
    PollPolicy,
    RateLimiter,
    RunOptions,
    UploadSlots,
    run_upload,
)
from nomad_bulk.engine._backoff import DurationEstimator, poll_delays
from nomad_bulk.engine.limits import SlotsExhaustedError
from nomad_bulk.engine.options import Metadata, format_size, parse_size
from nomad_bulk.engine.run import _all_of
from nomad_bulk.errors import AuthError, ConfigError, NotFoundError
from nomad_bulk.samples import FAIL_ENTRY_MARKER, FAIL_UPLOAD_MARKER, make_samples
from nomad_bulk.server import running_server


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


def _poll_until_done(
    policy: PollPolicy, duration: float, rtt: float, expected: float | None, seed: int
) -> tuple[list[float], list[float]]:
    """Drive poll_delays on a simulated clock: each poll is sent after its delay
    and answered one ``rtt`` later; the process is seen done by the first poll
    sent at or after ``duration``. Return the delays and the send times."""
    clock = Clock()
    delays = poll_delays(policy, expected=expected, rng=random.Random(seed), clock=clock)
    given_delays: list[float] = []
    sent: list[float] = []
    for _ in range(10_000):
        delay = next(delays)
        given_delays.append(delay)
        clock.now += delay
        sent.append(clock.now)
        clock.now += rtt
        if sent[-1] >= duration:
            return given_delays, sent
    raise AssertionError("the process was never seen done")


@given(
    initial=st.floats(0.001, 5),
    max_wait=st.floats(0.01, 60),
    expected=st.one_of(st.none(), st.floats(0, 100)),
    clock_steps=st.lists(st.floats(0, 50), min_size=30, max_size=30),
    seed=st.integers(0, 2**16),
)
def test_poll_delays_stay_within_bounds(
    initial: float,
    max_wait: float,
    expected: float | None,
    clock_steps: list[float],
    seed: int,
) -> None:
    """Every poll delay is between min_step and max_wait, whatever the clock does."""
    policy = PollPolicy(initial=initial, max_wait=max_wait, min_step=0.001)
    clock = Clock()
    delays = poll_delays(policy, expected=expected, rng=random.Random(seed), clock=clock)
    for step in clock_steps:
        delay = next(delays)
        assert policy.min_step <= delay <= max_wait
        clock.now += delay + step


@given(
    duration=st.floats(0.001, 3000),
    rtt=st.floats(0, 0.5),
    expected=st.one_of(st.none(), st.floats(0.001, 3000)),
    fraction=st.floats(0.01, 0.5),
    jitter=st.floats(0, 1),
    seed=st.integers(0, 2**16),
)
def test_poll_overshoot_is_a_bounded_share_of_the_duration(
    duration: float,
    rtt: float,
    expected: float | None,
    fraction: float,
    jitter: float,
    seed: int,
) -> None:
    """After the first poll, the poll that sees the end comes at most (fraction + jitter
    share) of the elapsed time plus one round trip after it, capped by max_wait."""
    policy = PollPolicy(fraction=fraction, jitter=jitter)
    delays, sent = _poll_until_done(policy, duration, rtt, expected, seed)
    overshoot = sent[-1] - duration
    if len(sent) == 1:
        assert overshoot <= delays[0]
        return
    # The last poll that saw the process running was sent before its end, so the
    # delay after it was computed at an elapsed time below duration + rtt.
    step = min(policy.max_wait, 1.1 * max(policy.floor, fraction * (duration + rtt)))
    # A first delay shortened by the cap is followed by one aimed at the first poll's time.
    first = policy.initial if expected is None else 0.9 * expected
    assert overshoot <= max(first - duration, rtt + step) + 1e-9
    if first <= duration and duration >= 10 and rtt <= 0.05 and duration * fraction >= 0.05:
        assert overshoot <= 1.1 * fraction * duration + 2 * rtt + 1e-9


@given(
    durations=st.lists(st.floats(0.01, 100), min_size=1, max_size=5),
    rtt=st.floats(0, 0.2),
    seed=st.integers(0, 2**16),
)
def test_poll_times_increase_and_delays_never_shrink(
    durations: list[float], rtt: float, seed: int
) -> None:
    """Without jitter and without an expected duration, each delay after the first is at
    least the previous one (elapsed time only grows), and the send times increase."""
    policy = PollPolicy(jitter=0)
    for duration in durations:
        delays, sent = _poll_until_done(policy, duration, rtt, None, seed)
        assert all(b > a for a, b in itertools.pairwise(sent))
        later = delays[1:]
        assert all(b >= a for a, b in itertools.pairwise(later))


def test_poll_delays_follow_the_expected_duration() -> None:
    """With an expected duration the first poll comes at 90 % of it, then in short
    steps near the expected end, then at the usual fraction of the elapsed time."""
    policy = PollPolicy(initial=0.5, max_wait=10, jitter=0)
    clock = Clock()
    delays = poll_delays(policy, expected=2.0, clock=clock)
    assert next(delays) == pytest.approx(1.8)
    clock.now = 2.0
    assert next(delays) == pytest.approx(0.06)  # 0.3 * 0.1 * 2 s
    clock.now = 3.0
    assert next(delays) == pytest.approx(0.3)  # 0.1 * 3 s
    clock.now = 500.0
    assert next(delays) == pytest.approx(10.0)  # the cap


def test_poll_delays_without_knowledge() -> None:
    """Without an expected duration: policy.initial first, then the floor
    (initial / 10), then a tenth of the elapsed time."""
    policy = PollPolicy(initial=0.5, max_wait=10, jitter=0)
    clock = Clock()
    delays = poll_delays(policy, clock=clock)
    assert next(delays) == pytest.approx(0.5)
    clock.now = 0.5
    assert next(delays) == pytest.approx(0.05)
    clock.now = 4.0
    assert next(delays) == pytest.approx(0.4)


def test_capped_first_delay_still_aims_at_the_expected_time() -> None:
    """An expected duration beyond max_wait is approached in capped steps, not in
    short ones from the cap on."""
    policy = PollPolicy(max_wait=15, jitter=0)
    clock = Clock()
    delays = poll_delays(policy, expected=100.0, clock=clock)
    assert next(delays) == 15.0
    clock.now = 15.0
    assert next(delays) == 15.0
    clock.now = 85.0
    assert next(delays) == pytest.approx(5.0)


@pytest.mark.parametrize(("duration", "most"), [(0.3, 3), (1.0, 4), (3.0, 6), (30.0, 8)])
def test_known_durations_take_few_polls(duration: float, most: int) -> None:
    """A process that takes as long as expected (within 5 %) is seen done within a
    few polls and a few per cent of its duration plus one round trip."""
    for seed in range(50):
        expected = duration * random.Random(seed).uniform(0.95, 1.05)
        _, sent = _poll_until_done(PollPolicy(), duration, 0.02, expected, seed)
        assert len(sent) <= most
        assert sent[-1] - duration <= 0.045 * duration + 0.02


def test_duration_estimator_is_a_moving_mean() -> None:
    """The estimate follows observations; for the same size it is the moving mean."""
    est = DurationEstimator(alpha=0.5)
    assert est.expected("process") is None
    est.observe("process", 2.0)
    est.observe("process", 4.0)
    assert est.expected("process") == pytest.approx(3.0)
    est.observe("edit", 10.0, units=10)
    assert est.expected("edit", 10) == pytest.approx(10.0)
    assert est.expected("edit", 5) == pytest.approx(5.0)
    assert est.expected("edit", 200) == pytest.approx(10.0)


@given(
    base=st.floats(0, 100),
    per_unit=st.floats(0, 10),
    sizes=st.lists(st.integers(1, 10_000), min_size=1, max_size=20),
    asked=st.integers(1, 100_000),
    alpha=st.floats(0.05, 1),
)
def test_duration_estimator_never_overestimates_affine_durations(
    base: float, per_unit: float, sizes: list[int], asked: int, alpha: float
) -> None:
    """When durations are a fixed part plus a part per entry, the estimate for any
    size is at most the true duration: a 200-entry upload after 1-entry ones is
    not first polled late, nor a small upload after large ones."""
    est = DurationEstimator(alpha=alpha)
    for size in sizes:
        est.observe("process", base + per_unit * size, size)
    expected = est.expected("process", asked)
    assert expected is not None
    assert expected <= (base + per_unit * asked) * (1 + 1e-9) + 1e-9


def test_duration_estimator_mixed_sizes() -> None:
    """After 1-entry uploads of 1.01 s, a 200-entry upload is expected to take
    1.01 s (first poll at 0.9 s), not 202 s."""
    est = DurationEstimator()
    for _ in range(10):
        est.observe("process", 1.01, 1)
    assert est.expected("process", 200) == pytest.approx(1.01)
    for _ in range(10):
        est.observe("process", 3.0, 200)
    small = est.expected("process", 1)
    assert small is not None and small < 1.01


@pytest.mark.anyio
async def test_all_of_runs_steps_concurrently() -> None:
    """Each step can wait for another that starts after it: they run at the same time."""
    ready = [anyio.Event() for _ in range(3)]
    done: list[int] = []

    def step(i: int) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            ready[i].set()
            for event in ready:
                await event.wait()
            done.append(i)

        return run

    with anyio.fail_after(5):
        await _all_of([step(0), step(1), step(2)])
    assert sorted(done) == [0, 1, 2]


@pytest.mark.anyio
async def test_all_of_raises_the_earliest_steps_failure_alone() -> None:
    """When several steps fail, the first step's error is raised by itself (not a group),
    even if a later step failed sooner; no step is cancelled for another's failure."""
    later_failed = anyio.Event()
    finished: list[str] = []

    async def first() -> None:
        await later_failed.wait()
        raise AuthError("first step")

    async def second() -> None:
        later_failed.set()
        raise NotFoundError("second step")

    async def third() -> None:
        await later_failed.wait()
        await anyio.lowlevel.checkpoint()
        finished.append("third")

    with anyio.fail_after(5), pytest.raises(AuthError, match="first step") as caught:
        await _all_of([first, second, third])
    assert type(caught.value) is AuthError
    assert finished == ["third"]


@pytest.mark.anyio
async def test_preflight_checks_land_in_the_plan(tmp_path: Path) -> None:
    """The concurrent pre-flight finds the server version, the user, the held uploads,
    an existing dataset and the coauthors, as a dry run's plan shows, asking for each once."""
    make_samples(tmp_path, 2)
    async with running_server() as srv:
        settings = Settings(url=srv.url, username="test1", password=Secret("password"))
        options = RunOptions(
            dry_run=True,
            dataset="existing",
            coauthors=("coauthor1@example.org", "coauthor2"),
            requests_per_second=None,
        )
        with anyio.fail_after(30):
            async with NomadClient(settings) as nomad:
                dataset = await nomad.create_dataset("existing")
            before = srv.state.route_counts.copy()
            report = await run_upload(tmp_path, settings=settings, options=options)
        sent = srv.state.route_counts - before
        assert sent["GET /users/me"] == 1 and sent["GET /info"] == 1
        plan = report.plan
        assert plan.server_version and plan.user == "test1"
        assert (plan.held_uploads, plan.free_slots) == (0, 10)
        assert plan.dataset_id == dataset.dataset_id
        assert len(plan.coauthors) == 2 and "coauthor1@example.org" in plan.coauthors[0]
        assert srv.state.route_counts["POST /uploads"] == 0


@pytest.mark.anyio
async def test_preflight_failure_is_one_config_error(tmp_path: Path) -> None:
    """An unknown coauthor next to other concurrent checks raises one ConfigError."""
    make_samples(tmp_path, 1)
    async with running_server() as srv:
        settings = Settings(url=srv.url, username="test1", password=Secret("password"))
        options = RunOptions(
            dataset="new one", coauthors=("nobody@example.org",), requests_per_second=None
        )
        with anyio.fail_after(30), pytest.raises(ConfigError, match="nobody") as caught:
            await run_upload(tmp_path, settings=settings, options=options)
        assert type(caught.value) is ConfigError
        assert srv.state.uploads() == [] and srv.state.datasets() == []


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
