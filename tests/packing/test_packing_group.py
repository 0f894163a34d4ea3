"""Grouping: calculations into uploads by size and count, lazily and deterministically."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nomad_bulk.errors import ConfigError
from nomad_bulk.packing import (
    NOMAD_MAX_UPLOAD_SIZE,
    Calculation,
    group_calculations,
    group_key,
    packed_size_bound,
)


def _calc(n: int, size: int, *, problem: bool = False, entries: int = 1) -> Calculation:
    return Calculation(
        key=f"calc-{n:04d}",
        path=Path(f"/data/calc-{n:04d}"),
        files=tuple(f"f{i}" for i in range(max(entries, 1))),
        size=size,
        ready_zip=None,
        mainfiles=tuple(f"f{i}" for i in range(entries)),
        problems=("broken",) if problem else (),
    )


calcs_strategy = st.lists(
    st.tuples(st.integers(0, 5_000), st.booleans(), st.integers(0, 3)), max_size=40
).map(
    lambda xs: [_calc(i, s, problem=p and s % 7 == 0, entries=e) for i, (s, p, e) in enumerate(xs)]
)


@settings(max_examples=150, deadline=None)
@given(
    calcs=calcs_strategy,
    max_size=st.integers(1_000, 12_000),
    max_count=st.one_of(st.none(), st.integers(1, 6)),
)
def test_packed_groups_respect_limits_and_keep_order(
    calcs: list[Calculation], max_size: int, max_count: int | None
) -> None:
    """Groups keep input order, stay within size and count, and are greedy."""
    groups = list(
        group_calculations(
            calcs, per_upload=False, max_upload_size=max_size, max_per_upload=max_count
        )
    )
    assert [c for g in groups for c in g.calculations] == calcs
    for i, group in enumerate(groups):
        bound = sum(packed_size_bound(c) for c in group.calculations)
        assert group.expected_entries == sum(len(c.mainfiles) for c in group.calculations)
        assert group.key == group_key(c.key for c in group.calculations)
        if group.too_large or any(c.problems for c in group.calculations):
            assert len(group.calculations) == 1
            continue
        assert group.size <= max_size and bound <= group.size
        assert max_count is None or len(group.calculations) <= max_count
        if i + 1 < len(groups):
            nxt = groups[i + 1].calculations[0]
            assert (
                groups[i + 1].too_large
                or nxt.problems
                or group.size + packed_size_bound(nxt) > max_size
                or len(group.calculations) == max_count
            )
    again = group_calculations(
        calcs, per_upload=False, max_upload_size=max_size, max_per_upload=max_count
    )
    assert [g.key for g in again] == [g.key for g in groups]


@settings(max_examples=50, deadline=None)
@given(calcs=calcs_strategy, max_size=st.integers(1_000, 12_000))
def test_per_upload_gives_one_group_per_calculation(
    calcs: list[Calculation], max_size: int
) -> None:
    """per_upload makes one group per calculation, keyed by that calculation alone."""
    groups = list(group_calculations(calcs, per_upload=True, max_upload_size=max_size))
    assert [g.calculations for g in groups] == [(c,) for c in calcs]
    assert [g.key for g in groups] == [group_key([c.key]) for c in calcs]
    assert all(g.too_large == (g.size > max_size) for g in groups)


def test_too_large_calculation_gets_its_own_flagged_group() -> None:
    """A calculation bigger than the limit is alone and flagged; neighbours still group."""
    calcs = [_calc(0, 100), _calc(1, 50_000), _calc(2, 100), _calc(3, 100)]
    groups = list(group_calculations(calcs, per_upload=False, max_upload_size=10_000))
    assert [[c.key for c in g.calculations] for g in groups] == [
        ["calc-0000"],
        ["calc-0001"],
        ["calc-0002", "calc-0003"],
    ]
    assert [g.too_large for g in groups] == [False, True, False]


def test_grouping_is_lazy() -> None:
    """Groups come out while the input is still being produced."""
    produced: list[int] = []

    def source() -> Iterator[Calculation]:
        for n in range(1000):
            produced.append(n)
            yield _calc(n, 10)

    groups = group_calculations(source(), per_upload=False, max_upload_size=10**9, max_per_upload=3)
    first = next(groups)
    assert len(first.calculations) == 3 and len(produced) == 4


def test_ready_zip_alone_is_as_is_with_its_exact_size(tmp_path: Path) -> None:
    """A group of one ready zip is uploaded as is, so its size is the zip's."""
    calc = Calculation(
        key="DFT-1",
        path=tmp_path,
        files=("aims.out",),
        size=1234,
        ready_zip=tmp_path / "a.zip",
        mainfiles=("aims.out",),
        content_size=99_999,
    )
    (group,) = group_calculations([calc], per_upload=True, max_upload_size=2000)
    assert group.as_is and group.size == 1234 and not group.too_large
    (group,) = group_calculations([calc], per_upload=False, max_upload_size=200_000)
    assert group.as_is
    (group,) = group_calculations([calc, _calc(1, 5)], per_upload=False, max_upload_size=200_000)
    assert not group.as_is and group.size >= 99_999


@pytest.mark.parametrize(
    ("max_size", "max_count"),
    [(0, None), (NOMAD_MAX_UPLOAD_SIZE + 1, None), (1000, 0)],
)
def test_invalid_limits_are_refused(max_size: int, max_count: int | None) -> None:
    """Limits outside 1 byte..32 GiB or a count below 1 raise ConfigError at once."""
    with pytest.raises(ConfigError):
        group_calculations([], per_upload=False, max_upload_size=max_size, max_per_upload=max_count)
