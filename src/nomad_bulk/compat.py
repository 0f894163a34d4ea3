"""The NOMAD tutorial's functions, same names and arguments, on top of nomad-bulk.

Code written for ``nomad_utility_workflows.utils.{uploads,entries,datasets,users}``
keeps working when its import lines read ``from nomad_bulk.compat import ...``.
What changes underneath:

- one connection pool and one login per deployment and account, reused across
  calls (closed at interpreter exit, or by :func:`close`), instead of a new
  connection and a new token per call;
- every list is complete (all pages), not the server's first 10 items;
- errors are nomad-bulk's typed exceptions (:class:`~nomad_bulk.errors.NotFoundError`,
  :class:`~nomad_bulk.errors.AuthError`, ...), not bare ``ValueError``;
- credentials come from the environment or a ``.env`` file in the working directory
  (``NOMAD_USERNAME``/``NOMAD_PASSWORD`` or ``NOMAD_TOKEN``), read when a call needs them;
- the calls that start a NOMAD process (upload, edit, publish, delete) return once
  that process has finished, so the tutorial's polling loops succeed at their first
  check; pass ``wait=False`` for the old immediate return;
- ``timeout_in_sec`` is accepted and ignored: nomad-bulk's own connect/read timeouts
  and safe retries apply.

``url`` is ``"prod"``, ``"staging"``, ``"test"``, a full API URL, or ``None``
(``NOMAD_URL`` from the environment or ``.env``, else ``"test"``). Each function is a
thin call into :mod:`nomad_bulk.sync`, which runs the async client on its own
event-loop thread, so these functions also work inside a Jupyter cell.
"""

from __future__ import annotations

import atexit
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import Settings, resolve_url
from .errors import ConfigError, NotFoundError
from .models import Dataset, Entry, Upload, User, parse_timestamp
from .sync import NomadClient

__all__ = [
    "NomadDataset",
    "NomadEntry",
    "NomadUpload",
    "NomadUser",
    "close",
    "create_dataset",
    "delete_dataset",
    "delete_upload",
    "download_entry_by_id",
    "download_entry_raw_data_by_id",
    "edit_upload_metadata",
    "get_all_my_uploads",
    "get_dataset_by_id",
    "get_entries_of_my_uploads",
    "get_entries_of_upload",
    "get_entry_by_id",
    "get_upload_by_id",
    "get_user_by_id",
    "publish_upload",
    "query_entries",
    "redirect_deployment",
    "retrieve_datasets",
    "search_users_by_name",
    "upload_files_to_nomad",
    "who_am_i",
]


# -- result types (the tutorial's attribute names) --------------------------------------


@dataclass(frozen=True)
class NomadUser:
    """A NOMAD account as the tutorial's functions return it (``repr`` shows the name)."""

    user_id: str = field(repr=False)
    name: str | None = None
    first_name: str | None = field(repr=False, default=None)
    last_name: str | None = field(repr=False, default=None)
    username: str | None = field(repr=False, default=None)
    affiliation: str | None = field(repr=False, default=None)
    affiliation_address: str | None = field(repr=False, default=None)
    email: str | None = field(repr=False, default=None)
    is_oasis_admin: bool | None = field(repr=False, default=None)
    is_admin: bool | None = field(repr=False, default=None)
    repo_user_id: str | None = field(repr=False, default=None)
    created: datetime | None = field(repr=False, default=None)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return asdict(self)

    @classmethod
    def _from(cls, user: User, raw: Mapping[str, Any] | None = None) -> NomadUser:
        raw = raw or {}
        return cls(
            user_id=user.user_id,
            name=user.name,
            first_name=user.first_name,
            last_name=user.last_name,
            username=user.username,
            affiliation=user.affiliation,
            affiliation_address=raw.get("affiliation_address"),
            email=user.email,
            is_oasis_admin=raw.get("is_oasis_admin"),
            is_admin=user.is_admin,
            repo_user_id=raw.get("repo_user_id"),
            created=parse_timestamp(raw.get("created")),
        )


