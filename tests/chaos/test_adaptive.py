"""Adaptive pressure (AIMD): the engine slows down when the server says so or fails in a
burst, speeds up again when it recovers, and does not mistake random failures for load."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from nomad_bulk.config import Settings
from nomad_bulk.engine import AdaptiveController, RateLimiter, RunOptions, Throttled, run_upload
from nomad_bulk.samples import make_samples
from nomad_bulk.server import FaultPlan, FaultRule, ServerConfig, running_server

from .invariants import audit, read_manifest, view


@dataclass(frozen=True, slots=True)
class Answer:
    status: int | None
    retry_after: float | None = None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def simulate(
    status_of: Callable[[float, random.Random], int | None],
    *,
    rate: float | None,
    seconds: float,
    seed: int = 0,
    unlimited: float = 100.0,
) -> list[tuple[float, float, int]]:
    """Answers arriving at the controller's own rate; returns (time, rate, transfers) samples."""
    clock = Clock()
    limiter = RateLimiter(rate, clock=clock)
    transfers = anyio.CapacityLimiter(4)
    ctl = AdaptiveController(limiter, transfers, clock=clock)
    rng = random.Random(seed)
    samples = []
    while clock.now < seconds:
        clock.now += 1.0 / (limiter.rate or unlimited)
        ctl.on_response(Answer(status_of(clock.now, rng)))
        samples.append((clock.now, limiter.rate or unlimited, int(transfers.total_tokens)))
    return samples


@pytest.mark.parametrize("rate", [10.0, None], ids=["10-per-second", "unlimited"])
def test_random_errors_do_not_collapse_the_rate(rate: float | None) -> None:
    """A server failing one request in five at random (over 10 simulated minutes) keeps the
    run near full speed: no ratchet down to the floor."""
    samples = simulate(lambda t, rng: 500 if rng.random() < 0.2 else 200, rate=rate, seconds=600)
    full = rate or 100.0
    rates = [r for _, r, _ in samples]
    assert sum(rates) / len(rates) >= 0.75 * full
    assert min(rates) >= full / 8
    assert samples[-1][1] >= full / 2


def test_a_burst_halves_and_recovery_restores() -> None:
    """Ten seconds of 503s cut rate and transfers (once per window, not to the floor at
    once); when the server answers well again both climb back to the configured values."""
    samples = simulate(lambda t, rng: 503 if 20.0 <= t < 30.0 else 200, rate=50.0, seconds=90)
    before = [s for s in samples if s[0] < 20.0]
    during = [s for s in samples if 20.0 <= s[0] < 30.0]
    assert all(r == 50.0 and n == 4 for _, r, n in before)
    assert min(r for _, r, _ in during) < 50.0 and min(n for _, _, n in during) == 1
    assert during[0][1] == 50.0  # the first failure alone is no burst
    assert samples[-1][1:] == (50.0, 4)


def test_an_explicit_request_to_slow_down_is_obeyed_at_once() -> None:
    """One 429, or any answer carrying Retry-After, halves rate and transfers."""
    for answer in (Answer(429), Answer(503, retry_after=1.0)):
        clock = Clock()
        limiter = RateLimiter(20.0, clock=clock)
        transfers = anyio.CapacityLimiter(4)
        AdaptiveController(limiter, transfers, clock=clock).on_response(answer)
        assert (limiter.rate, transfers.total_tokens) == (10.0, 2), answer


@pytest.mark.anyio
async def test_engine_slows_down_under_a_burst_and_speeds_up_after(
    tmp_path: Path, fast: Callable[..., RunOptions], login: Callable[..., Settings]
) -> None:
    """A run meets a burst of 503s: its rate and transfer concurrency drop, then return to
    the configured values; the upload finishes cleanly."""
    make_samples(tmp_path, 30)
    burst = FaultRule(status=503, skip=40, times=12, body="html")
    config = ServerConfig(processing_time=0.01, faults=FaultPlan(rules=(burst,)))
    history: list[tuple[float, Throttled]] = []
    started = anyio.current_time()

    def record(event: Any) -> None:
        if isinstance(event, Throttled):
            history.append((anyio.current_time() - started, event))

    async with running_server(config) as srv:
        options = fast(per_upload=True, publish=True, transfers=4, requests_per_second=200.0)
        with anyio.fail_after(60):
            report = await run_upload(
                tmp_path, settings=login(srv), options=options, observers=[record]
            )
        assert srv.state.fault_counts["status:503"] == 12
        manifest = read_manifest(report.manifest_path or Path())
        audit(view(srv), manifest, publish=True).assert_clean()
    assert report.ok and report.counts["published"] == 30
    cuts = [e for _, e in history if e.reason.startswith("server pressure")]
    assert cuts and cuts[0].reason == "server pressure (HTTP 503)"
    assert min(e.transfers for _, e in history) <= 2
    assert min(e.requests_per_second or 200.0 for _, e in history) <= 100.0
    last = history[-1][1]
    assert last.reason == "server recovered"
    assert (last.requests_per_second, last.transfers) == (200.0, 4)
