"""Turn an HTTP error answer into one exception of :mod:`nomad_bulk.errors`.

NOMAD signals most problems as 400 with free text in ``detail``; the table
below maps those texts to precise classes. Anything that is not NOMAD JSON
(an HTML page from a proxy, a truncated body) is handled too.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import (
    AlreadyPublishedError,
    ApiError,
    AuthError,
    BadRequestError,
    BusyError,
    NotFoundError,
    RateLimitedError,
    ServerError,
    TooLargeError,
    UploadLimitError,
    ValidationError,
)

__all__ = [
    "ErrorBody",
    "classify",
    "is_credential_problem",
    "is_page_out_of_range",
    "is_token_crash",
    "parse_error_body",
]

#: At most this many characters of a server's text go into an exception message.
_MAX_TEXT = 300

# (needle, class, hint): the first needle found (case-insensitive) in NOMAD's
# message decides the class for 400/401/403/409 answers.
_TEXT_TABLE: tuple[tuple[str, type[ApiError], str], ...] = (
    (
        "limit of unpublished uploads exceeded",
        UploadLimitError,
        "publish or delete some unpublished uploads, or wait for running ones to finish",
    ),
    (
        "blocked by another process",
        BusyError,
        "wait until the upload's current process has finished, then try again",
    ),
    (
        "still being processed",
        BusyError,
        "wait until the upload's current process has finished, then try again",
    ),
    (
        "currently being processed",
        BusyError,
        "wait until the upload's current process has finished, then try again",
    ),
    (
        "still/already processed",
        BusyError,
        "wait until the upload's current process has finished, then try again",
    ),
    (
        "process is already running",
        BusyError,
        "wait until the upload's current process has finished, then try again",
    ),
    ("upload already published", AlreadyPublishedError, "nothing to do: it is published"),
    (
        "upload is already published",
        AlreadyPublishedError,
        "published uploads are frozen; only coauthor-level metadata can still change",
    ),
    ("is published, embargo can only be lifted", AlreadyPublishedError, ""),
    # NOMAD: 2.0.0 answers an edit or publish while any process is pending or running
    # with 400 "'NoneType' object has no attribute 'is_blocking'" (seen on the real app).
    (
        "attribute 'is_blocking'",
        BusyError,
        "wait until the upload's current process has finished, then try again",
    ),
)

# 422 texts that are not about a field's value.
_VALIDATION_TABLE: tuple[tuple[str, type[ApiError], str], ...] = (
    ("no matching upload found", NotFoundError, "check the upload_id"),
)

# 401 answers whose text says the credentials themselves are bad or missing:
# only these trigger a fresh login (others are permission problems).
_CREDENTIAL_NEEDLES = (
    "could not validate credentials",
    "expired token",
    "invalid token",
    "token with invalid",
    "authorization required",
    "not authenticated",
    "unknown user",
    "signature has expired",
    "token is invalid",
    "token has expired",
)

# NOMAD: 2.0.0 answers a bearer token it cannot parse (a JWT without a "kid"
# header, e.g. a mangled NOMAD_TOKEN) with 500 "KeyError: 'kid'" instead of 401.
_TOKEN_CRASH_NEEDLES = ("keyerror: 'kid'",)

_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")
_TITLE_RE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an error answer said: NOMAD's text, 422 items, and whether it was JSON."""

    message: str | None
    items: tuple[dict[str, Any], ...] = ()
    is_json: bool = False


def _short(text: str) -> str:
    text = _SPACE_RE.sub(" ", text).strip()
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _html_text(raw: str) -> str:
    title = _TITLE_RE.search(raw)
    if title:
        return _short(html.unescape(_TAG_RE.sub(" ", title.group(1))))
    return _short(html.unescape(_TAG_RE.sub(" ", raw)))


def _detail_text(detail: Any) -> str | None:
    if detail is None:
        return None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, Mapping):
        # NOMAD's 500 body: {"reason": ..., "exception": ..., "exception_class": ...};
        # the traceback is deliberately left out.
        parts = [
            str(detail[k]) for k in ("reason", "exception_class", "exception") if detail.get(k)
        ]
        return ": ".join(parts) if parts else json.dumps(detail)[:_MAX_TEXT]
    if isinstance(detail, Sequence):
        texts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()) or ())
                msg = str(item.get("msg", ""))
                texts.append(f"{loc}: {msg}" if loc else msg)
            else:
                texts.append(str(item))
        return "; ".join(texts)
    return str(detail)