def _gui_base(url: str | None) -> str:
    return resolve_url(url).removesuffix("/api/v1")


@dataclass(frozen=True)
class NomadUpload:
    """An upload as the tutorial's ``get_upload_by_id`` returns it."""

    upload_id: str
    upload_create_time: datetime | None
    main_author: NomadUser | None
    process_running: bool
    current_process: str | None
    process_status: str
    last_status_message: str | None
    errors: list[Any]
    warnings: list[Any]
    coauthors: list[str]
    coauthor_groups: list[Any]
    reviewers: list[NomadUser]
    reviewer_groups: list[Any]
    writers: list[NomadUser]
    writer_groups: list[Any]
    viewers: list[NomadUser]
    viewer_groups: list[Any]
    published: bool
    published_to: list[Any]
    with_embargo: bool
    embargo_length: float
    license: str | None
    entries: int
    n_entries: int | None = None
    upload_files_server_path: str | None = None
    publish_time: datetime | None = None
    references: list[str] | None = None
    datasets: list[str] | None = None
    external_db: str | None = None
    upload_name: str | None = None
    comment: str | None = None
    url: str | None = None
    complete_time: datetime | None = None

    @property
    def base_url(self) -> str:
        """The deployment's base URL (the API URL without ``/api/v1``)."""
        return _gui_base(self.url)

    @property
    def nomad_gui_url(self) -> str:
        """Where this upload is shown in the NOMAD web interface."""
        return f"{self.base_url}/gui/user/uploads/upload/id/{self.upload_id}"


@dataclass(frozen=True)
class NomadDataset:
    """A dataset as the tutorial's dataset functions return it."""

    dataset_id: str
    dataset_create_time: datetime | None
    dataset_name: str
    dataset_type: str | None = None
    dataset_modified_time: datetime | None = None
    user: NomadUser | None = None
    doi: str | None = None
    pid: int | None = None
    m_annotations: dict[str, Any] | None = None


@dataclass(frozen=True)
class NomadEntry:
    """An entry as the tutorial's entry functions return it (fields NOMAD omits are None)."""

    entry_id: str
    upload_id: str | None = None
    references: list[str] = field(default_factory=list)
    origin: str | None = None
    quantities: list[str] = field(repr=False, default_factory=list)
    datasets: list[NomadDataset] = field(repr=False, default_factory=list)
    n_quantities: int | None = None
    nomad_version: str | None = None
    upload_create_time: datetime | None = None
    nomad_commit: str | None = None
    section_defs: list[Any] = field(repr=False, default_factory=list)
    processing_errors: list[Any] = field(default_factory=list)
    results: dict[str, Any] = field(repr=False, default_factory=dict)
    entry_name: str | None = None
    last_processing_time: datetime | None = None
    parser_name: str | None = None
    calc_id: str | None = None
    published: bool | None = None
    writers: list[NomadUser] = field(default_factory=list)
    sections: list[str] = field(repr=False, default_factory=list)
    processed: bool | None = None
    mainfile: str | None = None
    main_author: NomadUser | None = None
    viewers: list[NomadUser] = field(repr=False, default_factory=list)
    entry_create_time: datetime | None = None
    with_embargo: bool | None = None
    files: list[str] = field(repr=False, default_factory=list)
    entry_type: str | None = None
    authors: list[NomadUser] = field(repr=False, default_factory=list)
    license: str | None = None
    domain: str | None = None
    optimade: dict[str, Any] | None = field(repr=False, default=None)
    comment: str | None = None
    upload_name: str | None = None
    viewer_groups: list[Any] | None = field(repr=False, default=None)
    writer_groups: list[Any] | None = field(repr=False, default=None)
    text_search_contents: list[str] | None = None
    publish_time: datetime | None = None
    entry_references: list[dict[str, Any]] | None = None
    url: str | None = None

    @property
    def base_url(self) -> str:
        """The deployment's base URL (the API URL without ``/api/v1``)."""
        return _gui_base(self.url)

    @property
    def nomad_gui_url(self) -> str:
        """Where this entry is shown in the NOMAD web interface."""
        return (
            f"{self.base_url}/gui/user/uploads/upload/id/{self.upload_id}/entry/id/{self.entry_id}"
        )


