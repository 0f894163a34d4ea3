"""Find calculation folders and ready zips, group them into uploads, pack them.

The blocking functions (:func:`pack_group`, and iterating :func:`discover`) are
meant for worker threads (``anyio.to_thread.run_sync``); they share no state.
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
from nomad_bulk.packing._pack import PackedUpload, pack_group
from nomad_bulk.packing.mainfiles import MAINFILE_MATCHERS, MainfileMatcher, match_mainfile

__all__ = [
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
