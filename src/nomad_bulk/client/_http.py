"""The single request funnel: auth, retries, redirects, errors, statistics.

Every HTTP call of :class:`~nomad_bulk.client.NomadClient` goes through
:meth:`Http.send`. It adds the bearer token (renewing it before it runs out),
awaits the optional global request gate, retries what is safe to retry,
follows same-origin redirects, turns every error answer into one exception of
:mod:`nomad_bulk.errors` and every aiohttp exception into a
:class:`~nomad_bulk.errors.TransportError` (``raise … from``), and reports each
answer to an optional observer.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import urljoin, urlsplit

import aiohttp
import anyio
from yarl import URL

from ..config import Secret, Settings, sanitize_url
from ..errors import (
    ApiError,
    AuthError,
    ConfigError,
    RequestTimeoutError,
    ServerError,
    TransportError,
)
from ._auth import Token, TokenManager
from ._classify import classify, is_credential_problem, parse_error_body
from ._retry import RetryPolicy, parse_retry_after
from ._stream import FileBody

__all__ = [
    "FIRST_CONTACT",
    "Attempts",
    "AuthMode",
    "ClientStats",
    "Http",
    "Replay",
    "ResponseInfo",
    "read_json",
]

logger = logging.getLogger("nomad_bulk.client")

T = TypeVar("T")
Params = Sequence[tuple[str, str]]
AuthMode = Literal["none", "optional", "required"]
Reader = Callable[[aiohttp.ClientResponse], Awaitable[T]]

#: Error bodies are read up to this size; the rest is not needed for a message.
MAX_ERROR_BODY = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
#: Retries before NOMAD has answered once (with the policy from Settings): no connection,
#: or pages that are not NOMAD's JSON, at the very start of a session mean a wrong URL far
#: more often than an outage beginning just then, so the user hears of it in seconds.
FIRST_CONTACT = RetryPolicy(
    max_attempts=3, max_time=5.0, initial_wait=0.5, max_wait=2.0, jitter=0.25, max_retry_after=5.0
)
_MAX_REDIRECTS = 5


class Replay(enum.Enum):
    """How a request may be repeated after a failure."""

    #: Idempotent: repeat on transport errors, 5xx and 429.
    SAFE = "safe"
    #: A create: repeat only when it provably did not reach the server (refused
    #: connection, body not fully sent) or the server refused it (429).
    UNSAFE = "unsafe"


@dataclass(frozen=True, slots=True)
class ResponseInfo:
    """One answer or transport failure, as reported to ``on_response``.

    ``status`` is None for a transport failure, then ``error`` names the
    exception class. ``elapsed`` is in seconds; ``url`` is sanitized.
    """

    method: str
    url: str
    status: int | None
    elapsed: float
    attempt: int
    retry_after: float | None = None
    error: str | None = None


@dataclass(slots=True)
class ClientStats:
    """Counters of what the client did on the wire (mutable, for observers and tests)."""

    #: HTTP attempts made, including retries, re-logins and redirects.
    requests: int = 0
    #: Attempts repeated after a failure (transport error, 5xx, 429).
    retries: int = 0
    #: Fresh logins made after a 401.
    relogins: int = 0
    #: Attempts that got no answer at all.
    transport_errors: int = 0
    #: Redirects followed.
    redirects: int = 0
    #: Request body bytes handed to the connection (streamed uploads).
    bytes_sent: int = 0
    #: Answers by HTTP status.
    by_status: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> int:
        """How many answers had this status."""
        return self.by_status.get(status, 0)


@dataclass(slots=True)
class Attempts:
    """What happened to one logical request, for callers that reconcile."""

    #: Attempts that may have reached the server (not refused before sending).
    delivered: int = 0


class _NotJson(Exception):
    """A success status whose body is not JSON (a proxy page, a thank-you text)."""

    def __init__(self, raw: bytes, content_type: str | None) -> None:
        super().__init__("not JSON")
        self.raw = raw
        self.content_type = content_type


async def read_json(response: aiohttp.ClientResponse) -> Any:
    """Read a success body as JSON; a non-JSON body is a server problem."""
    raw = await response.read()
    try:
        return json.loads(raw)
    except ValueError:
        raise _NotJson(raw[:MAX_ERROR_BODY], response.headers.get("Content-Type")) from None


class _NoStream:
    """Stands in for a file body's context when the body is a form or nothing."""

    __slots__ = ("_data",)

    def __init__(self, form: Mapping[str, str] | None) -> None:
        self._data = dict(form) if form is not None else None

    async def __aenter__(self) -> dict[str, str] | None:
        return self._data

    async def __aexit__(self, *exc: object) -> None:
        return None