# -- connections: one client per deployment and account, reused -----------------------

_lock = threading.Lock()
_clients: dict[Settings, NomadClient] = {}
_users: dict[tuple[str, str], NomadUser] = {}
_redirects: dict[str, str] = {}
_owner_pid = os.getpid()
_atexit_registered = False


def redirect_deployment(alias: str, url: str | None) -> None:
    """Send calls that name deployment ``alias`` to ``url`` instead, in this process.

    Meant for rehearsing a tutorial notebook against a local server
    (``nomad-bulk serve``) without editing its ``url='test'`` arguments. ``url=None``
    removes the redirection. Nothing is redirected unless this is called.
    """
    key = alias.strip().lower()
    if key not in ("prod", "staging", "test"):
        raise ConfigError(f"deployment alias must be 'prod', 'staging' or 'test', not {alias!r}")
    with _lock:
        if url is None:
            _redirects.pop(key, None)
        else:
            _redirects[key] = resolve_url(url)


def close() -> None:
    """Close every cached connection (done automatically at interpreter exit)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
        _users.clear()
    for client in clients:
        client.close()


def _close_at_exit() -> None:
    try:
        close()
    except Exception:  # noqa: S110  (nothing useful can be done with it at exit)
        pass


def _settings(url: str | None) -> Settings:
    if url is not None:
        url = _redirects.get(url.strip().lower(), url)
    return Settings.from_env(url=url)


def _client(url: str | None) -> tuple[NomadClient, str]:
    """The open client for ``url`` and the current credentials, and its API URL."""
    global _atexit_registered, _owner_pid
    settings = _settings(url)
    with _lock:
        if os.getpid() != _owner_pid:
            # A forked child inherits the dict but not the event-loop threads behind it.
            _clients.clear()
            _users.clear()
            _owner_pid = os.getpid()
        client = _clients.get(settings)
        if client is None:
            client = NomadClient(settings).open()
            _clients[settings] = client
            if not _atexit_registered:
                atexit.register(_close_at_exit)
                _atexit_registered = True
    return client, settings.url


def _user(client: NomadClient, url: str, user_id: str | None) -> NomadUser | None:
    if not user_id:
        return None
    key = (url, user_id)
    cached = _users.get(key)
    if cached is not None:
        return cached
    try:
        user = NomadUser._from(client.get_user(user_id))
    except NotFoundError:
        user = NomadUser(user_id=user_id)
    _users[key] = user
    return user


def _users_of(client: NomadClient, url: str, ids: Sequence[str]) -> list[NomadUser]:
    return [u for u in (_user(client, url, i) for i in ids) if u is not None]


def _upload(client: NomadClient, url: str, upload: Upload) -> NomadUpload:
    raw = upload.raw
    return NomadUpload(
        upload_id=upload.upload_id,
        upload_create_time=upload.upload_create_time,
        main_author=_user(client, url, upload.main_author),
        process_running=upload.process_running,
        current_process=upload.current_process,
        process_status=str(upload.process_status),
        last_status_message=upload.last_status_message,
        errors=list(upload.errors),
        warnings=list(upload.warnings),
        coauthors=list(upload.coauthors),
        coauthor_groups=list(raw.get("coauthor_groups") or []),
        reviewers=_users_of(client, url, upload.reviewers),
        reviewer_groups=list(raw.get("reviewer_groups") or []),
        writers=_users_of(client, url, upload.writers),
        writer_groups=list(raw.get("writer_groups") or []),
        viewers=_users_of(client, url, upload.viewers),
        viewer_groups=list(raw.get("viewer_groups") or []),
        published=upload.published,
        published_to=list(upload.published_to),
        with_embargo=upload.with_embargo,
        embargo_length=float(upload.embargo_length),
        license=upload.license,
        entries=upload.entries,
        upload_files_server_path=upload.upload_files_server_path,
        publish_time=upload.publish_time,
        upload_name=upload.upload_name,
        url=url,
        complete_time=upload.complete_time,
    )


def _user_ref(value: Any) -> NomadUser | None:
    if isinstance(value, Mapping):
        return NomadUser._from(User.from_json(value), value)
    return None


def _user_refs(values: Any) -> list[NomadUser]:
    refs = (_user_ref(v) for v in (values or ()))
    return [u for u in refs if u is not None]


def _dataset_ref(value: Any) -> NomadDataset | None:
    if isinstance(value, Mapping):
        return NomadDataset(
            dataset_id=str(value.get("dataset_id", "")),
            dataset_create_time=parse_timestamp(value.get("dataset_create_time")),
            dataset_name=str(value.get("dataset_name", "")),
            dataset_type=value.get("dataset_type"),
            dataset_modified_time=parse_timestamp(value.get("dataset_modified_time")),
            user=None,
            doi=value.get("doi"),
            pid=value.get("pid"),
            m_annotations=value.get("m_annotations"),
        )
    return None


def _entry(url: str, entry: Entry) -> NomadEntry:
    meta = entry.metadata
    datasets = [d for d in (_dataset_ref(v) for v in meta.get("datasets") or ()) if d]
    return NomadEntry(
        entry_id=entry.entry_id,
        upload_id=entry.upload_id,
        references=list(entry.references),
        origin=meta.get("origin"),
        quantities=list(meta.get("quantities") or []),
        datasets=datasets,
        n_quantities=meta.get("n_quantities"),
        nomad_version=meta.get("nomad_version"),
        upload_create_time=parse_timestamp(meta.get("upload_create_time")),
        nomad_commit=meta.get("nomad_commit"),
        section_defs=list(meta.get("section_defs") or []),
        processing_errors=list(meta.get("processing_errors") or entry.errors),
        results=dict(meta.get("results") or {}),
        entry_name=meta.get("entry_name"),
        last_processing_time=parse_timestamp(meta.get("last_processing_time")),
        parser_name=entry.parser_name,
        calc_id=meta.get("calc_id", entry.entry_id),
        published=entry.published,
        writers=_user_refs(meta.get("writers")),
        sections=list(meta.get("sections") or []),
        processed=entry.processed,
        mainfile=entry.mainfile,
        main_author=_user_ref(meta.get("main_author")),
        viewers=_user_refs(meta.get("viewers")),
        entry_create_time=entry.entry_create_time,
        with_embargo=meta.get("with_embargo"),
        files=list(meta.get("files") or []),
        entry_type=meta.get("entry_type"),
        authors=_user_refs(meta.get("authors")),
        license=meta.get("license"),
        domain=meta.get("domain"),
        optimade=meta.get("optimade"),
        comment=entry.comment,
        upload_name=entry.upload_name,
        viewer_groups=meta.get("viewer_groups"),
        writer_groups=meta.get("writer_groups"),
        text_search_contents=meta.get("text_search_contents"),
        publish_time=parse_timestamp(meta.get("publish_time")),
        entry_references=meta.get("entry_references"),
        url=url,
    )


def _dataset(client: NomadClient, url: str, dataset: Dataset) -> NomadDataset:
    return NomadDataset(
        dataset_id=dataset.dataset_id,
        dataset_create_time=dataset.dataset_create_time,
        dataset_name=dataset.dataset_name,
        dataset_type=dataset.dataset_type,
        dataset_modified_time=dataset.dataset_modified_time,
        user=_user(client, url, dataset.user_id),
        doi=dataset.doi,
    )


def _finished(client: NomadClient, upload_id: str) -> Upload:
    # Interactive pace: a tutorial's upload is done in seconds, so the first polls come
    # quickly; the client's backoff then slows down to at most one poll per 5 s.
    # Failures are not raised: the caller reads process_status, as the tutorial does.
    return client.wait_for_process(
        upload_id, raise_on_failure=False, initial_wait=0.1, max_wait=5.0
    )


def _response(upload: Upload) -> dict[str, Any]:
    # The shape of NOMAD's own answer, which the tutorial's functions return as a dict.
    return {"upload_id": upload.upload_id, "data": dict(upload.raw)}


# -- uploads ------------------------------------------------------------------------------


def upload_files_to_nomad(
    filename: str | os.PathLike[str],
    url: str | None = None,
    timeout_in_sec: int = 30,
    *,
    upload_name: str | None = None,
    wait: bool = True,
) -> str:
    """Upload a file (a ``.zip`` is extracted by NOMAD) and return the new upload_id.

    Returns once NOMAD has finished processing it (``wait=False``: at once).
    Processing failures are not raised here: check ``get_upload_by_id(...).process_status``.
    """
    client, _ = _client(url)
    upload = client.create_upload(Path(filename), upload_name=upload_name)
    if wait:
        _finished(client, upload.upload_id)
    return upload.upload_id


def get_upload_by_id(
    upload_id: str, url: str | None = None, timeout_in_sec: int = 10
) -> NomadUpload:
    """The upload's processing state and metadata; NotFoundError if it does not exist."""
    client, api = _client(url)
    return _upload(client, api, client.get_upload(upload_id))


