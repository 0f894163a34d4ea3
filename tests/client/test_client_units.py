"""Pure pieces of the client: backoff, Retry-After, error classification, public API."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

import nomad_bulk.client as client_module
from nomad_bulk.client import RetryPolicy, ServerInfo, process_names
from nomad_bulk.client._classify import classify, is_credential_problem, parse_error_body
from nomad_bulk.client._retry import backoff_delay, parse_retry_after
from nomad_bulk.config import Settings
from nomad_bulk.errors import (
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


def test_public_api_is_pinned() -> None:
    """The client package exports exactly these names, sorted, each documented."""
    assert client_module.__all__ == sorted(client_module.__all__)
    assert client_module.__all__ == [
        "ClientState",
        "ClientStats",
        "NomadClient",
        "ResponseInfo",
        "RetryPolicy",
        "ServerInfo",
        "process_names",
    ]
    for name in client_module.__all__:
        assert getattr(client_module, name).__doc__, name
    public = [m for m in vars(client_module.NomadClient) if not m.startswith("_")]
    for name in public:
        assert getattr(client_module.NomadClient, name).__doc__, name


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=1000),
    jitter=st.floats(min_value=0, max_value=10),
)
def test_backoff_stays_within_its_bounds(
    attempt: int, initial: float, cap: float, jitter: float
) -> None:
    """min(cap, initial*2^(n-1) + U(0, jitter)) never exceeds the cap nor goes negative."""
    delay = backoff_delay(attempt, initial=initial, cap=cap, jitter=jitter, rng=random.Random(1))
    assert 0 <= delay <= cap
    assert delay >= min(cap, initial * 2 ** min(attempt - 1, 60))


def test_backoff_doubles_until_the_cap() -> None:
    """Without jitter the waits are 1, 2, 4, 8 and then capped."""
    waits = [backoff_delay(n, initial=1, cap=10, jitter=0) for n in range(1, 7)]
    assert waits == [1, 2, 4, 8, 10, 10]


def test_policy_bounds_attempts_time_and_retry_after() -> None:
    """next_delay stops at max_attempts, at max_time and past max_retry_after."""
    policy = RetryPolicy(max_attempts=3, max_time=10, initial_wait=1, max_wait=5, jitter=0)
    assert policy.next_delay(1, 0) == 1
    assert policy.next_delay(2, 0) == 2
    assert policy.next_delay(3, 0) is None
    assert policy.next_delay(1, 9.5) is None
    assert policy.next_delay(1, 0, retry_after=7) == 7
    assert RetryPolicy(max_retry_after=5).next_delay(1, 0, retry_after=6) is None
    assert RetryPolicy.no_retries().next_delay(1, 0) is None
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_policy_from_settings() -> None:
    """Settings.max_retries counts retries; the policy counts attempts."""
    settings = Settings(max_retries=2, retry_max_time=9, retry_initial_wait=0.25, retry_max_wait=4)
    policy = RetryPolicy.from_settings(settings)
    assert (policy.max_attempts, policy.max_time, policy.initial_wait, policy.max_wait) == (
        3,
        9,
        0.25,
        4,
    )


def test_retry_after_forms() -> None:
    """Retry-After is read as seconds or as an HTTP date; garbage is ignored."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after("-2") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now=now) == pytest.approx(10)


