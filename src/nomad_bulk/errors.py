"""The whole exception tree of nomad-bulk.

Every error the library raises derives from :class:`NomadBulkError`; aiohttp's
exceptions never leave the client. Messages say what happened and what to do.
URLs are sanitized and secrets never appear in any message::

    NomadBulkError
    ├─ ConfigError(ValueError)          bad settings, missing credentials
    ├─ ApiError                         .status .method .url .server_message
    │  ├─ AuthError                     401/403 after one re-login
    │  ├─ NotFoundError                 404
    │  ├─ LimitError                    a NOMAD limit was hit
    │  │  ├─ UploadLimitError           "Limit of unpublished uploads exceeded"
    │  │  └─ TooLargeError              413 from the proxy
    │  ├─ RateLimitedError              429 (.retry_after)
    │  ├─ BusyError                     "blocked by another process" / "being processed"
    │  ├─ AlreadyPublishedError         "Upload already published."
    │  ├─ ValidationError               422 (.errors with field locations)
    │  ├─ BadRequestError               any other 400
    │  └─ ServerError                   5xx (and HTML pages from a proxy)
    ├─ TransportError                   connection refused, reset, DNS, TLS
    │  └─ RequestTimeoutError(TimeoutError)
    ├─ OutcomeUnknownError              a create whose answer was lost (.upload_name)
    ├─ ProcessingError                  NOMAD processed it and it failed (.upload_id, .errors)
    │  └─ ProcessingTimeoutError(TimeoutError)
    ├─ PackingError                     unreadable file, link escaping the root, bad zip
    └─ JournalError                     journal of another root/deployment, unusable journal
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "AlreadyPublishedError",
    "ApiError",
    "AuthError",
    "BadRequestError",
    "BusyError",
    "ConfigError",
    "JournalError",
    "LimitError",
    "NomadBulkError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PackingError",
    "ProcessingError",
    "ProcessingTimeoutError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ServerError",
    "TooLargeError",
    "TransportError",
    "UploadLimitError",
    "ValidationError",
]


class NomadBulkError(Exception):
    """Root of every error raised by nomad-bulk."""


class ConfigError(NomadBulkError, ValueError):
    """Settings are missing, contradictory or unsafe."""


class ApiError(NomadBulkError):
    """NOMAD (or a proxy in front of it) answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        method: str | None = None,
        url: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.method = method
        self.url = url
        self.server_message = server_message


class AuthError(ApiError):
    """Credentials were refused (401/403), also after one fresh login."""


class NotFoundError(ApiError):
    """The upload, entry, dataset or user does not exist (or is not visible)."""


class LimitError(ApiError):
    """A NOMAD limit was hit."""


class UploadLimitError(LimitError):
    """The user's limit of unpublished uploads is used up."""


class TooLargeError(LimitError):
    """The request body is larger than the server accepts (413)."""


class RateLimitedError(ApiError):
    """The server asked to slow down (429); ``retry_after`` is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BusyError(ApiError):
    """The upload is blocked by another process; wait and try again."""


class AlreadyPublishedError(ApiError):
    """The upload is already published."""


class ValidationError(ApiError):
    """NOMAD refused the request's values (422); ``errors`` holds each location."""

    def __init__(
        self, message: str, *, errors: Sequence[dict[str, Any]] = (), **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.errors: tuple[dict[str, Any], ...] = tuple(errors)

    @property
    def locations(self) -> list[tuple[str | int, ...]]:
        """The field locations NOMAD named, e.g. ``("metadata", "coauthors")``."""
        return [tuple(error.get("loc", ())) for error in self.errors]


class BadRequestError(ApiError):
    """Any other 400 answer; ``server_message`` holds NOMAD's text."""


class ServerError(ApiError):
    """The server failed (5xx) or sent something that is not NOMAD JSON."""


class TransportError(NomadBulkError):
    """The request did not get an answer: refused, reset, DNS or TLS failure."""


class RequestTimeoutError(TransportError, TimeoutError):
    """The server did not answer in time."""


class OutcomeUnknownError(NomadBulkError):
    """A create request may or may not have taken effect; reconcile by ``upload_name``."""

    def __init__(self, message: str, *, upload_name: str | None = None) -> None:
        super().__init__(message)
        self.upload_name = upload_name


class ProcessingError(NomadBulkError):
    """NOMAD processed the upload and the processing failed."""

    def __init__(
        self,
        message: str,
        *,
        upload_id: str | None = None,
        errors: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.upload_id = upload_id
        self.errors: tuple[str, ...] = tuple(errors)


class ProcessingTimeoutError(ProcessingError, TimeoutError):
    """Processing did not finish before the deadline."""


class PackingError(NomadBulkError):
    """A calculation folder cannot be packed (unreadable, unsafe link, bad zip, too large)."""


class JournalError(NomadBulkError):
    """The run journal cannot be used (another root or deployment, or damaged)."""