def get_all_my_uploads(url: str | None = None, timeout_in_sec: int = 10) -> list[NomadUpload]:
    """Every upload the user is main author, coauthor or reviewer of (all pages)."""
    client, api = _client(url)
    return [_upload(client, api, u) for u in client.list_uploads()]


def delete_upload(
    upload_id: str, url: str | None = None, timeout_in_sec: int = 10, *, wait: bool = True
) -> NomadUpload:
    """Delete an unpublished upload and return its last state.

    Returns once NOMAD has deleted it (``wait=False``: as soon as deletion started).
    """
    client, api = _client(url)
    last = _upload(client, api, client.get_upload(upload_id))
    client.delete_upload(upload_id, wait=wait)
    return last


def edit_upload_metadata(
    upload_id: str,
    upload_metadata: Mapping[str, Any] | None = None,
    url: str | None = None,
    timeout_in_sec: int = 10,
    *,
    wait: bool = True,
) -> dict[str, Any]:
    """Edit an upload's metadata; return NOMAD's answer ``{"upload_id", "data"}``.

    Keys: ``upload_name``, ``datasets`` or ``dataset_id`` (ids or own dataset names),
    ``coauthors`` or ``coauthors_ids`` (user ids, usernames or e-mails), ``reviewers``,
    ``references``, ``comment``, ``embargo_length``. A dict nested under ``"metadata"``
    (the tutorial's own example) is accepted as well. Returns once NOMAD has applied
    the edit (``wait=False``: at once). Unknown keys raise ConfigError.
    """
    fields = _edit_fields(upload_metadata or {})
    client, _ = _client(url)
    upload = client.edit_upload(upload_id, **fields)
    if wait:
        upload = _finished(client, upload_id)
    return _response(upload)


