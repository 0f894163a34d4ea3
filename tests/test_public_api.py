"""The public surface is deliberate: pinned names, docstrings, no import side effects."""

from __future__ import annotations

import inspect
import subprocess
import sys

import nomad_bulk
import nomad_bulk.errors

EXPECTED = [
    "AlreadyPublishedError",
    "ApiError",
    "AuthError",
    "BadRequestError",
    "BusyError",
    "ConfigError",
    "Dataset",
    "Entry",
    "ItemReport",
    "ItemStatus",
    "JournalError",
    "LimitError",
    "NomadBulkError",
    "NomadClient",
    "NotFoundError",
    "OutcomeUnknownError",
    "PackingError",
    "Plan",
    "ProcessStatus",
    "ProcessingError",
    "ProcessingTimeoutError",
    "RateLimitedError",
    "RawDirectory",
    "RawFile",
    "RequestTimeoutError",
    "RunOptions",
    "RunReport",
    "Secret",
    "ServerError",
    "Settings",
    "TooLargeError",
    "TransportError",
    "Upload",
    "UploadLimitError",
    "User",
    "ValidationError",
    "__version__",
    "run_upload",
]


def test_all_is_sorted_and_pinned() -> None:
    """The package root exports exactly the pinned names, sorted."""
    assert nomad_bulk.__all__ == sorted(nomad_bulk.__all__)
    assert nomad_bulk.__all__ == EXPECTED


def test_every_public_name_has_a_docstring() -> None:
    """Each exported class and function documents itself in one line at least."""
    for name in nomad_bulk.__all__:
        if name == "__version__":
            continue
        obj = getattr(nomad_bulk, name)
        assert inspect.getdoc(obj), name


def test_every_error_derives_from_the_root() -> None:
    """Every exception class nomad-bulk exports is a NomadBulkError."""
    for name in nomad_bulk.errors.__all__:
        assert issubclass(getattr(nomad_bulk.errors, name), nomad_bulk.NomadBulkError), name


def test_import_has_no_side_effects() -> None:
    """Importing the package reads no settings, starts no thread and configures no logging."""
    code = (
        "import logging, os, threading, sys\n"
        "before = dict(os.environ)\n"
        "import nomad_bulk, nomad_bulk.sync, nomad_bulk.compat\n"
        "assert dict(os.environ) == before\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert not logging.getLogger().handlers\n"
        "assert 'nest_asyncio' not in sys.modules and 'tqdm' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
