"""Find calculation folders and ready zips, group them into uploads, pack them.

:func:`discover` walks a root lazily and predicts each calculation's mainfiles;
:func:`group_calculations` groups calculations into uploads; :func:`pack_group`
writes one deterministic zip per group. The blocking work (iterating
:func:`discover`, :func:`pack_group`) is meant for worker threads
(``anyio.to_thread.run_sync``); calls share no state. The mainfile matchers live
in :mod:`nomad_bulk.packing.mainfiles`, which imports nothing else of nomad-bulk.
"""

from __future__ import annotations

from nomad_bulk.packing._discover import (
    Calculation,
    Problem,
    ProblemHandler,
    discover,
    predict_mainfiles,
)
from nomad_bulk.packing._group import (
    DEFAULT_MAX_UPLOAD_SIZE,
    NOMAD_MAX_UPLOAD_SIZE,
    Group,
    group_calculations,
    group_key,
    packed_size_bound,
)
from nomad_bulk.packing._pack import DEFAULT_COMPRESS_LEVEL, PackedUpload, pack_group
from nomad_bulk.packing.mainfiles import MAINFILE_MATCHERS, MainfileMatcher, match_mainfile

__all__ = [
    "DEFAULT_COMPRESS_LEVEL",
    "DEFAULT_MAX_UPLOAD_SIZE",
    "MAINFILE_MATCHERS",
    "NOMAD_MAX_UPLOAD_SIZE",
    "Calculation",
    "Group",
    "MainfileMatcher",
    "PackedUpload",
    "Problem",
    "ProblemHandler",
    "discover",
    "group_calculations",
    "group_key",
    "match_mainfile",
    "pack_group",
    "packed_size_bound",
    "predict_mainfiles",
]