_LIST_KEYS = {
    "datasets": "datasets",
    "dataset_id": "datasets",
    "coauthors": "coauthors",
    "coauthors_ids": "coauthors",
    "reviewers": "reviewers",
    "references": "references",
}
_SCALAR_KEYS = ("upload_name", "comment", "embargo_length")


def _edit_fields(metadata: Mapping[str, Any]) -> dict[str, Any]:
    if set(metadata) == {"metadata"} and isinstance(metadata["metadata"], Mapping):
        metadata = metadata["metadata"]
    fields: dict[str, Any] = {}
    for key, value in metadata.items():
        if key in _LIST_KEYS:
            target = _LIST_KEYS[key]
            values = [value] if isinstance(value, str) else list(value or [])
            fields[target] = [*fields.get(target, []), *values]
        elif key == "embargo_length":
            fields[key] = int(value)
        elif key in _SCALAR_KEYS:
            fields[key] = value
        else:
            accepted = ", ".join(sorted([*_LIST_KEYS, *_SCALAR_KEYS]))
            raise ConfigError(f"unknown upload metadata key {key!r}; accepted keys: {accepted}")
    if not fields:
        raise ConfigError("no upload metadata given; nothing to edit")
    return fields


def publish_upload(
    upload_id: str,
    url: str | None = None,
    timeout_in_sec: int = 10,
    *,
    embargo_length: int | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Publish an upload; return NOMAD's answer ``{"upload_id", "data"}``.

    Returns once publishing has finished (``wait=False``: at once). Where the
    upload goes public depends on ``url``: on ``prod`` or ``staging`` it is permanent.
    """
    client, _ = _client(url)
    upload = client.publish_upload(upload_id, embargo_length=embargo_length)
    if wait:
        upload = _finished(client, upload_id)
    return _response(upload)


# -- entries --------------------------------------------------------------------------------


def get_entries_of_upload(
    upload_id: str,
    url: str | None = None,
    with_authentication: bool = False,
    timeout_in_sec: int = 10,
) -> list[NomadEntry]:
    """Every entry of an upload (all pages, not just the first 10).

    Credentials, when configured, are always sent; ``with_authentication`` is
    accepted for compatibility.
    """
    client, api = _client(url)
    return [_entry(api, e) for e in client.get_entries(upload_id)]


def get_entries_of_my_uploads(url: str | None = None, timeout_in_sec: int = 10) -> list[NomadEntry]:
    """Every entry of every upload of the user."""
    client, api = _client(url)
    return [
        _entry(api, e)
        for upload in client.list_uploads()
        for e in client.get_entries(upload.upload_id)
    ]


def get_entry_by_id(
    entry_id: str,
    url: str | None = None,
    with_authentication: bool = False,
    timeout_in_sec: int = 10,
) -> NomadEntry:
    """One entry by id; NotFoundError if it does not exist or is not visible."""
    client, api = _client(url)
    return _entry(api, client.get_entry(entry_id))


_QUERY_KEYS = {
    "worfklow_name": "results.method.workflow_name",  # sic: the tutorial package's spelling
    "workflow_name": "results.method.workflow_name",
    "program_name": "results.method.simulation.program_name",
    "dataset_id": "datasets.dataset_id",
    "origin": "origin",
    "upload_id": "upload_id",
}


def query_entries(
    query_params: Mapping[str, Any] | None = None, url: str | None = None
) -> list[NomadEntry]:
    """Entries matching ``query_params`` (keys as in the tutorial package).

    Keys: ``workflow_name`` (also spelled ``worfklow_name``), ``program_name``,
    ``dataset_id``, ``origin``, ``upload_id``; ``page_size`` (10) and
    ``max_entries`` (50; negative = all). Unknown keys raise ConfigError.
    """
    params = dict(query_params or {})
    page_size = int(params.pop("page_size", 10) or 10)
    max_entries = int(params.pop("max_entries", 50))
    query: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key not in _QUERY_KEYS:
            accepted = ", ".join(sorted([*_QUERY_KEYS, "page_size", "max_entries"]))
            raise ConfigError(f"unknown query key {key!r}; accepted keys: {accepted}")
        query[_QUERY_KEYS[key]] = value
    client, api = _client(url)
    entries = client.query_entries(
        query, page_size=page_size, limit=max_entries if max_entries >= 0 else None
    )
    return [_entry(api, e) for e in entries]


def download_entry_raw_data_by_id(
    entry_id: str,
    url: str | None = None,
    timeout_in_sec: int = 10,
    with_authentication: bool = False,
    zip_file_name: str | os.PathLike[str] | None = None,
) -> bytes:
    """The entry's raw files as zip bytes; also written to ``zip_file_name`` if given."""
    client, _ = _client(url)
    if zip_file_name is not None:
        return client.download_entry_raw(entry_id, Path(zip_file_name)).read_bytes()
    with tempfile.TemporaryDirectory(prefix="nomad-bulk-") as tmp:
        return client.download_entry_raw(entry_id, Path(tmp) / f"{entry_id}.zip").read_bytes()


def download_entry_by_id(
    entry_id: str,
    url: str | None = None,
    timeout_in_sec: int = 10,
    with_authentication: bool = False,
    zip_file_name: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The entry's archive (NOMAD's processed data) as a dict.

    With ``zip_file_name``, the entry's raw files are also saved there as a zip
    (streamed to disk), which is how the tutorial rebuilds its ``DFT-N`` folders.
    """
    client, _ = _client(url)
    with tempfile.TemporaryDirectory(prefix="nomad-bulk-") as tmp:
        path = client.download_entry_archive(entry_id, Path(tmp) / f"{entry_id}.json")
        archive: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if zip_file_name is not None:
        client.download_entry_raw(entry_id, Path(zip_file_name))
    return archive


# -- datasets -----------------------------------------------------------------------------


def create_dataset(dataset_name: str, url: str | None = None, timeout_in_sec: int = 10) -> str:
    """Create a dataset owned by the user and return its dataset_id.

    Names are unique per user: an existing name raises BadRequestError with NOMAD's message.
    """
    client, _ = _client(url)
    return client.create_dataset(dataset_name).dataset_id


def delete_dataset(dataset_id: str, url: str | None = None, timeout_in_sec: int = 10) -> None:
    """Delete one of the user's datasets; NotFoundError if there is none with that id."""
    client, _ = _client(url)
    client.delete_dataset(dataset_id)


def get_dataset_by_id(dataset_id: str, url: str | None = None) -> NomadDataset:
    """One dataset by id; NotFoundError if it does not exist."""
    client, api = _client(url)
    return _dataset(client, api, client.get_dataset(dataset_id))


def retrieve_datasets(
    dataset_params: Mapping[str, Any] | None = None, url: str | None = None
) -> list[NomadDataset]:
    """Datasets matching ``dataset_params``.

    Keys: ``dataset_id``, ``dataset_name`` (exact), ``user_id``, ``prefix`` (of the
    name); ``max_datasets`` (50; negative = all). ``page_size`` is accepted.
    Unknown keys raise ConfigError.
    """
    params = {k: v for k, v in dict(dataset_params or {}).items() if v is not None}
    max_datasets = int(params.pop("max_datasets", 50))
    params.pop("page_size", None)
    unknown = set(params) - {"dataset_id", "dataset_name", "user_id", "prefix"}
    if unknown:
        raise ConfigError(
            f"unknown dataset key(s) {sorted(unknown)}; accepted keys: dataset_id, "
            "dataset_name, user_id, prefix, page_size, max_datasets"
        )
    client, api = _client(url)
    found: list[Dataset]
    if "dataset_id" in params:
        try:
            found = [client.get_dataset(str(params.pop("dataset_id")))]
        except NotFoundError:
            found = []
        found = [
            d
            for d in found
            if params.get("dataset_name") in (None, d.dataset_name)
            and params.get("user_id") in (None, d.user_id)
        ]
    else:
        found = client.list_datasets(
            dataset_name=params.get("dataset_name"),
            user_id=params.get("user_id"),
            prefix=params.get("prefix"),
            limit=max_datasets if max_datasets >= 0 else None,
        )
    if max_datasets >= 0:
        found = found[:max_datasets]
    return [_dataset(client, api, d) for d in found]


# -- users --------------------------------------------------------------------------------


def who_am_i(url: str | None = None, timeout_in_sec: int = 10) -> NomadUser:
    """The account the credentials belong to (AuthError if they are refused)."""
    client, _ = _client(url)
    return NomadUser._from(client.me())


def get_user_by_id(user_id: str, url: str | None = None, timeout_in_sec: int = 10) -> NomadUser:
    """Public information about a user; NotFoundError if there is none."""
    client, _ = _client(url)
    return NomadUser._from(client.get_user(user_id))


def search_users_by_name(
    user_name: str, url: str | None = None, timeout_in_sec: int = 10
) -> list[NomadUser]:
    """Users whose name starts with ``user_name`` (NOMAD's prefix search)."""
    client, _ = _client(url)
    return [NomadUser._from(u) for u in client.search_users(user_name)]
