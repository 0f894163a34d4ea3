"""The aiohttp application: NOMAD v1 routes, answers and error shapes.

Route handlers translate HTTP to :class:`ServerState` calls and back. The
middlewares count requests, add latency and inject the faults of the
:class:`FaultPlan`. Where real NOMAD differs from ``shared/nomad-api.md`` the
code says so with a ``# NOMAD:`` comment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mimetypes
import os
import time
import traceback
import zipfile
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlencode

import anyio
from aiohttp import web
from multidict import MultiMapping

from .auth import TokenError
from .config import ServerConfig
from .faults import FaultRule
from .parsers import PARSERS
from .state import (
    DatasetRecord,
    EntryRecord,
    Job,
    ServerState,
    UploadRecord,
    UserRecord,
)
from .storage import is_safe_relative_path, iter_files, sniff_archive

__all__ = ["CONFIG_KEY", "STATE_KEY", "ApiProblem", "make_app"]

logger = logging.getLogger(__name__)

STATE_KEY = web.AppKey("nomad_bulk_state", ServerState)
CONFIG_KEY = web.AppKey("nomad_bulk_config", ServerConfig)

_CHUNK = 256 * 1024
_APP_TOKEN_MAX = 2_592_000
_EXTERNAL_DBS = (
    "The Perovskite Database Project",
    "EELS Data Base",
    "Materials Project",
    "AFLOW",
    "OQMD",
    "Kyoto Phonopy Database",
)
_THANK_YOU = (
    "\nThanks for uploading your data to nomad.\n"
    "Go back to {gui} and press\nreload to see the progress on your upload\n"
    "and publish your data."
)
_NGINX_413 = (
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    "<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


class ApiProblem(Exception):
    """An error answer: ``{"detail": ...}`` with a status (and optional headers)."""

    def __init__(
        self, status: int, detail: Any, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


def _problem(status: int, detail: Any, **headers: str) -> NoReturn:
    raise ApiProblem(status, detail, headers=headers)


def _validation(*errors: dict[str, Any]) -> NoReturn:
    raise ApiProblem(422, list(errors))


# -- helpers: state, auth, parameters -------------------------------------------------------


def _state(request: web.Request) -> ServerState:
    return request.app[STATE_KEY]


def _v2(request: web.Request) -> bool:
    return request.app[CONFIG_KEY].is_v2


def _forbidden(request: web.Request) -> int:
    # NOMAD: 1.3 answers 401 to permission problems, 2.0 answers 403.
    return 403 if _v2(request) else 401


def _current_user(request: web.Request, *, required: bool) -> UserRecord | None:
    state = _state(request)
    header = request.headers.get("Authorization")
    if not header:
        if required:
            message = "Authentication required." if _v2(request) else "Authorization required."
            _problem(401, message, **{"WWW-Authenticate": "Bearer"})
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        _problem(401, "Could not validate credentials. The given token is invalid.")
    try:
        info = state.signer.verify(token.strip())
    except TokenError as exc:
        if exc.app_token:
            message = "Expired token." if exc.expired else "Token with invalid/unexpected payload."
        else:
            message = "Could not validate credentials. The given token is invalid."
        _problem(401, message, **{"WWW-Authenticate": "Bearer"})
    if not info.app_token and state.faults.token_too_old(info.issued_at, time.time()):
        _problem(
            401,
            "Could not validate credentials. The given token is invalid.",
            **{"WWW-Authenticate": "Bearer"},
        )
    user = state.users.get(info.user_id)
    if user is None:
        _problem(_forbidden(request), "You are logged in with an unknown user")
    return user


def _require_user(request: web.Request) -> UserRecord:
    user = _current_user(request, required=True)
    if user is None:  # pragma: no cover - required=True raises instead
        _problem(401, "Authorization required.")
    return user


_TRUE = {"1", "true", "t", "yes", "y", "on"}
_FALSE = {"0", "false", "f", "no", "n", "off"}


def _q_bool(query: MultiMapping[str], name: str, default: bool | None) -> bool | None:
    value = query.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    _validation(
        {
            "type": "bool_parsing",
            "loc": ["query", name],
            "msg": "Input should be a valid boolean, unable to interpret input",
            "input": value,
        }
    )


def _q_int(query: MultiMapping[str], name: str, default: int | None) -> int | None:
    value = query.get(name)
    if value is None:
        return default
    try:
        return int(value.strip())
    except ValueError:
        _validation(
            {
                "type": "int_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": value,
            }
        )


def _q_float(query: MultiMapping[str], name: str) -> float | None:
    value = query.get(name)
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        _validation(
            {
                "type": "float_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid number, unable to parse string as a number",
                "input": value,
            }
        )


def _enum_error(loc: list[Any], value: Any, allowed: Sequence[str]) -> dict[str, Any]:
    quoted = [f"'{a}'" for a in allowed]
    expected = ", ".join(quoted[:-1]) + f" or {quoted[-1]}" if len(quoted) > 1 else quoted[0]
    return {
        "type": "enum",
        "loc": loc,
        "msg": f"Input should be {expected}",
        "input": value,
        "ctx": {"expected": expected},
    }


def _fmt_time(request: web.Request, value: datetime | None) -> str | None:
    if value is None:
        return None
    utc = value.astimezone(timezone.utc).replace(tzinfo=None)
    # NOMAD: 1.3 emits naive UTC timestamps, 2.0 appends "Z".
    return utc.isoformat() + ("Z" if _v2(request) else "")


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _json(data: Any, status: int = 200, *, prune: bool = True) -> web.Response:
    body = json.dumps(_prune(data) if prune else data, separators=(",", ":"))
    return web.Response(text=body, status=status, content_type="application/json")


# -- serialisation -------------------------------------------------------------------------


def _upload_json(request: web.Request, upload: UploadRecord) -> dict[str, Any]:
    state = _state(request)
    data: dict[str, Any] = {
        "process_running": upload.process_running,
        "current_process": upload.current_process,
        "process_status": upload.process_status,
        "last_status_message": upload.last_status_message,
        "errors": list(upload.errors),
        "warnings": list(upload.warnings),
        "complete_time": _fmt_time(request, upload.complete_time),
        "upload_id": upload.upload_id,
        "upload_name": upload.upload_name,
        "upload_create_time": _fmt_time(request, upload.upload_create_time),
        "main_author": upload.main_author,
        "coauthors": list(upload.coauthors),
        "coauthor_groups": [],
        "reviewers": list(upload.reviewers),
        "reviewer_groups": [],
        "writers": upload.writers,
        "writer_groups": [],
        "viewers": upload.viewers,
        "viewer_groups": [],
        "published": upload.published,
        "published_to": [],
        "publish_time": _fmt_time(request, upload.publish_time),
        "with_embargo": upload.embargo_length > 0,
        "embargo_length": upload.embargo_length,
        "license": upload.license,
        "entries": len(upload.entries),
        "upload_files_server_path": str(state.upload_dir(upload.upload_id)),
    }
    if _v2(request):
        data.update(description=None, doi=None, included_entries=None)
    return data


def _user_ref(state: ServerState, user_id: str) -> dict[str, Any]:
    user = state.users.get(user_id)
    if user is None:
        return {"user_id": user_id}
    return {"user_id": user.user_id, "name": user.name}


def _dataset_json(request: web.Request, dataset: DatasetRecord) -> dict[str, Any]:
    return {
        "dataset_id": dataset.dataset_id,
        "dataset_name": dataset.dataset_name,
        "user_id": dataset.user_id,
        "doi": dataset.doi,
        "dataset_create_time": _fmt_time(request, dataset.dataset_create_time),
        "dataset_modified_time": _fmt_time(request, dataset.dataset_modified_time),
        "dataset_type": dataset.dataset_type,
    }


def _entry_metadata(
    request: web.Request, upload: UploadRecord, entry: EntryRecord
) -> dict[str, Any]:
    state = _state(request)
    datasets = []
    for dataset_id in entry.datasets:
        dataset = state.get_dataset(dataset_id)
        if dataset is not None:
            datasets.append(_dataset_json(request, dataset))
    authors = [_user_ref(state, uid) for uid in upload.writers]
    return {
        "upload_id": upload.upload_id,
        "upload_name": upload.upload_name,
        "upload_create_time": _fmt_time(request, upload.upload_create_time),
        "entry_id": entry.entry_id,
        "entry_name": entry.mainfile.rsplit("/", 1)[-1],
        "entry_type": None,
        "entry_create_time": _fmt_time(request, entry.entry_create_time),
        "mainfile": entry.mainfile,
        "parser_name": entry.parser_name,
        "processed": entry.process_status == "SUCCESS",
        "processing_errors": list(entry.errors),
        "published": upload.published,
        "publish_time": _fmt_time(request, upload.publish_time),
        "with_embargo": upload.embargo_length > 0,
        "embargo_length": upload.embargo_length,
        "license": upload.license,
        "main_author": _user_ref(state, upload.main_author),
        "authors": authors,
        "writers": authors,
        "viewers": [_user_ref(state, uid) for uid in upload.viewers],
        "coauthors": [_user_ref(state, uid) for uid in upload.coauthors],
        "reviewers": [_user_ref(state, uid) for uid in upload.reviewers],
        "datasets": datasets,
        "comment": entry.comment,
        "references": list(entry.references),
        "external_id": entry.external_id,
        "external_db": upload.external_db,
        "results": {"material": {}, "method": {"simulation": {"program_name": _code(entry)}}},
        "quantities": ["results.method.simulation.program_name"],
    }


def _code(entry: EntryRecord) -> str | None:
    for parser in PARSERS:
        if entry.parser_name in (parser.name_v1, parser.name_v2):
            return parser.code_name
    return None


def _entry_proc_json(
    request: web.Request, upload: UploadRecord, entry: EntryRecord
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "process_running": entry.process_running,
        # NOMAD: 2.0 entries carry no current_process.
        "current_process": None
        if _v2(request) or entry.process_status == "READY"
        else "process_entry",
        "process_status": entry.process_status,
        "last_status_message": entry.last_status_message,
        "errors": list(entry.errors),
        "warnings": list(entry.warnings),
        "complete_time": _fmt_time(request, entry.complete_time),
        "entry_id": entry.entry_id,
        "entry_create_time": _fmt_time(request, entry.entry_create_time),
        "mainfile": entry.mainfile,
        "upload_id": upload.upload_id,
        "parser_name": entry.parser_name,
    }
    if entry.process_status in ("SUCCESS", "FAILURE"):
        data["entry_metadata"] = _entry_metadata(request, upload, entry)
    return data


def _user_json(user: UserRecord, *, full: bool) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": user.name,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "affiliation": user.affiliation,
        "user_id": user.user_id,
        "username": user.username,
    }
    if full:
        data.update(
            email=user.email,
            affiliation_address=None,
            created=user.created.astimezone(timezone.utc).replace(tzinfo=None).isoformat(),
            is_admin=user.is_admin,
            is_oasis_admin=user.is_admin,
        )
    return data


# -- pagination ---------------------------------------------------------------------------


def _pagination(
    request: web.Request,
    items: list[Any],
    *,
    order_by_allowed: Sequence[str],
    default_order_by: str | None,
    sort_key: Callable[[Any, str], Any],
    default_page_size: int = 10,
    query: MultiMapping[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> tuple[list[Any], dict[str, Any]]:
    """NOMAD's simple index pagination (``populate_simple_index_and_urls``)."""
    q = request.query if query is None else query
    page_size = _q_int(q, "page_size", default_page_size)
    assert page_size is not None  # noqa: S101 - a default is given
    page = _q_int(q, "page", None)
    page_offset = _q_int(q, "page_offset", None)
    page_after_value = q.get("page_after_value")
    order_by = q.get("order_by", default_order_by)
    order = q.get("order", "asc")
    if aliases and order_by is not None and order_by in aliases:
        order_by = aliases[order_by]
    if order not in ("asc", "desc"):
        _validation(_enum_error(["query", "order"], order, ("asc", "desc")))
    if page_size < 0:
        _validation(
            {
                "type": "greater_than_equal",
                "loc": ["query", "page_size"],
                "msg": "Input should be greater than or equal to 0",
                "input": q.get("page_size"),
                "ctx": {"ge": 0},
            }
        )
    # NOMAD: pagination models are validated as a whole; errors carry loc ["query"]
    # and the parsed parameters as input, and only the first problem is reported.
    given = {
        "page_size": page_size,
        "order_by": order_by,
        "order": order,
        "page_after_value": page_after_value,
        "page": page,
        "page_offset": page_offset,
    }
    errors: list[dict[str, Any]] = []
    if order_by is not None and order_by not in order_by_allowed:
        errors.append(
            _pagination_error(
                "invalid_order_by",
                f"order_by is '{order_by}', must be one of {tuple(order_by_allowed)}",
                given,
            )
        )
    elif page is not None and page < 1:
        errors.append(_pagination_error("invalid_page", "page must be >= 1", given))
    elif page_offset is not None and page_offset < 0:
        errors.append(_pagination_error("invalid_page_offset", "page_offset must be >= 0", given))
    elif sum(1 for v in (page_offset, page, page_after_value) if v) > 1:
        errors.append(
            _pagination_error(
                "multiple_pagination_criteria",
                "Can only specify one of: page_offset, page, or page_after_value",
                given,
            )
        )
    elif page_size == 0:
        for name, value in (
            ("page_offset", page_offset),
            ("page", page),
            ("page_after_value", page_after_value),
        ):
            if value is not None:
                errors.append(
                    _pagination_error(
                        "invalid_pagination",
                        f"Cannot specify {name} when page_size is set to 0",
                        given,
                    )
                )
                break
    if not errors and page_after_value is not None:
        try:
            if int(page_after_value) < -1:
                raise ValueError
        except ValueError:
            _problem(400, "page_after_value must be an index")
    if errors:
        _validation(*errors)
    if order_by is not None:
        items = sorted(items, key=lambda item: sort_key(item, order_by), reverse=order == "desc")
    elif order == "desc":
        items = list(reversed(items))
    total = len(items)
    result: dict[str, Any] = {
        "page_size": page_size,
        "order_by": order_by,
        "order": order,
        "total": total,
    }
    if page_offset is not None:
        result["page_offset"] = page_offset
    if not page_size:
        result["page"] = 1
        page_items: list[Any] = []
    else:
        if page_offset is not None:
            index = page_offset
        elif page is not None:
            index = (page - 1) * page_size
        elif page_after_value is not None:
            index = int(page_after_value) + 1
        else:
            index = 0
        current = index // page_size + 1
        result["page"] = current
        if current != 1:
            result["page_after_value"] = str(index - 1)
        if page_size * current < total:
            result["next_page_after_value"] = str(index + page_size - 1)
        if current < 1 or (total == 0 and current != 1) or 0 < total <= (current - 1) * page_size:
            _problem(400, "Page out of range requested.")
        page_items = items[index : index + page_size]
    if request.method == "GET":
        _populate_urls(request, result)
    return page_items, result