def _ssl_context(settings: Settings) -> ssl.SSLContext | bool:
    if not settings.verify_tls:
        return False
    if settings.ca_bundle is not None:
        try:
            return ssl.create_default_context(cafile=str(settings.ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the CA bundle {settings.ca_bundle}: {exc}; "
                "point ca_bundle at a PEM file"
            ) from exc
    return True


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def _not_executed(exc: BaseException) -> bool:
    """True if the failure happened before anything was sent."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return False
    return isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)


class Http:
    """Owns the aiohttp session (unless given one) and runs every request."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None,
        retry: RetryPolicy,
        request_gate: Callable[[], Awaitable[None]] | None,
        on_response: Callable[[ResponseInfo], None] | None,
        user_agent: str,
        first_contact: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.retry = retry
        #: Shorter retries until NOMAD has answered once (see ``FIRST_CONTACT``).
        self.first_contact = first_contact
        self.stats = ClientStats()
        # Lists, so that a run can add its own gate and observer to a client it was given.
        self.gates: list[Callable[[], Awaitable[None]]] = [request_gate] if request_gate else []
        self.observers: list[Callable[[ResponseInfo], None]] = [on_response] if on_response else []
        self._base = settings.url
        self._base_safe = sanitize_url(settings.url)
        self._ssl = _ssl_context(settings)
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None,  # waiting for a free pooled connection is not a failure
            sock_connect=settings.connect_timeout,
            sock_read=settings.read_timeout,
        )
        self._headers = {"User-Agent": user_agent}
        self._given_session = session
        # The own session carries timeout and TLS settings; a given one gets them per request.
        self._per_request: dict[str, Any] = (
            {"timeout": self._timeout, "ssl": self._ssl} if session is not None else {}
        )
        self._session: aiohttp.ClientSession | None = session
        self._rng = random.Random()
        #: True once NOMAD's own JSON has come back: the URL is right.
        self.reached = False
        self.auth = TokenManager(settings, login=self._login, mint_app_token=self._mint_app_token)

    # -- session ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Create the session unless one was given."""
        if self._session is None:
            limit = max(1, self.settings.max_connections)
            connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit, ssl=self._ssl)
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=self._timeout,
                headers=self._headers,
                raise_for_status=False,
            )
            # aiohttp silently re-sends an idempotent request once after a dropped
            # connection; that would bypass the gate, the statistics and the
            # reconciliation of DELETE, so the funnel does all retrying itself.
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._session = session

    async def close(self) -> None:
        """Close the session if this object created it."""
        session, self._session = self._session, None
        if session is not None and session is not self._given_session:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The live session."""
        if self._session is None:
            raise RuntimeError("the client is not open; use 'async with NomadClient(...)'")
        return self._session

    # -- auth helpers ----------------------------------------------------------------------

    async def _login(self, username: str, password: Secret) -> tuple[Secret, float | None]:
        form = {"grant_type": "password", "username": username, "password": password.get()}
        try:
            data = await self.send("POST", "/auth/token", form=form, auth="none")
        except AuthError as exc:
            raise AuthError(
                f"NOMAD refused the login of user {username!r} ({exc.status}): "
                f"{exc.server_message or 'no reason given'}; check NOMAD_USERNAME and "
                "NOMAD_PASSWORD",
                status=exc.status,
                method=exc.method,
                url=exc.url,
                server_message=exc.server_message,
            ) from None
        token = data.get("access_token") if isinstance(data, Mapping) else None
        if not isinstance(token, str) or not token:
            raise ServerError(
                "POST /auth/token answered without an access_token; is the URL a NOMAD API?",
                method="POST",
                url=self._base_safe + "/auth/token",
            )
        expires_in = data.get("expires_in")
        lifetime = float(expires_in) if isinstance(expires_in, (int, float)) else None
        return Secret(token), lifetime

    async def _mint_app_token(self, token: Token, expires_in: float) -> Secret:
        data = await self.send(
            "GET",
            "/auth/app_token",
            params=[("expires_in", str(int(expires_in)))],
            auth="none",
            headers={"Authorization": token.header()},
        )
        value = data.get("app_token") if isinstance(data, Mapping) else None
        if not isinstance(value, str) or not value:
            raise ServerError(
                "GET /auth/app_token answered without an app_token",
                method="GET",
                url=self._base_safe + "/auth/app_token",
            )
        return Secret(value)

    # -- the funnel ------------------------------------------------------------------------

    def _report(self, info: ResponseInfo) -> None:
        for observer in self.observers:
            try:
                observer(info)
            except Exception:
                # An observer must never break a request.
                logger.exception("on_response observer failed")

    async def send(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json_body: Any = None,
        form: Mapping[str, str] | None = None,
        body: FileBody | None = None,
        headers: Mapping[str, str] | None = None,
        auth: AuthMode = "optional",
        replay: Replay = Replay.SAFE,
        reader: Reader[Any] = read_json,
        attempts: Attempts | None = None,
    ) -> Any:
        """Run one logical request with retries; return what ``reader`` makes of the answer.

        Raises exactly one exception of :mod:`nomad_bulk.errors`. ``path`` is
        relative to the API base and already quoted.
        """
        session = self.session
        use_auth = auth != "none"
        if auth == "required" and not self.auth.has_credentials:
            raise ConfigError(
                f"{method} {path} needs a NOMAD login; set NOMAD_USERNAME and NOMAD_PASSWORD "
                "(or NOMAD_TOKEN), or pass them in Settings"
            )
        url = self._base + path
        safe_url = self._base_safe + path
        started = time.monotonic()
        tries = 0  # attempts that count toward the retry policy
        relogged = False
        hops = 0
        while True:
            tries += 1
            for gate in self.gates:
                await gate()
            token = await self.auth.current() if use_auth else None
            request_headers: dict[str, str] = dict(headers) if headers else {}
            if token is not None:
                request_headers["Authorization"] = token.header()
            if body is not None:
                request_headers.setdefault("Content-Type", "application/octet-stream")
                request_headers["Content-Length"] = str(body.size)
            self.stats.requests += 1
            t0 = time.perf_counter()
            error: ApiError
            retry_after: float | None = None
            status: int
            foreign = False  # no answer, or one that is not NOMAD's JSON
            try:
                async with (
                    body.open() if body is not None else _NoStream(form) as data,
                    session.request(
                        method,
                        URL(url, encoded=True),
                        params=params,
                        json=json_body,
                        data=data,
                        headers=request_headers,
                        allow_redirects=False,
                        **self._per_request,
                    ) as response,
                ):
                    status = response.status
                    by_status = self.stats.by_status
                    by_status[status] = by_status.get(status, 0) + 1
                    if body is not None:
                        self.stats.bytes_sent += body.sent
                    if attempts is not None:
                        attempts.delivered += 1
                    if 200 <= status < 300:
                        try:
                            result = await reader(response)
                        except _NotJson as bad:
                            foreign = True
                            parsed = parse_error_body(bad.raw, bad.content_type)
                            error = ServerError(
                                f"{method} {safe_url} answered {status} with a non-JSON body"
                                f"{': ' + parsed.message if parsed.message else ''}; "
                                "is the URL a NOMAD API (…/api/v1)?",
                                status=status,
                                method=method,
                                url=safe_url,
                                server_message=parsed.message,
                            )
                        else:
                            self.reached = True
                            if self.observers:
                                self._report(
                                    ResponseInfo(
                                        method, safe_url, status, time.perf_counter() - t0, tries
                                    )
                                )
                            return result
                    elif status in _REDIRECTS and "Location" in response.headers:
                        target = urljoin(url, response.headers["Location"])
                        if not _same_origin(target, self._base) or hops >= _MAX_REDIRECTS:
                            error = ServerError(
                                f"{method} {safe_url} redirected to {sanitize_url(target)}; "
                                "set the NOMAD URL to the final API address",
                                status=status,
                                method=method,
                                url=safe_url,
                            )
                        else:
                            hops += 1
                            tries -= 1  # a redirect is not a failure
                            self.stats.redirects += 1
                            url = target
                            safe_url = sanitize_url(target)
                            params = None  # the Location carries the query
                            if status == 303:
                                method, json_body, form, body = "GET", None, None, None
                            continue
                    else:
                        raw = await response.content.read(MAX_ERROR_BODY)
                        parsed = parse_error_body(raw, response.headers.get("Content-Type"))
                        foreign = not parsed.is_json
                        self.reached = self.reached or parsed.is_json
                        retry_after = parse_retry_after(response.headers.get("Retry-After"))
                        error = classify(
                            status,
                            parsed,
                            method=method,
                            url=safe_url,
                            retry_after=retry_after,
                            logged_in=token is not None,
                        )
                        if (
                            isinstance(error, AuthError)
                            and status in (401, 500)
                            and use_auth
                            and not relogged
                            and is_credential_problem(parsed.message)
                        ):
                            fresh = await self.auth.after_unauthorized(token)
                            if fresh is not None:
                                relogged = True
                                tries -= 1
                                self.stats.relogins += 1
                                self._report(
                                    ResponseInfo(
                                        method, safe_url, status, time.perf_counter() - t0, tries
                                    )
                                )
                                continue
                self._report(
                    ResponseInfo(
                        method, safe_url, status, time.perf_counter() - t0, tries, retry_after
                    )
                )
                if isinstance(error, AuthError) or not self._retryable(status, replay, body):
                    raise error
                failure: ApiError | TransportError = error
                cause: BaseException | None = None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                self.stats.transport_errors += 1
                not_sent = _not_executed(exc)
                if attempts is not None and not not_sent:
                    attempts.delivered += 1
                if body is not None:
                    self.stats.bytes_sent += body.sent
                self._report(
                    ResponseInfo(
                        method,
                        safe_url,
                        None,
                        time.perf_counter() - t0,
                        tries,
                        error=type(exc).__name__,
                    )
                )
                failure, cause = self._transport_error(exc, method, safe_url), exc
                foreign = True
                unsent_body = body is not None and not body.exhausted
                if _fatal(exc) or not (replay is Replay.SAFE or not_sent or unsent_body):
                    raise failure from exc
            elapsed = time.monotonic() - started
            delay = self.retry.next_delay(tries, elapsed, retry_after=retry_after, rng=self._rng)
            if delay is not None and foreign and not self.reached and self.first_contact:
                delay = self.first_contact.next_delay(
                    tries, elapsed, retry_after=retry_after, rng=self._rng
                )
            if delay is None:
                raise failure from cause
            self.stats.retries += 1
            logger.warning(
                "%s %s failed (%s); retry %d in %.2f s",
                method,
                safe_url,
                type(failure).__name__,
                tries,
                delay,
            )
            await anyio.sleep(delay)

    @staticmethod
    def _retryable(status: int, replay: Replay, body: FileBody | None) -> bool:
        if status == 429:
            return True
        if status >= 500 or 200 <= status < 300:  # 2xx here means a non-JSON page
            if replay is Replay.SAFE:
                return True
            # A create whose body did not fully leave cannot have taken effect.
            return body is not None and not body.exhausted
        return False

    def _transport_error(self, exc: BaseException, method: str, safe_url: str) -> TransportError:
        if isinstance(exc, asyncio.TimeoutError):
            return RequestTimeoutError(
                f"{method} {safe_url} timed out ({type(exc).__name__}); the server or network "
                "is slow: try again later or raise connect_timeout/read_timeout"
            )
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            return TransportError(
                f"{method} {safe_url} failed TLS verification; if this server uses a private "
                "CA, set ca_bundle to its PEM file"
            )
        if isinstance(exc, aiohttp.ClientConnectorError):
            return TransportError(
                f"{method} {safe_url} could not connect ({exc.os_error.strerror or exc}); "
                "check the NOMAD URL and the network"
            )
        return TransportError(
            f"{method} {safe_url} lost the connection ({type(exc).__name__}); try again"
        )


def _fatal(exc: BaseException) -> bool:
    """Transport failures that repeating cannot fix."""
    return isinstance(
        exc,
        aiohttp.ClientConnectorCertificateError
        | aiohttp.ClientSSLError
        | aiohttp.InvalidURL
        | aiohttp.TooManyRedirects,
    )
