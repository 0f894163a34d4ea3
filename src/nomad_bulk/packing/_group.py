"""Grouping: calculations become uploads, lazily and deterministically.

Greedy and in input order (no bin packing), so a stream of 100,000 calculations
is grouped with one group in memory, and the same input always gives the same
groups. A group's size is an upper bound of its upload's bytes, so a packed zip
never exceeds ``max_upload_size``: the uncompressed content, deflate's worst-case
growth and the zip headers of every member.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from nomad_bulk.errors import ConfigError
from nomad_bulk.packing._discover import Calculation

__all__ = [
    "DEFAULT_MAX_UPLOAD_SIZE",
    "NOMAD_MAX_UPLOAD_SIZE",
    "Group",
    "group_calculations",
    "group_key",
    "member_prefix",
    "packed_size_bound",
]

#: NOMAD's hard limit for one upload (``process.max_upload_size``, 32 GiB).
NOMAD_MAX_UPLOAD_SIZE = 32 * 1024**3
#: The engine's default limit for one packed upload.
DEFAULT_MAX_UPLOAD_SIZE = 10 * 1024**3

# Per member: local header 30 + zip64 extra 20 + central header 46 + zip64 extra 28,
# plus deflate's fixed overhead; the name appears twice (local and central).
_MEMBER_OVERHEAD = 160
# End of central directory, zip64 end record and locator.
_ARCHIVE_OVERHEAD = 128


@dataclass(frozen=True, slots=True)
class Group:
    """Calculations that go into one upload."""

    key: str
    """Deterministic id: a digest of the member keys, in order."""
    calculations: tuple[Calculation, ...]
    size: int
    """Upper bound of the upload's bytes (a ready zip uploaded as is: its exact size)."""
    expected_entries: int
    """Entries NOMAD is predicted to create (the sum of predicted mainfiles)."""
    too_large: bool = False
    """Its one calculation alone is larger than ``max_upload_size`` (or NOMAD's 32 GiB)."""

    @property
    def as_is(self) -> bool:
        """True when the group is one ready zip, uploaded without repacking."""
        return len(self.calculations) == 1 and self.calculations[0].ready_zip is not None


def group_key(keys: Iterable[str]) -> str:
    """The deterministic id of a group of calculation keys (32 hex digits)."""
    digest = hashlib.sha256()
    for key in keys:
        # NUL cannot occur in a path, so the joined form is unambiguous.
        digest.update(key.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()[:32]


def member_prefix(calculation: Calculation) -> str:
    """The folder a calculation's files get inside a packed upload (``""`` for the root)."""
    return "" if calculation.key == "." else calculation.key + "/"


def packed_size_bound(calculation: Calculation) -> int:
    """Bytes the calculation can take at most inside a packed zip."""
    content = calculation.unpacked_size
    prefix = len(member_prefix(calculation).encode("utf-8", "surrogateescape"))
    names = sum(
        _MEMBER_OVERHEAD + 2 * (prefix + len(name.encode("utf-8", "surrogateescape")))
        for name in calculation.files
    )
    # zlib's deflateBound: about 0.03 % growth on incompressible data; 0.1 % is safe.
    return content + content // 1000 + names


def _single(calculation: Calculation, max_upload_size: int) -> Group:
    if calculation.ready_zip is not None:
        size = calculation.size
    else:
        size = packed_size_bound(calculation) + _ARCHIVE_OVERHEAD
    return Group(
        key=group_key([calculation.key]),
        calculations=(calculation,),
        size=size,
        expected_entries=calculation.expected_entries,
        too_large=size > max_upload_size,
    )


def _many(calculations: list[Calculation], max_upload_size: int) -> Group:
    if len(calculations) == 1:
        return _single(calculations[0], max_upload_size)
    size = sum(packed_size_bound(c) for c in calculations) + _ARCHIVE_OVERHEAD
    return Group(
        key=group_key(c.key for c in calculations),
        calculations=tuple(calculations),
        size=size,
        expected_entries=sum(c.expected_entries for c in calculations),
    )


def group_calculations(
    calcs: Iterable[Calculation],
    *,
    per_upload: bool,
    max_upload_size: int = DEFAULT_MAX_UPLOAD_SIZE,
    max_per_upload: int | None = None,
) -> Iterator[Group]:
    """Group calculations into uploads, lazily, in input order.

    ``per_upload=True`` gives every calculation its own upload (the tutorial's way).
    Otherwise consecutive calculations share an upload while its size bound stays
    within ``max_upload_size`` and its count within ``max_per_upload``. A
    calculation larger than ``max_upload_size`` on its own, or one with
    ``problems``, always gets a group of its own (flagged ``too_large`` in the
    first case), so that it fails alone. A group holding a single ready zip is
    uploaded as is (see :attr:`Group.as_is`).

    Raises:
        ConfigError: ``max_upload_size`` is not within 1 byte .. 32 GiB, or
            ``max_per_upload`` is below 1.
    """
    if not 0 < max_upload_size <= NOMAD_MAX_UPLOAD_SIZE:
        raise ConfigError(
            f"max_upload_size must be between 1 byte and NOMAD's limit of 32 GiB "
            f"({NOMAD_MAX_UPLOAD_SIZE} bytes), not {max_upload_size}."
        )
    if max_per_upload is not None and max_per_upload < 1:
        raise ConfigError(f"max_per_upload must be at least 1, not {max_per_upload}.")
    if per_upload:
        return (_single(calc, max_upload_size) for calc in calcs)
    return _greedy(calcs, max_upload_size, max_per_upload)


def _greedy(
    calcs: Iterable[Calculation], max_upload_size: int, max_per_upload: int | None
) -> Iterator[Group]:
    current: list[Calculation] = []
    current_size = _ARCHIVE_OVERHEAD
    for calc in calcs:
        bound = packed_size_bound(calc)
        alone = bool(calc.problems) or bound + _ARCHIVE_OVERHEAD > max_upload_size
        full = current and (
            alone
            or current_size + bound > max_upload_size
            or (max_per_upload is not None and len(current) >= max_per_upload)
        )
        if full:
            yield _many(current, max_upload_size)
            current, current_size = [], _ARCHIVE_OVERHEAD
        if alone:
            yield _single(calc, max_upload_size)
            continue
        current.append(calc)
        current_size += bound
    if current:
        yield _many(current, max_upload_size)