def _pagination_error(kind: str, message: str, given: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": kind, "loc": ["query"], "msg": message, "input": dict(given)}


def _populate_urls(request: web.Request, result: dict[str, Any]) -> None:
    url = str(request.url)
    result["page_url"] = url

    def with_args(**changes: Any) -> str:
        pairs = [(k, v) for k, v in request.query.items() if k not in changes]
        pairs += [(k, str(v)) for k, v in changes.items() if v is not None]
        query = urlencode(pairs)
        return str(request.url.with_query(None)) + (f"?{query}" if query else "")

    if result["page_size"]:
        result["first_page_url"] = with_args(page=None, page_after_value=None)
    if result.get("next_page_after_value"):
        result["next_page_url"] = with_args(
            page=None, page_after_value=result["next_page_after_value"]
        )
    if result.get("page", 1) > 1:
        result["prev_page_url"] = with_args(page=result["page"] - 1, page_after_value=None)


def _sort_value(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, "")
    if isinstance(value, datetime):
        return (1, value.timestamp())
    return (1, value)


# -- access rules ------------------------------------------------------------------------


def _can_read(upload: UploadRecord, user: UserRecord | None) -> bool:
    if upload.published and upload.embargo_length == 0:
        return True
    if user is None:
        return False
    return user.is_admin or user.user_id in upload.viewers


def _can_write(upload: UploadRecord, user: UserRecord) -> bool:
    return user.is_admin or user.user_id in upload.writers


def _readable_upload(request: web.Request, upload_id: str, user: UserRecord | None) -> UploadRecord:
    upload = _state(request).get_upload(upload_id)
    if upload is None:
        _problem(404, "The specified upload_id was not found.")
    if _can_read(upload, user):
        return upload
    if user is None:
        _problem(401, "You need to log in to access the specified upload.")
    if upload.published:
        _problem(
            _forbidden(request),
            "You do not have access to the specified upload - published with embargo.",
        )
    _problem(_forbidden(request), "You do not have access to the specified upload.")


def _writable_upload(
    request: web.Request,
    upload_id: str,
    user: UserRecord,
    *,
    include_published: bool,
    published_requires_admin: bool,
    only_main_author: bool = False,
) -> UploadRecord:
    upload = _state(request).get_upload(upload_id)
    if upload is None:
        _problem(404, "The specified upload_id was not found.")
    if not _can_write(upload, user):
        _problem(_forbidden(request), "You do not have write access to the specified upload.")
    if only_main_author and not user.is_admin and upload.main_author != user.user_id:
        _problem(_forbidden(request), "Only main author has permissions for this operation.")
    if upload.published:
        if not include_published:
            _problem(
                400 if _v2(request) else 401,
                "Upload is already published, operation not possible.",
            )
        if published_requires_admin and not user.is_admin:
            _problem(
                _forbidden(request),
                "Upload is already published, only admins can perform this operation.",
            )
    return upload


# -- routes: info, auth, users -----------------------------------------------------------


async def info(request: web.Request) -> web.Response:
    """GET /info."""
    config = request.app[CONFIG_KEY]
    version = "2.0.0" if config.is_v2 else "1.3.14"
    parsers = [p.name(config.api_version) for p in PARSERS]
    return _json(
        {
            "parsers": parsers,
            "metainfo_packages": ["general", "general.experimental", "common", "public"],
            "codes": [{"code_name": p.code_name, "code_homepage": None} for p in PARSERS],
            "normalizers": ["SystemNormalizer", "ResultsNormalizer"],
            "plugin_entry_points": [],
            "plugin_packages": [],
            "statistics": {
                "n_entries": sum(len(u.entries) for u in _state(request).uploads()),
                "n_uploads": len(_state(request).uploads()),
            },
            "search_quantities": {},
            "version": version,
            "deployment": "nomad-bulk local server",
            "oasis": True,
            "git": {"ref": "local", "version": version, "commit": "local", "log": ""},
        }
    )


def _token_response(request: web.Request, user: UserRecord) -> web.Response:
    config = request.app[CONFIG_KEY]
    token, _exp = _state(request).signer.access_token(
        user.user_id, user.username, config.token_lifetime
    )
    if config.is_v2:
        # NOMAD: 2.0 answers with an OIDC token set; refresh works only against Keycloak.
        lifetime = round(config.token_lifetime)
        response = _json(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": lifetime,
                "refresh_token": token,
                "refresh_expires_in": lifetime,
                "id_token": token,
                "scope": "openid profile email",
            }
        )
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response
    return _json({"access_token": token, "token_type": "bearer"})