@pytest.mark.parametrize(
    ("status", "detail", "expected"),
    [
        (400, "Limit of unpublished uploads exceeded for user.", UploadLimitError),
        (400, "Upload abc is blocked by another process", BusyError),
        (400, "Upload is currently blocked by another process", BusyError),
        (400, "The upload is still being processed.", BusyError),
        (400, "The upload is currently being processed, operation not allowed.", BusyError),
        (400, "The upload is still/already processed.", BusyError),
        (400, "Upload already published.", AlreadyPublishedError),
        (
            401,
            "Upload is already published, only admins can perform this operation.",
            AlreadyPublishedError,
        ),
        (400, "Page out of range requested.", BadRequestError),
        (400, "'NoneType' object has no attribute 'is_blocking'", BusyError),
        (422, [{"loc": ["upload_id"], "msg": "No matching upload found"}], NotFoundError),
        (422, [{"loc": ["metadata", "comment"], "msg": "bad"}], ValidationError),
        (400, "Cannot publish an upload that failed processing.", BadRequestError),
        (401, "Could not validate credentials. The given token is invalid.", AuthError),
        (403, "Missing scopes: ['uploads:write']", AuthError),
        (404, "The specified upload_id was not found.", NotFoundError),
        (409, "Conflict", BadRequestError),
        (500, {"reason": "Unexpected exception", "exception": "boom"}, ServerError),
        (502, "Bad Gateway", ServerError),
    ],
)
def test_nomad_messages_are_classified(status: int, detail: object, expected: type) -> None:
    """NOMAD's free-text answers map to precise classes by a table."""
    body = parse_error_body(json.dumps({"detail": detail}).encode(), "application/json")
    error = classify(status, body, method="GET", url="https://x/api/v1/uploads")
    assert type(error) is expected
    assert error.status == status and error.url == "https://x/api/v1/uploads"


def test_validation_items_keep_their_locations() -> None:
    """A 422 keeps each item's loc for ValidationError.locations."""
    raw = b'{"detail": [{"loc": ["metadata", "coauthors"], "msg": "User reference not found"}]}'
    error = classify(422, parse_error_body(raw, "application/json"), method="POST", url="u")
    assert isinstance(error, ValidationError)
    assert error.locations == [("metadata", "coauthors")]
    assert "metadata.coauthors: User reference not found" in str(error)


def test_html_pages_are_summarized_not_dumped() -> None:
    """A proxy's HTML page becomes its title; 5xx pages are ServerError, 413 TooLargeError."""
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>nginx</h1></body></html>"
    body = parse_error_body(page, "text/html")
    assert not body.is_json and body.message == "502 Bad Gateway"
    error = classify(502, body, method="GET", url="u")
    assert isinstance(error, ServerError) and "non-JSON" in str(error)
    assert isinstance(classify(413, body, method="POST", url="u"), TooLargeError)
    assert isinstance(classify(400, body, method="POST", url="u"), ServerError)


def test_unreadable_token_crash_is_an_auth_error() -> None:
    """NOMAD 2.0's 500 KeyError 'kid' for a mangled token is an auth problem, not a 5xx."""
    raw = json.dumps(
        {
            "detail": {
                "reason": "Unexpected exception",
                "exception_class": "KeyError",
                "exception": "'kid'",
            }
        }
    ).encode()
    body = parse_error_body(raw, "application/json")
    assert is_credential_problem(body.message)
    assert isinstance(classify(500, body, method="GET", url="u", logged_in=True), AuthError)
    assert isinstance(classify(500, body, method="GET", url="u", logged_in=False), ServerError)


def test_rate_limit_carries_retry_after() -> None:
    """A 429 becomes RateLimitedError with the parsed Retry-After."""
    error = classify(429, parse_error_body(b"", None), method="GET", url="u", retry_after=2.0)
    assert isinstance(error, RateLimitedError) and error.retry_after == 2.0
    assert isinstance(error, ApiError)


def test_only_credential_401s_trigger_a_relogin() -> None:
    """Token problems re-login; known permission texts do not."""
    assert is_credential_problem("Expired token.")
    assert is_credential_problem(None)
    assert not is_credential_problem("Upload is already published, only admins can do this")


def test_process_names_cover_both_dialects() -> None:
    """Any spelling of a process maps to its 1.3 and 2.0 names."""
    assert process_names("edit_upload_metadata") == process_names("_edit_metadata")
    assert "_publish_upload" in process_names("publish_upload")
    assert process_names("custom") == frozenset({"custom"})


def test_server_info_dialects() -> None:
    """Versions 1.x speak 1.3, versions from 2 on speak 2.0."""
    assert ServerInfo.from_json({"version": "1.3.10.dev33"}).api_version == "1.3"
    assert ServerInfo.from_json({"version": "2.0.0"}).api_version == "2.0"
    assert ServerInfo.from_json({"version": "v3.1"}).api_version == "2.0"
    assert ServerInfo.from_json({}).api_version == "1.3"
