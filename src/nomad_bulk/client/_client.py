"""`NomadClient`: every NOMAD API call the project needs, typed and safe to retry."""

from __future__ import annotations

import enum
import json
import logging
import re
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiofiles
import aiohttp
import anyio

from ..config import Secret, Settings, sanitize_url
from ..errors import (
    AlreadyPublishedError,
    BadRequestError,
    BusyError,
    NotFoundError,
    OutcomeUnknownError,
    ProcessingError,
    ProcessingTimeoutError,
    ServerError,
    TransportError,
)
from ..models import Dataset, Entry, ProcessStatus, RawDirectory, RawFile, Upload, User
from ._classify import is_page_out_of_range
from ._http import (
    FIRST_CONTACT,
    Attempts,
    AuthMode,
    ClientStats,
    Http,
    Params,
    Replay,
    ResponseInfo,
)
from ._retry import RetryPolicy, backoff_delay
from ._stream import CHUNK_SIZE, FileBody, ProgressCallback, partial_path, remove_quietly

__all__ = ["ClientState", "NomadClient", "ServerInfo", "process_names"]

logger = logging.getLogger("nomad_bulk.client")

# NOMAD: neither schema (1.3, 2.0) sets a maximum page_size for an upload's entries;
# 2.0 looks the page's entries up in its search index in one query, whose result
# window (10,000) is far above this.
ENTRIES_PAGE_SIZE = 1000

# NOMAD: 1.3 names its processes process_upload/edit_upload_metadata/publish_upload;
# 2.0 (Temporal workflows) uses _process_upload/_edit_metadata/_publish_upload.
_PROCESS_FAMILIES: tuple[frozenset[str], ...] = (
    frozenset({"process_upload", "_process_upload"}),
    frozenset({"edit_upload_metadata", "_edit_metadata", "edit_metadata"}),
    frozenset({"publish_upload", "_publish_upload"}),
    frozenset({"delete_upload", "_delete_upload"}),
)
_UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def process_names(name: str) -> frozenset[str]:
    """All spellings (1.3 and 2.0) of a process, given any one of them."""
    for family in _PROCESS_FAMILIES:
        if name in family:
            return family
    return frozenset({name})


def _seg(value: str) -> str:
    """Quote one path segment (ids are URL-safe already; names may not be)."""
    return quote(str(value), safe="")


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _many(name: str, value: str | Sequence[str] | None) -> list[tuple[str, str]]:
    if value is None:
        return []
    if isinstance(value, str):
        return [(name, value)]
    return [(name, str(v)) for v in value]


def _user_agent(settings: Settings) -> str:
    try:
        return f"{settings.user_agent}/{version('nomad-bulk')}"
    except PackageNotFoundError:
        return settings.user_agent


class ClientState(enum.Enum):
    """Life cycle of a :class:`NomadClient`: it can be opened once."""

    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """What ``GET /info`` says about the server; ``api_version`` is ``"1.3"`` or ``"2.0"``."""

    version: str
    api_version: str
    deployment: str | None = None
    oasis: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerInfo:
        """Build from NOMAD's ``InfoModel``; versions before 2 speak the 1.3 dialect."""
        text = str(data.get("version") or "")
        match = re.match(r"\s*v?(\d+)", text)
        major = int(match.group(1)) if match else 1
        return cls(
            version=text,
            api_version="2.0" if major >= 2 else "1.3",
            deployment=None if data.get("deployment") is None else str(data.get("deployment")),
            oasis=bool(data.get("oasis", False)),
            raw=dict(data),
        )


def _upload(data: Any) -> Upload:
    """``{"upload_id", "data": UploadProcData}`` → Upload."""
    if not isinstance(data, Mapping):
        raise ServerError("NOMAD answered an upload request without an upload object")
    inner = data.get("data")
    if not isinstance(inner, Mapping):
        inner = data
    if "upload_id" not in inner and "upload_id" in data:
        inner = {**inner, "upload_id": data["upload_id"]}
    return Upload.from_json(inner)