def _check_credentials(request: web.Request, username: str, password: str) -> UserRecord:
    user = _state(request).user_by_name(username)
    if user is None or user.password != password:
        scheme = "Basic" if _v2(request) else "Bearer"
        _problem(401, "Incorrect username or password", **{"WWW-Authenticate": scheme})
    return user


def _missing(loc: list[Any], value: Any = None) -> dict[str, Any]:
    return {"type": "missing", "loc": loc, "msg": "Field required", "input": value}


async def post_token(request: web.Request) -> web.Response:
    """POST /auth/token (form data)."""
    form = await request.post()
    errors = [
        _missing(["body", name])
        for name in ("username", "password")
        if not isinstance(form.get(name), str)
    ]
    grant_type = form.get("grant_type")
    if _v2(request) and grant_type is None:
        # NOMAD: 2.0 uses OAuth2PasswordRequestFormStrict: grant_type is required.
        errors.insert(0, _missing(["body", "grant_type"]))
    if grant_type is not None and grant_type != "password":
        errors.append(
            {
                "type": "string_pattern_mismatch",
                "loc": ["body", "grant_type"],
                "msg": "String should match pattern '^password$'",
                "input": grant_type,
                "ctx": {"pattern": "^password$"},
            }
        )
    if errors:
        _validation(*errors)
    user = _check_credentials(request, str(form["username"]), str(form["password"]))
    return _token_response(request, user)


async def get_token(request: web.Request) -> web.Response:
    """GET /auth/token?username=&password= (1.3 only)."""
    if _v2(request):
        # NOMAD: 2.0 removed the GET form.
        raise ApiProblem(405, "Method Not Allowed", headers={"Allow": "POST"})
    errors = [
        _missing(["query", name], None)
        for name in ("username", "password")
        if name not in request.query
    ]
    if errors:
        _validation(*errors)
    user = _check_credentials(request, request.query["username"], request.query["password"])
    return _token_response(request, user)


async def get_app_token(request: web.Request) -> web.Response:
    """GET /auth/app_token?expires_in=."""
    user = _require_user(request)
    expires_in = _q_int(request.query, "expires_in", None)
    if expires_in is None:
        _validation(_missing(["query", "expires_in"]))
    if expires_in <= 0:
        _validation(
            {
                "type": "greater_than",
                "loc": ["query", "expires_in"],
                "msg": "Input should be greater than 0",
                "input": request.query.get("expires_in"),
                "ctx": {"gt": 0},
            }
        )
    if expires_in > _APP_TOKEN_MAX:
        _validation(
            {
                "type": "value_error",
                "loc": ["query", "expires_in"],
                "msg": "Value error, Expiration time exceeds the maximum allowed.",
                "input": request.query.get("expires_in"),
            }
        )
    token = _state(request).signer.app_token(user.user_id, float(expires_in))
    return _json({"app_token": token})


async def get_me(request: web.Request) -> web.Response:
    """GET /users/me."""
    user = _require_user(request)
    return _json(_user_json(user, full=True))


async def get_users(request: web.Request) -> web.Response:
    """GET /users?prefix=&user_id=&username=&email=."""
    _current_user(request, required=False)
    state = _state(request)
    q = request.query
    prefix = q.get("prefix")
    ids = set(q.getall("user_id", []))
    usernames = set(q.getall("username", []))
    emails = {e.lower() for e in q.getall("email", [])}
    result = []
    for user in state.users.values():
        if prefix is not None:
            low = prefix.lower()
            if not any(
                (s or "").lower().startswith(low)
                for s in (user.username, user.first_name, user.last_name, user.name)
            ):
                continue
        if ids and user.user_id not in ids:
            continue
        if usernames and user.username not in usernames:
            continue
        if emails and user.email.lower() not in emails:
            continue
        data = _user_json(user, full=True)
        # NOMAD: e-mail addresses are blanked in public user listings.
        data["email"] = None
        result.append(data)
    return _json({"data": result})


async def get_user(request: web.Request) -> web.Response:
    """GET /users/{user_id}."""
    _current_user(request, required=False)
    user = _state(request).users.get(request.match_info["user_id"])
    if user is None:
        _problem(404, "The user does not exist")
    return _json(_user_json(user, full=False))


# -- routes: uploads ---------------------------------------------------------------------


async def _stream_to_file(
    request: web.Request, reader: Any, dest: Path, limit: int, counted: int = 0
) -> int:
    """Copy a body (or multipart part) to ``dest`` chunk by chunk; return bytes written."""
    size = 0
    read = reader.read_chunk if hasattr(reader, "read_chunk") else reader.read
    async with await anyio.open_file(dest, "wb") as out:
        while True:
            chunk = await read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if counted + size > limit:
                raise _TooLarge()
            await out.write(chunk)
    return size


class _TooLarge(Exception):
    pass


def _too_large_response() -> web.Response:
    response = web.Response(status=413, text=_NGINX_413, content_type="text/html")
    response.force_close()
    return response


def _is_safe_basename(name: str) -> bool:
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def _unpublished_count(state: ServerState, user: UserRecord) -> int:
    return sum(1 for u in state.uploads() if u.main_author == user.user_id and not u.published)


async def post_upload(request: web.Request) -> web.StreamResponse:
    """POST /uploads (raw body or multipart)."""
    state = _state(request)
    config = request.app[CONFIG_KEY]
    user = _require_user(request)
    q = request.query
    if not user.is_admin and _unpublished_count(state, user) >= config.upload_limit:
        _problem(400, "Limit of unpublished uploads exceeded for user.")
    embargo_length = _q_int(q, "embargo_length", 0)
    assert embargo_length is not None  # noqa: S101 - a default is given
    if not 0 <= embargo_length <= 36:
        _problem(400, "`embargo_length` must be between 0 and 36 months.")
    publish_directly = bool(_q_bool(q, "publish_directly", False))
    file_name = q.get("file_name")
    upload_name = q.get("upload_name")
    if "local_path" in q and not user.is_admin:
        _problem(_forbidden(request), "You are not authorized to access this path.")
    length = request.content_length
    if length is not None and length > config.max_upload_size:
        # NOMAD: the size limit is the proxy's (nginx client_max_body_size); it answers
        # 413 with an HTML page before the body is read.
        return _too_large_response()
    tmp_dir = Path(await anyio.to_thread.run_sync(_mkdtemp, state.tmp_dir()))
    try:
        received: list[tuple[Path, str]] = []
        method = 2
        content_type = request.content_type
        try:
            if content_type == "multipart/form-data":
                method = 1
                received = await _receive_multipart(request, tmp_dir, config.max_upload_size)
            elif content_type == "application/x-www-form-urlencoded":
                # NOMAD: the form parser swallows such a body; an empty upload is created.
                await _discard_body(request, config.max_upload_size)
            else:
                name = file_name or "NO NAME"
                if not _is_safe_basename(name):
                    _problem(400, "Bad file name provided.")
                dest = tmp_dir / name
                size = await _stream_to_file(request, request.content, dest, config.max_upload_size)
                if size:
                    received = [(dest, name)]
        except _TooLarge:
            return _too_large_response()
        except (OSError, asyncio.IncompleteReadError, ConnectionError) as exc:
            logger.info("upload body aborted: %s", type(exc).__name__)
            _problem(400, "Some IO went wrong, upload probably aborted/disrupted.")
        if method == 2 and received and not file_name:
            suffix = await anyio.to_thread.run_sync(sniff_archive, received[0][0])
            if suffix is None:
                _problem(
                    400,
                    "No file name provided, and the file does not look like a zip or tar file.",
                )
            path, name = received[0]
            renamed = path.with_name(name + suffix)
            os.replace(path, renamed)
            received = [(renamed, renamed.name)]
        if not upload_name:
            if method == 2:
                upload_name = file_name or None
            elif len(received) == 1:
                upload_name = received[0][1]
        # Re-check the limit: concurrent requests may have used the slots meanwhile.
        if not user.is_admin and _unpublished_count(state, user) >= config.upload_limit:
            _problem(400, "Limit of unpublished uploads exceeded for user.")
        upload = state.create_upload(
            user,
            upload_name=upload_name,
            embargo_length=embargo_length,
            publish_directly=publish_directly,
            files=received,
        )
        # Built before the next await so it shows the state right after scheduling.
        answer = {"upload_id": upload.upload_id, "data": _upload_json(request, upload)}
    finally:
        await anyio.to_thread.run_sync(_rmtree, tmp_dir)
    if request.headers.get("Accept") == "application/json":
        # NOMAD: this response is serialised without exclude_none (nulls are present).
        return _json(answer, prune=False)
    gui = str(request.url.with_path(request.app[CONFIG_KEY].prefix.rsplit("/api", 1)[0] + "/gui/"))
    return web.Response(text=_THANK_YOU.format(gui=gui.split("?")[0]), content_type="text/plain")