def parse_error_body(raw: bytes, content_type: str | None) -> ErrorBody:
    """Read NOMAD's ``{"detail": …}`` or make sense of a non-JSON page."""
    text = raw.decode("utf-8", errors="replace")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError:
        data = None
        if "html" in (content_type or "").lower() or text.lstrip().startswith("<"):
            return ErrorBody(_html_text(text) or None)
        return ErrorBody(_short(text) or None)
    if isinstance(data, Mapping):
        detail = data.get("detail", data.get("message", data.get("description")))
        items: tuple[dict[str, Any], ...] = ()
        if isinstance(detail, list):
            items = tuple(dict(item) for item in detail if isinstance(item, Mapping))
        message = _detail_text(detail)
        return ErrorBody(_short(message) if message else None, items, True)
    if data is None:
        return ErrorBody(None, (), True)
    return ErrorBody(_short(str(data)), (), True)


def is_credential_problem(message: str | None) -> bool:
    """True if a 401's text says the token or login is bad, not a missing permission."""
    if not message:
        return True  # a bare 401 (e.g. from a proxy): assume the token
    lowered = message.lower()
    if any(needle in lowered for needle in _CREDENTIAL_NEEDLES):
        return True
    return not any(needle in lowered for needle, _cls, _hint in _TEXT_TABLE)


def is_token_crash(status: int, message: str | None) -> bool:
    """True for NOMAD's 500 that really means "this bearer token is unreadable"."""
    if status < 500 or not message:
        return False
    lowered = message.lower()
    return any(needle in lowered for needle in _TOKEN_CRASH_NEEDLES)


def is_page_out_of_range(error: BaseException) -> bool:
    """True for NOMAD's 400 when a page past the end was requested."""
    message = getattr(error, "server_message", None) or ""
    return isinstance(error, BadRequestError) and "page out of range" in message.lower()


def _from_table(
    message: str | None, table: tuple[tuple[str, type[ApiError], str], ...] = _TEXT_TABLE
) -> tuple[type[ApiError], str] | None:
    if not message:
        return None
    lowered = message.lower()
    for needle, cls, hint in table:
        if needle in lowered:
            return cls, hint
    return None


def classify(
    status: int,
    body: ErrorBody,
    *,
    method: str,
    url: str,
    retry_after: float | None = None,
    logged_in: bool = False,
) -> ApiError:
    """Build the exception for an error answer; ``url`` must already be sanitized."""
    where = f"{method} {url}"
    said = body.message
    said_part = f": {said}" if said else ""
    common: dict[str, Any] = {
        "status": status,
        "method": method,
        "url": url,
        "server_message": said,
    }

    if logged_in and is_token_crash(status, said):
        return AuthError(
            f"{where} was not authorized: NOMAD could not read the bearer token "
            f"({status}{said_part}); check NOMAD_TOKEN, or log in with username and password",
            **common,
        )
    if status >= 500 or (not body.is_json and status not in (401, 403, 404, 413, 429)):
        if body.is_json:
            text = f"{where} failed on the server ({status}){said_part}; try again later"
        else:
            text = (
                f"{where} got a non-JSON {status} answer (from a proxy or gateway?)"
                f"{said_part}; check the URL and try again later"
            )
        return ServerError(text, **common)

    if status in (400, 401, 403, 409, 422):
        hit = _from_table(said, _VALIDATION_TABLE if status == 422 else _TEXT_TABLE)
        if hit is not None:
            cls, hint = hit
            suffix = f"; {hint}" if hint else ""
            return cls(f"{where} was refused ({status}){said_part}{suffix}", **common)

    if status in (401, 403):
        if logged_in and status == 401 and said and is_credential_problem(said):
            hint = (
                "NOMAD refused the token (expired, revoked or from another deployment): "
                "get a new one (NOMAD_TOKEN, --token-file), or log in with NOMAD_USERNAME "
                "and NOMAD_PASSWORD"
            )
        elif logged_in:
            hint = "the account may lack access to this resource, or the credentials were refused"
        else:
            hint = "set NOMAD_USERNAME and NOMAD_PASSWORD, or NOMAD_TOKEN"
        return AuthError(f"{where} was not authorized ({status}){said_part}; {hint}", **common)
    if status == 404:
        return NotFoundError(f"{where} found nothing (404){said_part}", **common)
    if status == 413:
        return TooLargeError(
            f"{where} was too large for the server (413){said_part}; "
            "split the data into smaller uploads",
            **common,
        )
    if status == 422:
        return ValidationError(
            f"{where} was refused as invalid (422){said_part}", errors=body.items, **common
        )
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after is not None else ""
        return RateLimitedError(
            f"{where} was rate limited (429){said_part}{wait}",
            retry_after=retry_after,
            **common,
        )
    return BadRequestError(f"{where} was refused ({status}){said_part}", **common)