class NomadClient:
    """Async client for one NOMAD API over one aiohttp session.

    Use it as an async context manager; it can be opened once. A ``session``
    passed in is used and left open; its own settings stay as they are, so
    aiohttp may silently repeat an idempotent request once after a dropped
    connection, unseen by the statistics. ``request_gate`` is awaited before
    every HTTP attempt (a global rate limit); ``on_response`` sees every answer
    and transport failure. All durations are float seconds.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy | None = None,
        request_gate: Callable[[], Awaitable[None]] | None = None,
        on_response: Callable[[ResponseInfo], None] | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self._retry = retry if retry is not None else RetryPolicy.from_settings(self.settings)
        self._http = Http(
            self.settings,
            session=session,
            retry=self._retry,
            # A policy given explicitly is kept as it is, also before the first answer.
            first_contact=FIRST_CONTACT if retry is None else None,
            request_gate=request_gate,
            on_response=on_response,
            user_agent=_user_agent(self.settings),
        )
        self._state = ClientState.UNOPENED
        self._info: ServerInfo | None = None
        self._me: User | None = None

    def __repr__(self) -> str:
        user = self.settings.username or ("<token>" if self.settings.token else None)
        return (
            f"NomadClient(url={sanitize_url(self.settings.url)!r}, user={user!r}, "
            f"state={self._state.name})"
        )

    @contextmanager
    def hooks(
        self,
        *,
        request_gate: Callable[[], Awaitable[None]] | None = None,
        on_response: Callable[[ResponseInfo], None] | None = None,
    ) -> Iterator[None]:
        """Add a request gate and a response observer for the duration of a block.

        They apply on top of those given at construction, so that a bulk run can
        put its rate limit and adaptive throttling on a client it was handed.
        """
        http = self._http
        if request_gate is not None:
            http.gates.append(request_gate)
        if on_response is not None:
            http.observers.append(on_response)
        try:
            yield
        finally:
            if request_gate is not None:
                http.gates.remove(request_gate)
            if on_response is not None:
                http.observers.remove(on_response)

    # -- life cycle ------------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        """Counters of requests, retries and answers by status."""
        return self._http.stats

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of idempotent calls."""
        return self._retry

    @property
    def state(self) -> ClientState:
        """Whether the client is unopened, open or closed."""
        return self._state

    async def __aenter__(self) -> NomadClient:
        if self._state is ClientState.OPENED:
            raise RuntimeError("this NomadClient is already open")
        if self._state is ClientState.CLOSED:
            raise RuntimeError("cannot reopen a closed NomadClient; create a new instance instead")
        self.settings.check_transport_security()
        await self._http.open()
        self._state = ClientState.OPENED
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session (unless it was passed in); the client cannot be reused."""
        if self._state is ClientState.CLOSED:
            return
        self._state = ClientState.CLOSED
        with anyio.CancelScope(shield=True):
            await self._http.close()

    def _open(self) -> Http:
        if self._state is not ClientState.OPENED:
            if self._state is ClientState.CLOSED:
                raise RuntimeError("this NomadClient is closed; create a new instance")
            raise RuntimeError("the NomadClient is not open; use 'async with NomadClient(...)'")
        return self._http

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        data = await self._open().send(method, path, **kwargs)
        if not isinstance(data, Mapping):
            raise ServerError(
                f"{method} {sanitize_url(self.settings.url)}{path} answered JSON that is not "
                "an object; is the URL a NOMAD API (…/api/v1)?",
                method=method,
                url=sanitize_url(self.settings.url) + path,
            )
        return data

    # -- server and users ------------------------------------------------------------------

    async def info(self, *, refresh: bool = False) -> ServerInfo:
        """Server version and deployment (cached); tells the 1.3 and 2.0 dialects apart."""
        if self._info is None or refresh:
            data = await self._json("GET", "/info", auth="none")
            self._info = ServerInfo.from_json(data)
        return self._info

    async def _is_v2(self) -> bool:
        return (await self.info()).api_version == "2.0"

    async def me(self) -> User:
        """The logged-in account (``GET /users/me``)."""
        data = await self._json("GET", "/users/me", auth="required")
        self._me = User.from_json(data)
        return self._me

    async def _my_id(self) -> str:
        me = self._me if self._me is not None else await self.me()
        return me.user_id

    async def create_app_token(self, expires_in: float) -> Secret:
        """Mint a NOMAD app token valid for ``expires_in`` seconds (at most 30 days)."""
        data = await self._json(
            "GET",
            "/auth/app_token",
            params=[("expires_in", str(int(expires_in)))],
            auth="required",
        )
        value = data.get("app_token")
        if not isinstance(value, str) or not value:
            raise ServerError("GET /auth/app_token answered without an app_token")
        return Secret(value)

    async def get_user(self, user_id: str) -> User:
        """Public information about one account."""
        data = await self._json("GET", f"/users/{_seg(user_id)}")
        return User.from_json(data)

    async def search_users(self, prefix: str) -> list[User]:
        """Accounts whose name starts with ``prefix``."""
        data = await self._json("GET", "/users", params=[("prefix", prefix)])
        return [User.from_json(item) for item in (data.get("data") or [])]

    async def resolve_users(self, refs: Sequence[str]) -> dict[str, User]:
        """Map user ids, usernames and e-mails to accounts.

        Raises:
            NotFoundError: naming every reference that matches no account.
        """
        found: dict[str, User] = {}
        wanted = list(dict.fromkeys(str(r).strip() for r in refs if str(r).strip()))
        ids = [r for r in wanted if _UUID_RE.match(r)]
        emails = [r for r in wanted if "@" in r and r not in ids]
        names = [r for r in wanted if r not in ids and r not in emails]
        if ids:
            data = await self._json("GET", "/users", params=_many("user_id", ids))
            for item in data.get("data") or []:
                user = User.from_json(item)
                if user.user_id in ids:
                    found[user.user_id] = user
        if names:
            data = await self._json("GET", "/users", params=_many("username", names))
            for item in data.get("data") or []:
                user = User.from_json(item)
                if user.username in names:
                    found[user.username] = user
        for email in emails:
            # NOMAD blanks e-mails in answers, so each address is asked for alone.
            data = await self._json("GET", "/users", params=[("email", email)])
            items = data.get("data") or []
            if len(items) == 1:
                found[email] = User.from_json(items[0])
        missing = [r for r in wanted if r not in found]
        if missing:
            raise NotFoundError(
                f"no NOMAD account matches {', '.join(repr(m) for m in missing)}; "
                "check the user ids, usernames or e-mail addresses",
                status=404,
                method="GET",
                url=sanitize_url(self.settings.url) + "/users",
            )
        return found

    # -- uploads ---------------------------------------------------------------------------

    async def create_upload(
        self,
        path: str | Path,
        *,
        file_name: str | None = None,
        upload_name: str | None = None,
        embargo_length: int = 0,
        publish_directly: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> Upload:
        """Create an upload from a file, streaming it from disk as the raw body.

        Never repeated blindly: a failure before the whole file left is retried,
        but when the file was sent and the answer was lost (or a 5xx came back)
        :class:`~nomad_bulk.errors.OutcomeUnknownError` carries the
        ``upload_name`` to look the upload up by. Without ``upload_name``, NOMAD
        names the upload after ``file_name`` (default: the path's name).
        """
        source = Path(path)
        stat = await anyio.Path(source).stat()
        body = FileBody(source, stat.st_size, on_progress=on_progress)
        name = file_name or source.name
        params: list[tuple[str, str]] = [("file_name", name)]
        if upload_name is not None:
            params.append(("upload_name", upload_name))
        if embargo_length:
            params.append(("embargo_length", str(int(embargo_length))))
        if publish_directly:
            params.append(("publish_directly", "true"))
        reconcile = upload_name if upload_name is not None else name
        try:
            data = await self._json(
                "POST",
                "/uploads",
                params=params,
                body=body,
                # NOMAD: only this exact Accept value gets JSON (else a thank-you text).
                headers={"Accept": "application/json", "Content-Type": "application/octet-stream"},
                auth="required",
                replay=Replay.UNSAFE,
            )
        except (TransportError, ServerError) as exc:
            if not body.exhausted:
                raise  # the server cannot have the whole file: nothing was created
            raise OutcomeUnknownError(
                f"POST /uploads sent all of {source.name!r} but the answer was lost "
                f"({type(exc).__name__}); the upload may exist: look it up by upload_name "
                f"{reconcile!r} before sending it again",
                upload_name=reconcile,
            ) from exc
        return _upload(data)

    async def get_upload(self, upload_id: str) -> Upload:
        """One upload's processing state and metadata."""
        return _upload(await self._json("GET", f"/uploads/{_seg(upload_id)}"))

    async def _upload_params(
        self,
        *,
        upload_id: str | Sequence[str] | None,
        upload_name: str | Sequence[str] | None,
        is_processing: bool | None,
        is_published: bool | None,
        roles: str | Sequence[str] | None,
        include_all: bool | None,
        order_by: str | None,
        order: str | None,
    ) -> list[tuple[str, str]]:
        params = _many("upload_id", upload_id)
        names = [upload_name] if isinstance(upload_name, str) else list(upload_name or ())
        if any(n.startswith("{") for n in names) and await self._is_v2():
            # NOMAD: 2.0 reads a name starting with "{" as a JSON filter; say "exact".
            names = [json.dumps({"value": n, "type": "exact"}) for n in names]
        params += _many("upload_name", names)
        if is_processing is not None:
            params.append(("is_processing", _flag(is_processing)))
        if is_published is not None:
            params.append(("is_published", _flag(is_published)))
        params += _many("roles", roles)
        if include_all is not None:
            params.append(("include_all", _flag(include_all)))
        if order_by is not None:
            params.append(("order_by", order_by))
        if order is not None:
            params.append(("order", order))
        return params

    async def _pages(
        self,
        path: str,
        params: Params,
        *,
        page_size: int,
        auth: AuthMode = "optional",
    ) -> AsyncGenerator[Mapping[str, Any], None]:
        """GET every page of a NOMAD list (``page_after_value`` cursor)."""
        size = max(1, int(page_size))
        after: str | None = None
        seen: set[str] = set()
        while True:
            query = [*params, ("page_size", str(size))]
            if after is not None:
                query.append(("page_after_value", after))
            try:
                data = await self._json("GET", path, params=query, auth=auth)
            except BadRequestError as exc:
                # The list shrank under the cursor (items deleted meanwhile): it is done.
                if after is not None and is_page_out_of_range(exc):
                    return
                raise
            items = data.get("data") or []
            for item in items:
                yield item
            cursor = (data.get("pagination") or {}).get("next_page_after_value")
            if not items or cursor is None or str(cursor) in seen:
                return
            after = str(cursor)
            seen.add(after)

    async def iter_uploads(
        self,
        *,
        upload_id: str | Sequence[str] | None = None,
        upload_name: str | Sequence[str] | None = None,
        is_processing: bool | None = None,
        is_published: bool | None = None,
        roles: str | Sequence[str] | None = None,
        include_all: bool | None = None,
        page_size: int = 100,
        order_by: str | None = None,
        order: str | None = None,
    ) -> AsyncIterator[Upload]:
        """Every upload matching the filters, all pages (NOMAD's own default is 10)."""
        params = await self._upload_params(
            upload_id=upload_id,
            upload_name=upload_name,
            is_processing=is_processing,
            is_published=is_published,
            roles=roles,
            include_all=include_all,
            order_by=order_by,
            order=order,
        )
        async for item in self._pages("/uploads", params, page_size=page_size, auth="required"):
            yield Upload.from_json(item)

    async def list_uploads(
        self,
        *,
        upload_id: str | Sequence[str] | None = None,
        upload_name: str | Sequence[str] | None = None,
        is_processing: bool | None = None,
        is_published: bool | None = None,
        roles: str | Sequence[str] | None = None,
        include_all: bool | None = None,
        page_size: int = 100,
        order_by: str | None = None,
        order: str | None = None,
    ) -> list[Upload]:
        """Like :meth:`iter_uploads`, collected into a list."""
        return [
            upload
            async for upload in self.iter_uploads(
                upload_id=upload_id,
                upload_name=upload_name,
                is_processing=is_processing,
                is_published=is_published,
                roles=roles,
                include_all=include_all,
                page_size=page_size,
                order_by=order_by,
                order=order,
            )
        ]

    async def count_uploads(
        self,
        *,
        upload_id: str | Sequence[str] | None = None,
        upload_name: str | Sequence[str] | None = None,
        is_processing: bool | None = None,
        is_published: bool | None = None,
        roles: str | Sequence[str] | None = None,
        include_all: bool | None = None,
    ) -> int:
        """How many uploads match, without fetching them (``page_size=0``)."""
        params = await self._upload_params(
            upload_id=upload_id,
            upload_name=upload_name,
            is_processing=is_processing,
            is_published=is_published,
            roles=roles,
            include_all=include_all,
            order_by=None,
            order=None,
        )
        data = await self._json(
            "GET", "/uploads", params=[*params, ("page_size", "0")], auth="required"
        )
        return int((data.get("pagination") or {}).get("total") or 0)

    async def find_uploads(self, upload_name: str) -> list[Upload]:
        """My uploads (as main author) with exactly this name; names are not unique."""
        uploads = await self.list_uploads(upload_name=upload_name, roles="main_author")
        return [u for u in uploads if u.upload_name == upload_name]

    async def _reconcile_action(
        self, upload_id: str, family: str, exc: Exception, attempts: Attempts | None
    ) -> Upload:
        """After a refused repeat of an action, accept it if an earlier try took effect.

        With ``attempts`` None the check runs even after a single attempt.
        """
        if attempts is not None and attempts.delivered <= 1:
            raise exc
        upload = await self.get_upload(upload_id)
        if upload.current_process in process_names(family) and (
            upload.process_running or upload.process_status is ProcessStatus.SUCCESS
        ):
            return upload
        if family == "publish_upload" and upload.published:
            return upload
        raise exc

    async def delete_upload(
        self,
        upload_id: str,
        *,
        wait: bool = True,
        timeout: float = 600,  # noqa: ASYNC109 - the deadline raises a typed error
    ) -> None:
        """Delete an upload; with ``wait``, poll until it is gone (404)."""
        attempts = Attempts()
        path = f"/uploads/{_seg(upload_id)}"
        try:
            await self._json(
                "DELETE",
                path,
                # NOMAD: 2.0 would block until deleted; 1.3 ignores the parameter.
                params=[("wait_for_processing", "false")],
                auth="required",
                attempts=attempts,
            )
        except NotFoundError:
            if attempts.delivered <= 1:
                raise
            return  # an earlier attempt deleted it
        except BusyError as exc:
            # A deletion already under way (ours, repeated by a proxy or a lost answer,
            # or another client's) is what was asked for.
            try:
                await self._reconcile_action(upload_id, "delete_upload", exc, None)
            except NotFoundError:
                return
        if wait:
            await self._wait_gone(upload_id, within=timeout)

    async def _wait_gone(self, upload_id: str, *, within: float) -> None:
        deadline = time.monotonic() + within
        polls = 0
        while True:
            try:
                upload = await self.get_upload(upload_id)
            except NotFoundError:
                return
            if upload.failed and upload.current_process in process_names("delete_upload"):
                raise ProcessingError(
                    f"deleting upload {upload_id} failed: "
                    f"{upload.last_status_message or 'no message'}",
                    upload_id=upload_id,
                    errors=upload.errors,
                )
            polls += 1
            await self._sleep_until(deadline, polls, 0.05, 5.0, upload, "deleted")

    async def edit_upload(
        self,
        upload_id: str,
        *,
        upload_name: str | None = None,
        datasets: Sequence[str] | Mapping[str, Any] | None = None,
        coauthors: Sequence[str] | Mapping[str, Any] | None = None,
        reviewers: Sequence[str] | Mapping[str, Any] | None = None,
        references: Sequence[str] | Mapping[str, Any] | None = None,
        comment: str | None = None,
        embargo_length: int | None = None,
        verify_only: bool = False,
    ) -> Upload:
        """Edit an upload's metadata (and that of all its entries).

        Lists replace the current value, except ``datasets``, where NOMAD adds;
        pass an op dict such as ``{"remove": [...]}`` for other operations.
        User references may be user ids, usernames or e-mails. The edit runs as
        a process on the server: follow with :meth:`wait_for_process`.
        """
        metadata: dict[str, Any] = {}
        if upload_name is not None:
            metadata["upload_name"] = upload_name
        for key, value in (
            ("datasets", datasets),
            ("coauthors", coauthors),
            ("reviewers", reviewers),
            ("references", references),
        ):
            if value is None:
                continue
            if isinstance(value, Mapping):
                metadata[key] = dict(value)
            elif isinstance(value, str):
                metadata[key] = [value]
            else:
                metadata[key] = list(value)
        if comment is not None:
            metadata["comment"] = comment
        if embargo_length is not None:
            metadata["embargo_length"] = int(embargo_length)
        request: dict[str, Any] = {"metadata": metadata}
        if verify_only:
            request["verify_only"] = True
        attempts = Attempts()
        try:
            data = await self._json(
                "POST",
                f"/uploads/{_seg(upload_id)}/edit",
                params=[("wait_for_processing", "false")],
                json_body=request,
                auth="required",
                attempts=attempts,
            )
        except BusyError as exc:
            return await self._reconcile_action(upload_id, "edit_upload_metadata", exc, attempts)
        return _upload(data)

    async def publish_upload(self, upload_id: str, *, embargo_length: int | None = None) -> Upload:
        """Start publishing an upload; follow with :meth:`wait_published`.

        Publishing on ``prod``/``staging`` is public and permanent.
        """
        params = [("wait_for_processing", "false")]
        if embargo_length is not None:
            params.append(("embargo_length", str(int(embargo_length))))
        attempts = Attempts()
        try:
            data = await self._json(
                "POST",
                f"/uploads/{_seg(upload_id)}/action/publish",
                params=params,
                auth="required",
                attempts=attempts,
            )
        except (BusyError, AlreadyPublishedError) as exc:
            return await self._reconcile_action(upload_id, "publish_upload", exc, attempts)
        return _upload(data)

    async def _sleep_until(
        self,
        deadline: float,
        polls: int,
        initial_wait: float,
        max_wait: float,
        upload: Upload,
        goal: str,
    ) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProcessingTimeoutError(
                f"upload {upload.upload_id} was not {goal} in time "
                f"(status {upload.process_status.value}, process {upload.current_process}, "
                f"{upload.last_status_message or 'no message'}); wait longer or check NOMAD",
                upload_id=upload.upload_id,
                errors=upload.errors,
            )
        delay = backoff_delay(polls, initial=initial_wait, cap=max_wait, jitter=initial_wait / 2)
        await anyio.sleep(min(delay, remaining))

    async def wait_for_process(
        self,
        upload_id: str,
        *,
        process: str | None = None,
        timeout: float = 3600,  # noqa: ASYNC109 - the deadline raises a typed error
        initial_wait: float = 0.5,
        max_wait: float = 30.0,
        raise_on_failure: bool = True,
    ) -> Upload:
        """Poll with capped, jittered exponential backoff until the process has finished.

        With ``process`` (any 1.3 or 2.0 spelling, e.g. ``"edit_upload_metadata"``)
        the upload must also show that process, so a 1.3 edit queued behind
        processing is waited for too.

        Raises:
            ProcessingError: the process failed (NOMAD's ``errors`` attached),
                unless ``raise_on_failure`` is false.
            ProcessingTimeoutError: not finished within ``timeout`` seconds.
        """
        wanted = process_names(process) if process else None
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            upload = await self.get_upload(upload_id)
            if not upload.process_running:
                if upload.process_status is ProcessStatus.FAILURE:
                    if raise_on_failure:
                        raise self._failure(upload)
                    return upload
                if wanted is None or upload.current_process in wanted:
                    return upload
            polls += 1
            await self._sleep_until(deadline, polls, initial_wait, max_wait, upload, "processed")

    @staticmethod
    def _failure(upload: Upload) -> ProcessingError:
        detail = "; ".join(upload.errors) or upload.last_status_message or "no message"
        return ProcessingError(
            f"upload {upload.upload_id} failed in {upload.current_process or 'processing'}: "
            f"{detail}",
            upload_id=upload.upload_id,
            errors=upload.errors
            or ((upload.last_status_message,) if upload.last_status_message else ()),
        )

    async def wait_published(
        self,
        upload_id: str,
        *,
        timeout: float = 3600,  # noqa: ASYNC109 - the deadline raises a typed error
        initial_wait: float = 0.5,
        max_wait: float = 30.0,
    ) -> Upload:
        """Poll until the upload is published.

        Raises:
            ProcessingError: publishing failed or ended without publishing.
            ProcessingTimeoutError: not published within ``timeout`` seconds.
        """
        publish = process_names("publish_upload")
        deadline = time.monotonic() + timeout
        polls = 0
        while True:
            upload = await self.get_upload(upload_id)
            if not upload.process_running:
                if upload.published:
                    return upload
                if upload.process_status is ProcessStatus.FAILURE:
                    raise self._failure(upload)
                if upload.current_process in publish:
                    raise ProcessingError(
                        f"upload {upload_id} finished publishing but is not published "
                        f"({upload.last_status_message or 'no message'})",
                        upload_id=upload_id,
                        errors=upload.errors,
                    )
            polls += 1
            await self._sleep_until(deadline, polls, initial_wait, max_wait, upload, "published")

    # -- entries and files -----------------------------------------------------------------

    async def iter_entries(
        self, upload_id: str, *, page_size: int = ENTRIES_PAGE_SIZE
    ) -> AsyncIterator[Entry]:
        """Every entry of an upload with its processing state and errors, all pages.

        Pages hold 1000 entries by default, so an upload's entries usually come
        in one request.
        """
        async for item in self._pages(
            f"/uploads/{_seg(upload_id)}/entries", [], page_size=page_size
        ):
            yield Entry.from_json(item)

    async def get_entries(
        self, upload_id: str, *, page_size: int = ENTRIES_PAGE_SIZE
    ) -> list[Entry]:
        """Like :meth:`iter_entries`, collected into a list."""
        return [entry async for entry in self.iter_entries(upload_id, page_size=page_size)]

    async def get_entry(self, entry_id: str) -> Entry:
        """One entry's search record (metadata, datasets, processing errors)."""
        data = await self._json("GET", f"/entries/{_seg(entry_id)}")
        inner = data.get("data")
        return Entry.from_json(inner if isinstance(inner, Mapping) else data)

    async def query_entries(
        self,
        query: Mapping[str, Any],
        *,
        owner: str = "visible",
        page_size: int = 100,
        required: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> list[Entry]:
        """Entries matching a NOMAD search query (``POST /entries/query``): all pages,
        or the first ``limit`` results (public searches can match millions)."""
        size = max(1, int(page_size))
        if limit is not None:
            if limit <= 0:
                return []
            size = min(size, limit)
        entries: list[Entry] = []
        after: str | None = None
        seen: set[str] = set()
        while True:
            pagination: dict[str, Any] = {"page_size": size}
            if after is not None:
                pagination["page_after_value"] = after
            request: dict[str, Any] = {
                "owner": owner,
                "query": dict(query),
                "pagination": pagination,
            }
            if required is not None:
                request["required"] = dict(required)
            data = await self._json("POST", "/entries/query", json_body=request)
            items = data.get("data") or []
            entries.extend(Entry.from_json(item) for item in items)
            if limit is not None and len(entries) >= limit:
                return entries[:limit]
            cursor = (data.get("pagination") or {}).get("next_page_after_value")
            if not items or cursor is None or str(cursor) in seen:
                return entries
            after = str(cursor)
            seen.add(after)

    async def list_raw_directory(self, upload_id: str, path: str = "") -> RawDirectory:
        """One folder of an upload's raw files with entry ids of mainfiles, all pages."""
        clean = path.strip("/")
        url = f"/uploads/{_seg(upload_id)}/rawdir/{quote(clean, safe='/')}"
        content: list[RawFile] = []
        size = 0
        access: str | None = None
        after: str | None = None
        seen: set[str] = set()
        while True:
            query = [("include_entry_info", "true"), ("page_size", "500")]
            if after is not None:
                query.append(("page_after_value", after))
            data = await self._json("GET", url, params=query)
            access = data.get("access", access)
            directory = data.get("directory_metadata")
            if isinstance(directory, Mapping):
                size = int(directory.get("size") or 0)
                content.extend(RawFile.from_json(item) for item in directory.get("content") or [])
            else:
                file_meta = data.get("file_metadata") or {}
                return RawDirectory(
                    path=clean,
                    size=int(file_meta.get("size") or 0),
                    content=(RawFile.from_json({**file_meta, "is_file": True}),),
                    access=access,
                )
            cursor = (data.get("pagination") or {}).get("next_page_after_value")
            if cursor is None or str(cursor) in seen or not directory.get("content"):
                return RawDirectory(path=clean, size=size, content=tuple(content), access=access)
            after = str(cursor)
            seen.add(after)

    async def _download(self, path: str, dest: Path, default_name: str) -> Path:
        target = dest / default_name if await anyio.Path(dest).is_dir() else dest
        part = partial_path(target)

        async def to_disk(response: aiohttp.ClientResponse) -> None:
            async with aiofiles.open(part, "wb") as handle:
                async for chunk in response.content.iter_chunked(CHUNK_SIZE):
                    await handle.write(chunk)

        try:
            await self._open().send("GET", path, reader=to_disk)
            await anyio.Path(part).replace(target)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await remove_quietly(part)
            raise
        return target

    async def download_entry_raw(self, entry_id: str, dest: str | Path) -> Path:
        """Stream an entry's raw files (a zip) to ``dest`` (a file, or a folder for
        ``<entry_id>.zip``); returns the file written."""
        return await self._download(f"/entries/{_seg(entry_id)}/raw", Path(dest), f"{entry_id}.zip")

    async def download_entry_archive(self, entry_id: str, dest: str | Path) -> Path:
        """Stream an entry's archive (JSON) to ``dest`` (a file, or a folder for
        ``<entry_id>.json``); returns the file written."""
        return await self._download(
            f"/entries/{_seg(entry_id)}/archive/download", Path(dest), f"{entry_id}.json"
        )

    # -- datasets --------------------------------------------------------------------------

    async def _datasets_path(self) -> str:
        # NOMAD: the collection is /datasets/ in 1.3 and /datasets in 2.0; the other
        # spelling answers 307, which the funnel would follow at the cost of a round trip.
        return "/datasets" if await self._is_v2() else "/datasets/"

    async def create_dataset(self, name: str) -> Dataset:
        """Create a dataset owned by me; never creates two with one call.

        When the answer is lost, the name is looked up before trying again.
        """
        path = await self._datasets_path()
        tries = 0
        started = time.monotonic()
        while True:
            tries += 1
            try:
                data = await self._json(
                    "POST",
                    path,
                    json_body={"dataset_name": name},
                    auth="required",
                    replay=Replay.UNSAFE,
                )
            except (TransportError, ServerError) as exc:
                existing = await self.find_dataset(name)
                if existing is not None:
                    return existing
                delay = self._retry.next_delay(tries, time.monotonic() - started)
                if delay is None:
                    raise
                logger.warning("creating dataset failed (%s); retrying", type(exc).__name__)
                await anyio.sleep(delay)
                continue
            except BadRequestError as exc:
                if tries > 1 and "already taken" in (exc.server_message or "").lower():
                    existing = await self.find_dataset(name)
                    if existing is not None:
                        return existing
                raise
            inner = data.get("data")
            return Dataset.from_json(inner if isinstance(inner, Mapping) else data)

    async def get_dataset(self, dataset_id: str) -> Dataset:
        """One dataset by id."""
        data = await self._json("GET", f"/datasets/{_seg(dataset_id)}")
        inner = data.get("data")
        return Dataset.from_json(inner if isinstance(inner, Mapping) else data)

    async def list_datasets(
        self,
        *,
        dataset_name: str | None = None,
        user_id: str | None = None,
        prefix: str | None = None,
        page_size: int = 100,
        limit: int | None = None,
    ) -> list[Dataset]:
        """Datasets matching the filters: all pages, or the first ``limit``."""
        params: list[tuple[str, str]] = []
        if dataset_name is not None:
            params.append(("dataset_name", dataset_name))
        if user_id is not None:
            params.append(("user_id", user_id))
        if prefix is not None:
            params.append(("prefix", prefix))
        path = await self._datasets_path()
        found: list[Dataset] = []
        if limit is not None and limit <= 0:
            return found
        if limit is not None:
            page_size = min(page_size, limit)
        pages = self._pages(path, params, page_size=page_size)
        try:
            async for item in pages:
                found.append(Dataset.from_json(item))
                if limit is not None and len(found) >= limit:
                    break
        finally:
            await pages.aclose()
        return found

    async def find_dataset(self, name: str, *, user_id: str | None = None) -> Dataset | None:
        """The dataset with exactly this name owned by ``user_id`` (default: me), or None."""
        owner = user_id if user_id is not None else await self._my_id()
        for dataset in await self.list_datasets(dataset_name=name, user_id=owner):
            if dataset.dataset_name == name and dataset.user_id in (None, owner):
                return dataset
        return None

    async def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset (it is removed from all its entries)."""
        attempts = Attempts()
        try:
            await self._json(
                "DELETE", f"/datasets/{_seg(dataset_id)}", auth="required", attempts=attempts
            )
        except NotFoundError:
            if attempts.delivered <= 1:
                raise