def _mkdtemp(parent: Path) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="body-", dir=parent)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


async def _discard_body(request: web.Request, limit: int) -> None:
    size = 0
    while True:
        chunk = await request.content.read(_CHUNK)
        if not chunk:
            return
        size += len(chunk)
        if size > limit:
            raise _TooLarge()


async def _receive_multipart(
    request: web.Request, tmp_dir: Path, limit: int
) -> list[tuple[Path, str]]:
    reader = await request.multipart()
    received: list[tuple[Path, str]] = []
    total = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if not isinstance(part, type(part)) or getattr(part, "name", None) != "file":
            await part.release()
            continue
        filename = getattr(part, "filename", None)
        name = unquote(filename or "")
        if not _is_safe_basename(name):
            _problem(400, "Bad file name provided.")
        dest = tmp_dir / f"{len(received)}" / name
        dest.parent.mkdir()
        total += await _stream_to_file(request, part, dest, limit, total)
        received.append((dest, name))
    return received


def _list_filter_values(q: MultiMapping[str], name: str) -> list[str]:
    return [v for v in q.getall(name, []) if v != ""]


_UPLOAD_ORDER = ("upload_create_time", "publish_time", "upload_name", "last_status_message")
_ROLES = ("main_author", "coauthor", "reviewer")


async def get_uploads(request: web.Request) -> web.Response:
    """GET /uploads with filters and pagination."""
    user = _require_user(request)
    state = _state(request)
    q = request.query
    v2 = _v2(request)
    upload_ids = _list_filter_values(q, "upload_id")
    upload_names = _list_filter_values(q, "upload_name")
    is_processing = _q_bool(q, "is_processing", None)
    is_published = _q_bool(q, "is_published", None)
    process_status = q.get("process_status")
    is_owned = _q_bool(q, "is_owned", None)
    include_all = _q_bool(q, "include_all", False)
    roles = q.getall("roles", [])
    bad_roles = [r for r in roles if r not in _ROLES]
    if bad_roles:
        _validation(
            _enum_error(["query", "roles", roles.index(bad_roles[0])], bad_roles[0], _ROLES)
        )
    statuses = ("READY", "PENDING", "RUNNING", "WAITING_FOR_RESULT", "SUCCESS", "FAILURE")
    if process_status is not None and process_status not in statuses:
        _validation(_enum_error(["query", "process_status"], process_status, statuses))
    names: list[str] = []
    for name in upload_names:
        # NOMAD: 2.0 also accepts {"value": ..., "type": "exact"|"fuzzy"}; treat as exact.
        if v2 and name.startswith("{"):
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                name = str(json.loads(name)["value"])
        names.append(name)
    active_roles = roles or list(_ROLES)
    selected = []
    for upload in state.uploads():
        role_ok = (
            ("main_author" in active_roles and upload.main_author == user.user_id)
            or ("coauthor" in active_roles and user.user_id in upload.coauthors)
            or ("reviewer" in active_roles and user.user_id in upload.reviewers)
        )
        if not role_ok:
            continue
        if upload_ids and upload.upload_id not in upload_ids:
            continue
        if names and upload.upload_name not in names:
            continue
        if is_processing is not None and upload.process_running != is_processing:
            continue
        if is_published is not None and upload.published != is_published:
            continue
        if v2 and process_status is not None and upload.process_status != process_status:
            continue
        if v2 and is_owned is not None and (upload.main_author == user.user_id) != is_owned:
            continue
        selected.append(upload)
    order_by = (*_UPLOAD_ORDER, "process_status") if v2 else _UPLOAD_ORDER
    page, pagination = _pagination(
        request,
        selected,
        order_by_allowed=order_by,
        default_order_by="upload_create_time",
        sort_key=lambda u, key: _sort_value(getattr(u, key)),
    )
    query_echo: dict[str, Any] = {
        "upload_id": upload_ids or None,
        "upload_name": upload_names or None,
        "is_processing": is_processing,
        "is_published": is_published,
        "process_status": process_status,
        "is_owned": is_owned,
    }
    del include_all
    return _json(
        {
            "query": query_echo,
            "pagination": pagination,
            "data": [_upload_json(request, u) for u in page],
        }
    )


async def get_upload(request: web.Request) -> web.Response:
    """GET /uploads/{upload_id}."""
    user = _current_user(request, required=False)
    upload = _readable_upload(request, request.match_info["upload_id"], user)
    return _json({"upload_id": upload.upload_id, "data": _upload_json(request, upload)})


async def _maybe_wait(request: web.Request, upload_id: str) -> None:
    # NOMAD: 2.0 waits for the process by default (wait_for_processing=true); 1.3 ignores it.
    if _v2(request) and _q_bool(request.query, "wait_for_processing", True):
        await _state(request).wait_idle(upload_id)


def _upload_answer(request: web.Request, upload: UploadRecord) -> web.Response:
    return _json({"upload_id": upload.upload_id, "data": _upload_json(request, upload)})


async def delete_upload(request: web.Request) -> web.Response:
    """DELETE /uploads/{upload_id}."""
    user = _require_user(request)
    state = _state(request)
    upload = _writable_upload(
        request,
        request.match_info["upload_id"],
        user,
        include_published=True,
        published_requires_admin=True,
        only_main_author=True,
    )
    if any(job.kind == "delete" for job in upload.jobs) or (upload.blocked and not _v2(request)):
        _problem(400, "The upload is still being processed.")
    if _v2(request):
        # NOMAD: 2.0 terminates running workflows before deleting.
        await state.preempt(upload)
    state.schedule(upload, Job("delete"))
    answer = _upload_answer(request, upload)
    if _v2(request) and _q_bool(request.query, "wait_for_processing", True):
        await state.wait_idle(upload.upload_id)
    return answer


async def publish_upload(request: web.Request) -> web.Response:
    """POST /uploads/{upload_id}/action/publish."""
    user = _require_user(request)
    state = _state(request)
    upload = _writable_upload(
        request,
        request.match_info["upload_id"],
        user,
        include_published=True,
        published_requires_admin=False,
    )
    embargo_length = _q_int(request.query, "embargo_length", None)
    if upload.published and not user.is_admin:
        _problem(400, "Upload already published.")
    if upload.process_running or upload.jobs:
        _problem(400, "The upload is currently being processed, operation not allowed.")
    if upload.process_status == "FAILURE":
        _problem(400, "Cannot publish an upload that failed processing.")
    processed = sum(1 for e in upload.entries if e.process_status in ("SUCCESS", "FAILURE"))
    if processed == 0:
        _problem(400, "Cannot publish an upload without any resulting entries.")
    if embargo_length is not None and not 0 <= embargo_length <= 36:
        _problem(400, "Invalid embargo_length. Must be between 0 and 36 months.")
    state.schedule(upload, Job("publish", {"embargo_length": embargo_length}))
    await _maybe_wait(request, upload.upload_id)
    return _upload_answer(request, upload)


