"""nomad-bulk: move thousands of calculation folders into NOMAD, fast and safely."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .client import NomadClient
from .config import Secret, Settings
from .engine import ItemReport, ItemStatus, Plan, RunOptions, RunReport, run_upload
from .errors import (
    AlreadyPublishedError,
    ApiError,
    AuthError,
    BadRequestError,
    BusyError,
    ConfigError,
    JournalError,
    LimitError,
    NomadBulkError,
    NotFoundError,
    OutcomeUnknownError,
    PackingError,
    ProcessingError,
    ProcessingTimeoutError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TooLargeError,
    TransportError,
    UploadLimitError,
    ValidationError,
)
from .models import Dataset, Entry, ProcessStatus, RawDirectory, RawFile, Upload, User

try:
    __version__ = version("nomad-bulk")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
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