async def get_upload_entries(request: web.Request) -> web.Response:
    """GET /uploads/{upload_id}/entries."""
    user = _current_user(request, required=False)
    upload = _readable_upload(request, request.match_info["upload_id"], user)
    page, pagination = _pagination(
        request,
        list(upload.entries),
        order_by_allowed=(
            "mainfile",
            "parser_name",
            "process_status",
            "current_process",
            "entry_create_time",
        ),
        default_order_by="mainfile",
        sort_key=lambda e, key: _sort_value(
            "process_entry" if key == "current_process" else getattr(e, key)
        ),
        aliases={"mainfile_path": "mainfile"},
    )
    return _json(
        {
            "pagination": pagination,
            "processing_successful": sum(
                1 for e in upload.entries if e.process_status == "SUCCESS"
            ),
            "processing_failed": sum(1 for e in upload.entries if e.process_status == "FAILURE"),
            "upload": _upload_json(request, upload),
            "data": [_entry_proc_json(request, upload, e) for e in page],
        }
    )


async def get_upload_entry(request: web.Request) -> web.Response:
    """GET /uploads/{upload_id}/entries/{entry_id}."""
    user = _require_user(request)
    upload = _readable_upload(request, request.match_info["upload_id"], user)
    entry = upload.entry(request.match_info["entry_id"])
    if entry is None:
        _problem(404, "An entry by that id could not be found in the specified upload.")
    return _json({"entry_id": entry.entry_id, "data": _entry_proc_json(request, upload, entry)})


# -- routes: edit ------------------------------------------------------------------------


_UPLOAD_LEVEL = ("upload_name", "embargo_length", "coauthors", "reviewers", "external_db")
_UPLOAD_LEVEL_GROUPS = ("coauthor_groups", "reviewer_groups")
_ENTRY_LEVEL = ("comment", "references", "datasets", "external_id")
_ADMIN_ONLY = (
    "main_author",
    "license",
    "upload_create_time",
    "publish_time",
    "entry_create_time",
)
_KNOWN = frozenset((*_UPLOAD_LEVEL, *_UPLOAD_LEVEL_GROUPS, *_ENTRY_LEVEL, *_ADMIN_ONLY))


class _EditErrors:
    def __init__(self, v2: bool) -> None:
        self.v2 = v2
        self.errors: list[dict[str, Any]] = []

    def add(self, loc: Sequence[Any], msg: str) -> None:
        # NOMAD: 2.0 edit errors carry only loc and msg; 1.3 adds type "value_error".
        error: dict[str, Any] = {"loc": list(loc), "msg": msg}
        if not self.v2:
            error["type"] = "value_error"
        self.errors.append(error)


def _list_op(value: Any, *, datasets: bool) -> dict[str, list[Any]] | str:
    """Normalise a list quantity to ``{"set": ...}`` or ``{"add": ..., "remove": ...}``."""
    if isinstance(value, dict):
        keys = set(value)
        if not keys or keys - {"set", "add", "remove"}:
            return "Unknown list operation"
        if "set" in value and keys & {"add", "remove"}:
            return "Cannot use `set` together with `add` or `remove`"
        if datasets and "set" in value:
            return "Only `add` and `remove` operations permitted for datasets"
        op = {k: v if isinstance(v, list) else [v] for k, v in value.items() if v is not None}
        if set(op.get("add", [])) & set(op.get("remove", [])):
            return "Cannot add and remove the same value"
        return op
    values = value if isinstance(value, list) else [value]
    return {"add": values} if datasets else {"set": values}


def _validate_edit(
    request: web.Request, upload: UploadRecord, user: UserRecord, body: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    state = _state(request)
    errors = _EditErrors(_v2(request))
    params: dict[str, Any] = {"upload": {}, "entries_all": {}, "entries": {}}
    metadata = body.get("metadata")
    entries = body.get("entries")
    entries_key = body.get("entries_key", "entry_id")
    if metadata is not None and not isinstance(metadata, dict):
        errors.add(["metadata"], "Input should be a valid dictionary")
        return params, errors.errors
    if not metadata and not entries:
        errors.add(["metadata"], "No fields to update specified")
        return params, errors.errors
    if entries_key not in ("entry_id", "mainfile"):
        errors.add(["entries_key"], "Invalid entries_key")

    def check(loc: list[Any], key: str, value: Any, *, upload_level: bool) -> Any:
        if key in _ADMIN_ONLY:
            if not user.is_admin:
                errors.add(loc, "Admin rights required")
            return None
        if key not in _UPLOAD_LEVEL and key not in _ENTRY_LEVEL and key not in _UPLOAD_LEVEL_GROUPS:
            errors.add(loc, "Unknown quantity")
            return None
        if key in _UPLOAD_LEVEL + _UPLOAD_LEVEL_GROUPS and not upload_level:
            errors.add(loc, "Quantity can only be edited on the upload level")
            return None
        if upload.published and key not in ("embargo_length",) and key in ("upload_name",):
            pass
        if key == "upload_name":
            if value is not None and not isinstance(value, str):
                errors.add(loc, "Input should be a valid string")
                return None
            return value or None
        if key == "embargo_length":
            if isinstance(value, bool) or not isinstance(value, int):
                errors.add(loc, "Input should be a valid integer")
                return None
            if not 0 <= value <= 36:
                errors.add(loc, "Value should be between 0 and 36")
                return None
            if upload.published and value != 0:
                errors.add(
                    loc, f"Upload {upload.upload_id} is published, embargo can only be lifted"
                )
                return None
            return value
        if key == "external_db":
            if value not in _EXTERNAL_DBS:
                errors.add(loc, f"Value should be one of {list(_EXTERNAL_DBS)}")
                return None
            return value
        if key in ("comment", "external_id"):
            if value is not None and not isinstance(value, str):
                errors.add(loc, "Input should be a valid string")
                return None
            return value
        if key in _UPLOAD_LEVEL_GROUPS:
            op = _list_op(value, datasets=False)
            if isinstance(op, str):
                errors.add(loc, op)
                return None
            for group in [*op.get("set", []), *op.get("add", [])]:
                errors.add(loc, f"Group reference not found: `{group}`")
                return None
            return None
        op = _list_op(value, datasets=key == "datasets")
        if isinstance(op, str):
            errors.add(loc, op)
            return None
        resolved: dict[str, list[str]] = {}
        for name, refs in op.items():
            out = []
            for ref in refs:
                if not isinstance(ref, str):
                    errors.add(loc, "Input should be a valid string")
                    return None
                if key in ("coauthors", "reviewers"):
                    found = state.resolve_user_ref(ref)
                    if found is None:
                        errors.add(loc, f"User reference not found: `{ref}`")
                        return None
                    if found.user_id == upload.main_author:
                        continue  # NOMAD drops the main author silently
                    out.append(found.user_id)
                elif key == "datasets":
                    dataset = state.get_dataset(ref)
                    if dataset is None:
                        dataset = next(
                            (
                                d
                                for d in state.datasets()
                                if d.dataset_name == ref and d.user_id == user.user_id
                            ),
                            None,
                        )
                    if dataset is None:
                        errors.add(loc, f"Dataset reference not found: `{ref}`")
                        return None
                    if dataset.user_id != user.user_id and not user.is_admin:
                        errors.add(loc, f"Dataset `{ref}` does not belong to you")
                        return None
                    if name == "remove" and dataset.doi:
                        errors.add(loc, f"Cannot remove entry from dataset `{ref}` with DOI")
                        return None
                    out.append(dataset.dataset_id)
                else:  # references
                    if not ref.startswith(("http://", "https://")) or "." not in ref:
                        errors.add(loc, "Please enter a valid URL ...")
                        return None
                    out.append(ref)
            resolved[name] = out
        return resolved

    known = 0
    if isinstance(metadata, dict):
        for key, value in metadata.items():
            loc = ["metadata", key]
            checked = check(loc, key, value, upload_level=True)
            if key in _KNOWN:
                known += 1
            if checked is None and key not in ("upload_name", "comment", "external_id"):
                continue
            target = "upload" if key in _UPLOAD_LEVEL else "entries_all"
            params[target][key] = checked
    if isinstance(metadata, dict) and metadata and not known and not entries:
        errors.add(["metadata"], "No fields to update specified")
    if isinstance(entries, dict):
        index = {
            (e.entry_id if entries_key == "entry_id" else e.mainfile): e for e in upload.entries
        }
        for ref, changes in entries.items():
            entry = index.get(ref)
            if entry is None:
                errors.add(["entries", ref], f"Entry not found: `{ref}`")
                continue
            if not isinstance(changes, dict):
                errors.add(["entries", ref], "Input should be a valid dictionary")
                continue
            per: dict[str, Any] = {}
            for key, value in changes.items():
                checked = check(["entries", ref, key], key, value, upload_level=False)
                if checked is not None or key in ("comment", "external_id"):
                    per[key] = checked
            params["entries"][entry.entry_id] = per
    return params, errors.errors


def _auth_level(request: web.Request, level: str) -> str:
    return f"AuthLevel.{level}"


async def edit_upload(request: web.Request) -> web.Response:
    """POST /uploads/{upload_id}/edit."""
    user = _require_user(request)
    state = _state(request)
    upload_id = request.match_info["upload_id"]
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        _validation(
            {
                "type": "json_invalid",
                "loc": ["body", 0],
                "msg": "JSON decode error",
                "ctx": {"error": "Expecting value"},
            }
        )
    if not isinstance(body, dict):
        _validation(
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": body,
            }
        )
    upload = state.get_upload(upload_id)
    errors = _EditErrors(_v2(request))
    if upload is None:
        # NOMAD: an unknown upload is a 422 on loc ["upload_id"], not a 404.
        errors.add(["upload_id"], "No matching upload found")
        _validation(*errors.errors)
    if not _can_write(upload, user):
        metadata = body.get("metadata")
        entries = body.get("entries")
        if isinstance(metadata, dict) and metadata:
            loc = ["metadata", next(iter(metadata))]
        elif isinstance(entries, dict) and entries:
            loc = ["entries", next(iter(entries))]
        else:
            loc = ["metadata"]
        errors.add(
            loc, f"{_auth_level(request, 'coauthor')} access required for upload {upload_id}"
        )
        _validation(*errors.errors)
    params, problems = _validate_edit(request, upload, user, body)
    if problems:
        _validation(*problems)
    if body.get("verify_only"):
        return _upload_answer(request, upload)
    if upload.blocked:
        _problem(400, f"Upload {upload_id} is blocked by another process")
    if _v2(request) and (upload.process_running or upload.jobs):
        # NOMAD: 2.0 does not queue; anything running blocks the edit.
        _problem(400, "Upload is currently blocked by another process")
    state.schedule(upload, Job("edit", params))
    await _maybe_wait(request, upload_id)
    return _upload_answer(request, upload)


# -- routes: raw files -------------------------------------------------------------------


def _access(upload: UploadRecord) -> str:
    if not upload.published:
        return "unpublished"
    return "embargoed" if upload.embargo_length > 0 else "public"


def _raw_listing(
    raw_dir: Path, path: str, mainfiles: Mapping[str, EntryRecord]
) -> tuple[str, Any] | None:
    target = raw_dir / path if path else raw_dir
    if not target.exists():
        return None
    if target.is_file():
        return "file", (target.name, target.stat().st_size)
    content = []
    total = 0
    for child in sorted(target.iterdir(), key=lambda p: p.name):
        if child.is_symlink():
            continue
        if child.is_dir():
            size = sum(p.stat().st_size for _r, p in iter_files(child))
            content.append((child.name, False, size))
        else:
            size = child.stat().st_size
            content.append((child.name, True, size))
        total += size
    return "dir", (target.name if path else "", total, content)


async def get_rawdir(request: web.Request) -> web.Response:
    """GET /uploads/{upload_id}/rawdir/{path}."""
    user = _current_user(request, required=False)
    upload = _readable_upload(request, request.match_info["upload_id"], user)
    path = request.match_info.get("path", "").strip("/")
    if path and not is_safe_relative_path(path):
        _problem(400, "Bad path provided.")
    include_entry_info = _q_bool(request.query, "include_entry_info", False)
    mainfiles = {e.mainfile: e for e in upload.entries}
    raw_dir = _state(request).raw_dir(upload.upload_id)
    listing = await anyio.to_thread.run_sync(_raw_listing, raw_dir, path, mainfiles)
    if listing is None:
        _problem(404, "Not found. Invalid path?")
    kind, value = listing

    def info(rel: str) -> dict[str, Any]:
        entry = mainfiles.get(rel)
        if not include_entry_info or entry is None:
            return {}
        return {"entry_id": entry.entry_id, "parser_name": entry.parser_name}

    if kind == "file":
        name, size = value
        return _json(
            {
                "path": path,
                "access": _access(upload),
                "file_metadata": {"name": name, "size": size, **info(path)},
            }
        )
    name, total, content = value
    items = [
        {
            "name": child,
            "is_file": is_file,
            "size": size,
            **(info(f"{path}/{child}" if path else child) if is_file else {}),
        }
        for child, is_file, size in content
    ]
    page, pagination = _pagination(
        request,
        items,
        order_by_allowed=("name",),
        default_order_by=None,
        sort_key=lambda item, key: item[key],
    )
    return _json(
        {
            "path": path,
            "access": _access(upload),
            "directory_metadata": {"name": name, "size": total, "content": page},
            "pagination": pagination,
        }
    )


async def get_raw(request: web.Request) -> web.StreamResponse:
    """GET /uploads/{upload_id}/raw/{path}: one file, or a zip with compress=true."""
    user = _current_user(request, required=False)
    upload = _readable_upload(request, request.match_info["upload_id"], user)
    path = request.match_info.get("path", "").strip("/")
    if path and not is_safe_relative_path(path):
        _problem(400, "Bad path provided.")
    raw_dir = _state(request).raw_dir(upload.upload_id)
    target = raw_dir / path if path else raw_dir
    compress = _q_bool(request.query, "compress", False)
    if not target.exists():
        _problem(404, "Not found. Invalid path?")
    if target.is_dir():
        if not compress:
            _problem(400, "Path is a directory, `compress` must be set to true")
        files = [(f"{path}/{rel}" if path else rel, p) for rel, p in iter_files(target)]
        name = f"{upload.upload_id}.zip" if not path else f"{target.name}.zip"
        return await _send_zip(request, files, name)
    if compress:
        return await _send_zip(request, [(path, target)], f"{target.name}.zip")
    offset = _q_int(request.query, "offset", 0) or 0
    length = _q_int(request.query, "length", -1)
    if offset or (length is not None and length >= 0):
        data = await anyio.to_thread.run_sync(_read_range, target, offset, length)
        return web.Response(body=data, content_type="application/octet-stream")
    content_type = mimetypes.guess_type(target.name)[0] or "text/plain"
    return web.FileResponse(
        target,
        headers={
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{target.name}"',
        },
    )


def _read_range(path: Path, offset: int, length: int | None) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(-1 if length is None or length < 0 else length)


def _build_zip(dest: Path, files: Iterable[tuple[str, Path]], extra: Mapping[str, str]) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_STORED) as zf:
        for arcname, path in files:
            zf.write(path, arcname)
        for arcname, text in extra.items():
            zf.writestr(arcname, text)


async def _send_zip(
    request: web.Request,
    files: list[tuple[str, Path]],
    filename: str,
    extra: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    tmp_dir = Path(await anyio.to_thread.run_sync(_mkdtemp, _state(request).tmp_dir()))
    try:
        dest = tmp_dir / "out.zip"
        await anyio.to_thread.run_sync(_build_zip, dest, files, dict(extra or {}))
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/zip",
                "Content-Disposition": f'attachment; filename="{filename}"',
            }
        )
        response.content_length = dest.stat().st_size
        await response.prepare(request)
        async with await anyio.open_file(dest, "rb") as f:
            while chunk := await f.read(_CHUNK):
                await response.write(chunk)
        await response.write_eof()
        return response
    finally:
        await anyio.to_thread.run_sync(_rmtree, tmp_dir)


# -- routes: entries ---------------------------------------------------------------------


def _visible_entry(
    request: web.Request, entry_id: str, user: UserRecord | None
) -> tuple[UploadRecord, EntryRecord] | None:
    found = _state(request).find_entry(entry_id)
    if found is None or not _can_read(found[0], user):
        return None
    if found[1].process_status not in ("SUCCESS", "FAILURE"):
        return None  # not yet in the search index
    return found


async def get_entry(request: web.Request) -> web.Response:
    """GET /entries/{entry_id}."""
    user = _current_user(request, required=False)
    found = _visible_entry(request, request.match_info["entry_id"], user)
    if found is None:
        _problem(404, "The entry with the given id does not exist or is not visible to you.")
    upload, entry = found
    return _json(
        {
            "entry_id": entry.entry_id,
            "required": {"include": None, "exclude": None},
            "data": _entry_metadata(request, upload, entry),
        }
    )


async def get_entry_raw(request: web.Request) -> web.StreamResponse:
    """GET /entries/{entry_id}/raw: the entry's directory as a zip with a manifest."""
    user = _current_user(request, required=False)
    found = _visible_entry(request, request.match_info["entry_id"], user)
    if found is None:
        _problem(404, "The entry with the given id does not exist or is not visible to you.")
    upload, entry = found
    raw_dir = _state(request).raw_dir(upload.upload_id)
    directory = entry.mainfile.rsplit("/", 1)[0] if "/" in entry.mainfile else ""
    base = raw_dir / directory if directory else raw_dir
    files = []
    if base.is_dir():
        for child in sorted(base.iterdir(), key=lambda p: p.name):
            if child.is_file() and not child.is_symlink():
                rel = f"{directory}/{child.name}" if directory else child.name
                files.append((f"{upload.upload_id}/{rel}", child))
    manifest = json.dumps([_prune(_entry_metadata(request, upload, entry))], indent=2)
    return await _send_zip(request, files, "raw_files.zip", {"manifest.json": manifest})


def _archive(request: web.Request, upload: UploadRecord, entry: EntryRecord) -> dict[str, Any]:
    return {
        "metadata": _prune(_entry_metadata(request, upload, entry)),
        "results": {
            "method": {"simulation": {"program_name": _code(entry)}},
        },
        "processing_logs": [],
    }


async def get_entry_archive(request: web.Request) -> web.Response:
    """GET /entries/{entry_id}/archive."""
    user = _current_user(request, required=False)
    found = _visible_entry(request, request.match_info["entry_id"], user)
    if found is None:
        _problem(404, "The entry does not exist or is not visible to you.")
    upload, entry = found
    if entry.process_status != "SUCCESS":
        _problem(404, "The entry does exist, but it has no archive.")
    return _json(
        {
            "entry_id": entry.entry_id,
            "required": "*",
            "data": {
                "entry_id": entry.entry_id,
                "upload_id": upload.upload_id,
                "parser_name": entry.parser_name,
                "archive": _archive(request, upload, entry),
            },
        }
    )


async def get_entry_archive_download(request: web.Request) -> web.Response:
    """GET /entries/{entry_id}/archive/download: the plain archive as a file."""
    user = _current_user(request, required=False)
    found = _visible_entry(request, request.match_info["entry_id"], user)
    if found is None:
        _problem(404, "The entry does not exist or is not visible to you.")
    upload, entry = found
    if entry.process_status != "SUCCESS":
        _problem(404, "The entry does exist, but it has no archive.")
    response = _json(_archive(request, upload, entry))
    # NOMAD: 2.0 names the file <entry_id>.archive.json, 1.3 <entry_id>.json.
    suffix = ".archive.json" if _v2(request) else ".json"
    response.headers["Content-Disposition"] = f'attachment; filename="{entry.entry_id}{suffix}"'
    return response


_OWNERS = ("public", "visible", "shared", "user", "staging", "admin", "all")


def _owner_ok(owner: str, upload: UploadRecord, user: UserRecord | None) -> bool:
    public = upload.published and upload.embargo_length == 0
    if owner == "public":
        return public
    if owner == "all":
        return upload.published or (user is not None and user.user_id in upload.viewers)
    if user is None:
        return False
    if owner == "visible":
        return public or user.is_admin or user.user_id in upload.viewers
    if owner == "shared":
        return user.user_id in upload.viewers
    if owner == "user":
        return user.user_id == upload.main_author
    if owner == "staging":
        return not upload.published and user.user_id in upload.viewers
    return user.is_admin  # admin


def _query_value_matches(value: Any, actual: Any) -> bool:
    if isinstance(value, dict):
        if "any" in value:
            return any(_query_value_matches(v, actual) for v in value["any"])
        if "all" in value:
            return all(_query_value_matches(v, actual) for v in value["all"])
        return False
    if isinstance(value, list):
        return any(_query_value_matches(v, actual) for v in value)
    if isinstance(actual, list):
        return value in actual
    return bool(actual == value)


def _entry_field(upload: UploadRecord, entry: EntryRecord, key: str) -> Any:
    simple = {
        "upload_id": upload.upload_id,
        "entry_id": entry.entry_id,
        "mainfile": entry.mainfile,
        "parser_name": entry.parser_name,
        "upload_name": upload.upload_name,
        "published": upload.published,
        "processed": entry.process_status == "SUCCESS",
        "comment": entry.comment,
        "references": entry.references,
        "external_id": entry.external_id,
        "main_author.user_id": upload.main_author,
        "authors.user_id": upload.writers,
        "datasets.dataset_id": entry.datasets,
        "datasets": entry.datasets,
        "with_embargo": upload.embargo_length > 0,
    }
    return simple.get(key, _MISSING)


_MISSING = object()


async def _entries_query(
    request: web.Request, body: Mapping[str, Any], *, post: bool
) -> web.Response:
    user = _current_user(request, required=False)
    state = _state(request)
    owner = body.get("owner", "public")
    if owner not in _OWNERS:
        _validation(_enum_error(["body" if post else "query", "owner"], owner, _OWNERS))
    if owner in ("user", "shared", "staging", "admin") and user is None:
        _problem(401, "Authentication required for owner value user")
    if owner == "admin" and user is not None and not user.is_admin:
        _problem(401, "This can only be used by the admin user.")
    query = body.get("query") or {}
    if not isinstance(query, dict):
        _validation({"type": "dict_type", "loc": ["body", "query"], "msg": "Invalid query"})
    pagination = body.get("pagination") or {}
    results = []
    for upload in state.uploads():
        if not _owner_ok(owner, upload, user):
            continue
        for entry in upload.entries:
            if entry.process_status not in ("SUCCESS", "FAILURE"):
                continue
            ok = True
            for key, value in query.items():
                actual = _entry_field(upload, entry, key)
                if actual is _MISSING or not _query_value_matches(value, actual):
                    ok = False
                    break
            if ok:
                results.append((upload, entry))
    page_size = int(pagination.get("page_size", 10))
    order_by = pagination.get("order_by", "entry_id")
    order = pagination.get("order", "asc")
    results.sort(
        key=lambda ue: (
            _sort_value(_entry_field(ue[0], ue[1], order_by))
            if _entry_field(ue[0], ue[1], order_by) is not _MISSING
            else (0, "")
        ),
        reverse=order == "desc",
    )
    after = pagination.get("page_after_value")
    start = 0
    if after is not None:
        keys = [e.entry_id for _u, e in results]
        start = keys.index(str(after)) + 1 if str(after) in keys else 0
    page = results[start : start + page_size] if page_size else []
    pag: dict[str, Any] = {
        "page_size": page_size,
        "order_by": order_by,
        "order": order,
        "total": len(results),
    }
    if after is not None:
        pag["page_after_value"] = after
    if page_size and start + page_size < len(results):
        pag["next_page_after_value"] = page[-1][1].entry_id
    return _json(
        {
            "owner": owner,
            "query": query,
            "pagination": pag,
            "required": body.get("required"),
            "data": [_entry_metadata(request, u, e) for u, e in page],
        }
    )


async def post_entries_query(request: web.Request) -> web.Response:
    """POST /entries/query (owner + upload_id / datasets.dataset_id filters)."""
    try:
        body = await request.json() if request.can_read_body else {}
    except ValueError:
        _validation({"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"})
    if not isinstance(body, dict):
        _validation({"type": "dict_type", "loc": ["body"], "msg": "Input should be an object"})
    return await _entries_query(request, body, post=True)


async def get_entries(request: web.Request) -> web.Response:
    """GET /entries?owner=&upload_id=&... (simple filters as query parameters)."""
    q = request.query
    query = {
        key: q.getall(key) if len(q.getall(key)) > 1 else q[key]
        for key in q
        if key not in ("owner", "page_size", "page_after_value", "order_by", "order")
    }
    pagination = {k: q[k] for k in ("page_size", "page_after_value", "order_by", "order") if k in q}
    body = {"owner": q.get("owner", "public"), "query": query, "pagination": pagination}
    return await _entries_query(request, body, post=False)


# -- routes: datasets --------------------------------------------------------------------


async def post_dataset(request: web.Request) -> web.Response:
    """POST /datasets/ (1.3) or /datasets (2.0)."""
    user = _require_user(request)
    state = _state(request)
    try:
        body = await request.json()
    except ValueError:
        _validation({"type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error"})
    if not isinstance(body, dict):
        _validation({"type": "model_attributes_type", "loc": ["body"], "msg": "Invalid body"})
    name = body.get("dataset_name")
    if not isinstance(name, str) or not name:
        _validation(_missing(["body", "dataset_name"], body))
    dataset_type = body.get("dataset_type") or "owned"
    if dataset_type not in ("owned", "foreign"):
        _validation(_enum_error(["body", "dataset_type"], dataset_type, ("owned", "foreign")))
    if any(d.dataset_name == name and d.user_id == user.user_id for d in state.datasets()):
        _problem(
            400,
            # NOMAD: the message is a stripped multi-line string (sic: "Datesets", newline).
            "The chosen dataset name is already taken. Datesets of the same user must have a"
            "\nunique name.",
        )
    dataset = state.create_dataset(user, name, dataset_type)
    entry_ids = body.get("entries") or []
    if dataset_type == "owned" and isinstance(entry_ids, list):
        for entry_id in entry_ids:
            found = state.find_entry(str(entry_id))
            if (
                found
                and user.user_id in found[0].writers
                and dataset.dataset_id not in (found[1].datasets)
            ):
                found[1].datasets.append(dataset.dataset_id)
    return _json({"dataset_id": dataset.dataset_id, "data": _dataset_json(request, dataset)})


async def get_datasets(request: web.Request) -> web.Response:
    """GET /datasets/ (1.3) or /datasets (2.0)."""
    _current_user(request, required=False)
    q = request.query
    ids = set(_list_filter_values(q, "dataset_id"))
    name = q.get("dataset_name")
    user_ids = set(_list_filter_values(q, "user_id"))
    dataset_type = q.get("dataset_type")
    prefix = q.get("prefix")
    doi = q.get("doi")
    selected = []
    for dataset in _state(request).datasets():
        if ids and dataset.dataset_id not in ids:
            continue
        if name is not None and dataset.dataset_name != name:
            continue
        if user_ids and dataset.user_id not in user_ids:
            continue
        if dataset_type is not None and dataset.dataset_type != dataset_type:
            continue
        if prefix is not None and not dataset.dataset_name.lower().startswith(prefix.lower()):
            continue
        if doi is not None and dataset.doi != doi:
            continue
        selected.append(dataset)
    page, pagination = _pagination(
        request,
        selected,
        order_by_allowed=("dataset_create_time", "dataset_modified_time", "dataset_name"),
        default_order_by=None,
        sort_key=lambda d, key: _sort_value(getattr(d, key)),
    )
    return _json({"pagination": pagination, "data": [_dataset_json(request, d) for d in page]})


async def get_dataset(request: web.Request) -> web.Response:
    """GET /datasets/{dataset_id}."""
    _current_user(request, required=False)
    dataset = _state(request).get_dataset(request.match_info["dataset_id"])
    if dataset is None:
        _problem(404, "The dataset with the given id does not exist.")
    return _json({"dataset_id": dataset.dataset_id, "data": _dataset_json(request, dataset)})


async def delete_dataset(request: web.Request) -> web.Response:
    """DELETE /datasets/{dataset_id}."""
    user = _require_user(request)
    state = _state(request)
    dataset = state.get_dataset(request.match_info["dataset_id"])
    if dataset is None:
        _problem(404, "Dataset not found. The given id does not match any dataset.")
    if dataset.doi and not user.is_admin:
        _problem(400, "The dataset already has a DOI and cannot be changed anymore.")
    if dataset.user_id != user.user_id and not user.is_admin:
        _problem(
            _forbidden(request),
            "The dataset can only be edited by the user who created the dataset.",
        )
    data = _dataset_json(request, dataset)
    state.delete_dataset(dataset.dataset_id)
    return _json({"dataset_id": dataset.dataset_id, "data": data})


def _redirect(target_suffix: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        location = path + "/" if target_suffix == "/" else path.rstrip("/")
        if request.query_string:
            location += "?" + request.query_string
        # NOMAD: Starlette answers the other slash form with a 307 redirect.
        raise web.HTTPTemporaryRedirect(location)

    return handler


# -- middlewares --------------------------------------------------------------------------


def _route_key(request: web.Request) -> tuple[str, str]:
    prefix = request.app[CONFIG_KEY].prefix
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    canonical = resource.canonical if resource is not None else request.path
    if prefix and canonical.startswith(prefix):
        canonical = canonical[len(prefix) :] or "/"
    return request.method, canonical


async def _drop_connection(request: web.Request, rule: FaultRule | None) -> web.StreamResponse:
    if rule is not None and rule.drop_after_bytes > 0 and request.can_read_body:
        with contextlib.suppress(Exception):
            await request.content.readexactly(rule.drop_after_bytes)
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError


def _nginx_page(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    title = f"{status} {phrase}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def _fault_response(rule: FaultRule) -> web.Response:
    headers = {}
    if rule.retry_after is not None:
        value = float(rule.retry_after)
        headers["Retry-After"] = str(int(value)) if value.is_integer() else str(value)
    if rule.body == "html":
        # A reverse proxy's own page (nginx), as NOMAD's ingress answers 502/503/504.
        return web.Response(
            text=_nginx_page(rule.status),
            status=rule.status,
            content_type="text/html",
            headers=headers,
        )
    body = json.dumps({"detail": f"Injected fault: HTTP {rule.status}"})
    return web.Response(
        text=body, status=rule.status, content_type="application/json", headers=headers
    )


@web.middleware
async def _fault_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = _state(request)
    config = request.app[CONFIG_KEY]
    method, route = _route_key(request)
    state.request_count += 1
    state.route_counts[f"{method} {route}"] += 1
    delay = config.latency + state.faults.latency()
    if delay > 0:
        await asyncio.sleep(delay)
    rule = state.faults.pick(method, route)
    if rule is not None and rule.kind == "error":
        if request.can_read_body:
            response: web.StreamResponse = _fault_response(rule)
            response.force_close()
            return response
        return _fault_response(rule)
    if rule is not None and rule.kind == "drop":
        return await _drop_connection(request, rule)
    response = await handler(request)
    if rule is not None and rule.kind == "after":
        return _fault_response(rule)
    if rule is not None and rule.kind == "drop_after":
        return await _drop_connection(request, None)
    return response


@web.middleware
async def _error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    state = _state(request)
    try:
        response = await handler(request)
    except ApiProblem as problem:
        response = _json({"detail": problem.detail}, problem.status, prune=False)
        response.headers.update(problem.headers)
        if request.can_read_body and not request.content.at_eof():
            response.force_close()
    except web.HTTPException as exc:
        if exc.status in (404, 405) and exc.status != 307:
            detail = "Not Found" if exc.status == 404 else "Method Not Allowed"
            response = _json({"detail": detail}, exc.status, prune=False)
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        else:
            raise
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away mid-request (killed, or its network dropped): there is
        # nobody to answer, and it is no server error worth a traceback. Counted as
        # nginx's 499 "client closed request".
        logger.info("client went away during %s %s", request.method, request.path)
        response = web.Response(status=499, text="Client closed the request.")
        response.force_close()
    except Exception as exc:
        logger.exception("unexpected error in %s %s", request.method, request.path)
        response = _json(
            {
                "detail": {
                    "reason": "Unexpected exception while handling your request",
                    "exception": str(exc),
                    "exception_class": type(exc).__name__,
                    "exception_traceback": traceback.format_exc(),
                }
            },
            500,
            prune=False,
        )
    state.status_counts[response.status] += 1
    return response


# -- application ---------------------------------------------------------------------------


def make_app(config: ServerConfig, state: ServerState) -> web.Application:
    """Build the aiohttp application for ``config`` around ``state``."""
    app = web.Application(middlewares=[_error_middleware, _fault_middleware])
    app[CONFIG_KEY] = config
    app[STATE_KEY] = state
    p = config.prefix
    r = app.router
    r.add_get(f"{p}/info", info)
    r.add_post(f"{p}/auth/token", post_token)
    r.add_get(f"{p}/auth/token", get_token)
    r.add_get(f"{p}/auth/app_token", get_app_token)
    r.add_get(f"{p}/users/me", get_me)
    r.add_get(f"{p}/users", get_users)
    r.add_get(f"{p}/users/{{user_id}}", get_user)
    r.add_post(f"{p}/uploads", post_upload)
    r.add_get(f"{p}/uploads", get_uploads)
    r.add_get(f"{p}/uploads/{{upload_id}}", get_upload)
    r.add_delete(f"{p}/uploads/{{upload_id}}", delete_upload)
    r.add_post(f"{p}/uploads/{{upload_id}}/edit", edit_upload)
    r.add_post(f"{p}/uploads/{{upload_id}}/action/publish", publish_upload)
    r.add_get(f"{p}/uploads/{{upload_id}}/entries", get_upload_entries)
    r.add_get(f"{p}/uploads/{{upload_id}}/entries/{{entry_id}}", get_upload_entry)
    r.add_get(f"{p}/uploads/{{upload_id}}/rawdir/{{path:.*}}", get_rawdir)
    r.add_get(f"{p}/uploads/{{upload_id}}/raw/{{path:.*}}", get_raw)
    r.add_post(f"{p}/entries/query", post_entries_query)
    r.add_get(f"{p}/entries", get_entries)
    r.add_get(f"{p}/entries/{{entry_id}}", get_entry)
    r.add_get(f"{p}/entries/{{entry_id}}/raw", get_entry_raw)
    r.add_get(f"{p}/entries/{{entry_id}}/archive", get_entry_archive)
    r.add_get(f"{p}/entries/{{entry_id}}/archive/download", get_entry_archive_download)
    main, other = (
        (f"{p}/datasets", f"{p}/datasets/")
        if config.is_v2
        else (
            f"{p}/datasets/",
            f"{p}/datasets",
        )
    )
    r.add_get(main, get_datasets)
    r.add_post(main, post_dataset)
    redirect = _redirect("" if config.is_v2 else "/")
    r.add_route("*", other, redirect)
    r.add_get(f"{p}/datasets/{{dataset_id}}", get_dataset)
    r.add_delete(f"{p}/datasets/{{dataset_id}}", delete_dataset)
    return app
