"""The run journal: one SQLite file (stdlib sqlite3, WAL) per run.

It records the run's identity (root, deployment, grouping options), every
planned upload (a *group* of calculations) with its durable stage, and every
calculation with its entry ids and messages. The engine writes an *intent*
before each POST and awaits every transition, so re-running the same command
resumes: finished work is skipped and half-done work is reconciled with NOMAD
by the deterministic ``upload_name``. The file and its directory are private to
the owner (0600/0700). No secret is ever written here.

:class:`Journal` is synchronous and not thread-safe; :class:`AsyncJournal`
serialises it for the event loop (one connection, one worker thread at a time).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: runs are not locked against each other
    fcntl = None  # type: ignore[assignment]

from .config import sanitize_url
from .errors import JournalError

__all__ = [
    "DEFAULT_JOURNAL_DIR",
    "DEFAULT_JOURNAL_NAME",
    "AsyncJournal",
    "GroupRecord",
    "ItemRecord",
    "Journal",
    "RunIdentity",
    "default_journal_path",
    "private_dirs",
]

#: The journal's directory inside the root (NOMAD ignores names starting with a dot).
DEFAULT_JOURNAL_DIR = ".nomad-bulk"
DEFAULT_JOURNAL_NAME = "journal.sqlite"
SCHEMA_VERSION = "1"

#: Durable stages of a group, in order.
STAGES = ("planned", "posting", "uploaded", "verified", "described", "publishing", "published")

_P = ParamSpec("_P")
_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS groups (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    group_key TEXT NOT NULL UNIQUE,
    upload_name TEXT NOT NULL,
    label TEXT NOT NULL,
    size INTEGER NOT NULL,
    expected_entries INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    stage TEXT NOT NULL DEFAULT 'planned',
    failed INTEGER NOT NULL DEFAULT 0,
    failed_stage TEXT,
    message TEXT,
    discard INTEGER NOT NULL DEFAULT 0,
    upload_id TEXT,
    deleted INTEGER NOT NULL DEFAULT 0,
    file_name TEXT,
    sha256 TEXT,
    packed_size INTEGER,
    meta_digest TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY,
    group_seq INTEGER REFERENCES groups(seq),
    ord INTEGER NOT NULL,
    size INTEGER NOT NULL,
    calc TEXT NOT NULL,
    skip TEXT,
    failed INTEGER NOT NULL DEFAULT 0,
    upload_mainfiles TEXT,
    entry_ids TEXT,
    message TEXT
);
CREATE TABLE IF NOT EXISTS isolated (
    key TEXT PRIMARY KEY
);
CREATE INDEX IF NOT EXISTS items_group ON items(group_seq, ord);
CREATE INDEX IF NOT EXISTS groups_stage ON groups(stage, failed);
"""


def default_journal_path(root: Path) -> Path:
    """The journal a run over ``root`` uses unless told otherwise."""
    return Path(root).resolve() / DEFAULT_JOURNAL_DIR / DEFAULT_JOURNAL_NAME


@dataclass(frozen=True, slots=True)
class RunIdentity:
    """What a journal belongs to: a root on this machine and a NOMAD deployment.

    The grouping options are recorded as well; they only shape uploads that
    have not started yet, so changing them between runs is allowed.
    """

    root: str
    url: str
    per_upload: bool
    max_upload_size: int
    max_per_upload: int | None
    pattern: str | None

    @property
    def grouping(self) -> dict[str, Any]:
        """The grouping options as a JSON-able mapping."""
        return {
            "per_upload": self.per_upload,
            "max_upload_size": self.max_upload_size,
            "max_per_upload": self.max_per_upload,
            "pattern": self.pattern,
        }


@dataclass(frozen=True, slots=True)
class GroupRecord:
    """One planned upload as the journal knows it."""

    seq: int
    key: str
    upload_name: str
    label: str
    size: int
    expected_entries: int
    n_items: int
    stage: str
    failed: bool
    failed_stage: str | None
    message: str | None
    discard: bool
    upload_id: str | None
    deleted: bool
    file_name: str | None
    sha256: str | None
    packed_size: int | None
    meta_digest: str | None
    attempts: int

    @property
    def has_upload(self) -> bool:
        """True when an upload of this group may exist on the server."""
        return self.stage != "planned" and not self.deleted


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One calculation as the journal knows it."""

    key: str
    group_seq: int | None
    size: int
    calc: Mapping[str, Any]
    skip: str | None
    failed: bool
    upload_mainfiles: tuple[str, ...]
    entry_ids: tuple[str, ...]
    message: str | None


_GROUP_COLUMNS = (
    "seq, group_key, upload_name, label, size, expected_entries, n_items, stage, failed, "
    "failed_stage, message, discard, upload_id, deleted, file_name, sha256, packed_size, "
    "meta_digest, attempts"
)


def _group(row: Sequence[Any]) -> GroupRecord:
    return GroupRecord(
        seq=row[0],
        key=row[1],
        upload_name=row[2],
        label=row[3],
        size=row[4],
        expected_entries=row[5],
        n_items=row[6],
        stage=row[7],
        failed=bool(row[8]),
        failed_stage=row[9],
        message=row[10],
        discard=bool(row[11]),
        upload_id=row[12],
        deleted=bool(row[13]),
        file_name=row[14],
        sha256=row[15],
        packed_size=row[16],
        meta_digest=row[17],
        attempts=row[18],
    )


def _strings(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    value = json.loads(text)
    return tuple(str(v) for v in value)


def _item(row: Sequence[Any]) -> ItemRecord:
    return ItemRecord(
        key=row[0],
        group_seq=row[1],
        size=row[2],
        calc=json.loads(row[3]),
        skip=row[4],
        failed=bool(row[5]),
        upload_mainfiles=_strings(row[6]),
        entry_ids=_strings(row[7]),
        message=row[8],
    )


_ITEM_COLUMNS = "key, group_seq, size, calc, skip, failed, upload_mainfiles, entry_ids, message"


def _storage_problem(exc: sqlite3.Error) -> bool:
    """True if SQLite could not read or write its files (disk full, quota, I/O)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")  # Python >= 3.11
    text = str(exc).lower()
    return (
        name == "SQLITE_FULL"
        or name.startswith("SQLITE_IOERR")
        or "disk i/o error" in text
        or "disk is full" in text
    )


def _journal_failure(path: Path | None, exc: sqlite3.Error) -> JournalError:
    """The :class:`JournalError` for a failed journal read or write, saying what to do."""
    where = path if path is not None else "in memory"
    if _storage_problem(exc):
        return JournalError(
            f"cannot write the journal {where} ({exc}): the disk is full, a quota or file "
            "size limit was reached, or the file system failed. Free space and run the same "
            "command again; what the journal recorded so far is kept, so the run resumes"
        )
    return JournalError(f"the journal {where} failed ({exc}); run the same command again")


def private_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents as owner-only (0700) folders.

    Folders that exist already are left as they are; ``mkdir(parents=True)``
    would give the parents it makes the umask's default (often world-readable).
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            folder.chmod(0o700)


def _private_dir(path: Path) -> None:
    private_dirs(path)


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    with contextlib.suppress(OSError):
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)


class Journal:
    """Synchronous access to one journal file (see the module docstring)."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        #: The file, or ``None`` for an in-memory journal (a dry run without a journal).
        self.path = path
        self._ord = 0
        self._lock: int | None = None

    def _acquire_lock(self) -> None:
        # Two runs over one journal would both POST the same groups: one at a time.
        if self.path is None or fcntl is None:
            return
        lock_path = Path(str(self.path) + ".lock")
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise JournalError(
                f"another nomad-bulk run is using the journal {self.path}; wait for it to "
                "finish (or stop it) and run again"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd

    # -- opening --------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | None,
        *,
        identity: RunIdentity | None = None,
        create: bool = True,
        lock: bool = False,
    ) -> Journal:
        """Open (or create) a journal; with ``identity``, check or record it.

        ``path=None`` opens a journal in memory. With ``lock``, the journal is
        held exclusively until :meth:`close` (a run does this; readers do not).
        Raises :class:`JournalError` if the file is not a journal, belongs to
        another root or deployment, or is locked by another run.
        """
        if path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        else:
            path = Path(path)
            if not path.exists():
                if not create:
                    raise JournalError(f"no journal at {path}; run `nomad-bulk upload` first")
                _private_dir(path.parent)
                _private_file(path)
            try:
                conn = sqlite3.connect(
                    str(path), check_same_thread=False, isolation_level=None, timeout=30.0
                )
            except sqlite3.Error as exc:
                raise JournalError(f"cannot open the journal {path}: {exc}") from exc
        journal = cls(conn, path)
        try:
            if lock:
                journal._acquire_lock()
            journal._setup()
            if identity is not None:
                journal._check_identity(identity)
        except sqlite3.DatabaseError as exc:
            journal.close()
            if _storage_problem(exc):
                raise _journal_failure(path, exc) from exc
            raise JournalError(
                f"{path} is not a usable nomad-bulk journal ({exc}); "
                "pass another --journal path or move the file away"
            ) from exc
        except JournalError:
            journal.close()
            raise
        return journal

    def _setup(self) -> None:
        conn = self._conn
        if self.path is not None:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL survives a killed process (the WAL is in the page cache);
            # only a power loss could drop the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(_SCHEMA)
        version = self.get_meta("schema")
        if version is None:
            self.set_meta("schema", SCHEMA_VERSION)
        elif version != SCHEMA_VERSION:
            raise JournalError(
                f"the journal {self.path} has schema {version}; this nomad-bulk writes "
                f"schema {SCHEMA_VERSION}. Use another --journal path."
            )
        if self.path is not None:
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                with contextlib.suppress(OSError):
                    if side.exists() and stat.S_IMODE(side.stat().st_mode) & 0o077:
                        side.chmod(0o600)
        row = conn.execute("SELECT COALESCE(MAX(ord), 0) FROM items").fetchone()
        self._ord = int(row[0])

    def _check_identity(self, identity: RunIdentity) -> None:
        root = self.get_meta("root")
        if root is None:
            with self.transaction():
                self.set_meta("run_id", uuid.uuid4().hex)
                self.set_meta("root", identity.root)
                self.set_meta("url", identity.url)
                self.set_meta("grouping", json.dumps(identity.grouping, sort_keys=True))
                self.set_meta("created", repr(time.time()))
            return
        if root != identity.root:
            raise JournalError(
                f"the journal {self.path} belongs to the root {root}, not {identity.root}; "
                "run from the same root, or pass --journal with a new path for a new run"
            )
        url = self.get_meta("url")
        if url != identity.url and not self._reached_a_server():
            # Nothing was ever sent (a mistyped URL failed at pre-flight, say): the
            # journal holds no upload of that deployment, so it may serve this one.
            self.set_meta("url", identity.url)
            return
        if url != identity.url:
            raise JournalError(
                f"the journal {self.path} belongs to the deployment {sanitize_url(url or '')}, "
                f"not {sanitize_url(identity.url)}; pass --journal with a new path to upload "
                "the same folders to another deployment"
            )

    def _reached_a_server(self) -> bool:
        """True if any upload of this journal may exist on its deployment."""
        row = self._conn.execute(
            "SELECT 1 FROM groups WHERE stage != 'planned' OR upload_id IS NOT NULL LIMIT 1"
        ).fetchone()
        return row is not None or self.get_meta("dataset_id") is not None

    def grouping_changed(self, identity: RunIdentity) -> bool:
        """True if ``identity``'s grouping options differ from the recorded ones."""
        recorded = self.get_meta("grouping")
        return recorded is not None and json.loads(recorded) != identity.grouping

    def record_grouping(self, identity: RunIdentity) -> None:
        """Record ``identity``'s grouping options as the current ones."""
        self.set_meta("grouping", json.dumps(identity.grouping, sort_keys=True))

    @property
    def run_id(self) -> str:
        """The random id of this run, fixed when the journal was created."""
        value = self.get_meta("run_id")
        if value is None:
            value = uuid.uuid4().hex
            self.set_meta("run_id", value)
        return value

    def close(self) -> None:
        """Close the connection (pending changes are rolled back) and release the lock."""
        with contextlib.suppress(sqlite3.Error):
            if self._conn.in_transaction:
                self._conn.rollback()
        self._conn.close()
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    # -- low level ------------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block in one transaction (nested blocks join the outer one)."""
        if self._conn.in_transaction:
            yield
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.rollback()
            raise
        self._conn.execute("COMMIT")

    def begin(self) -> None:
        """Start a transaction that :meth:`commit` or :meth:`rollback` ends."""
        if not self._conn.in_transaction:
            self._conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit the open transaction, if any."""
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")

    def rollback(self) -> None:
        """Roll the open transaction back, if any."""
        if self._conn.in_transaction:
            self._conn.rollback()

    def get_meta(self, key: str) -> str | None:
        """One value of the run's metadata."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set one value of the run's metadata."""
        self._conn.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def _update(self, seq: int, **values: Any) -> None:
        values["updated"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in values)
        self._conn.execute(f"UPDATE groups SET {columns} WHERE seq = ?", (*values.values(), seq))  # noqa: S608

    # -- planning -------------------------------------------------------------------------

    def discard_unstarted(self) -> None:
        """Forget groups that never reached the server, and skipped items: they are re-planned."""
        with self.transaction():
            self._conn.execute(
                "DELETE FROM items WHERE group_seq IS NULL OR group_seq IN "
                "(SELECT seq FROM groups WHERE stage = 'planned')"
            )
            self._conn.execute("DELETE FROM groups WHERE stage = 'planned'")

    def started_group_of(self, key: str) -> int | None:
        """The group a calculation already belongs to, if it was planned before."""
        row = self._conn.execute("SELECT group_seq FROM items WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def add_skipped(
        self, key: str, size: int, calc: Mapping[str, Any], reason: str, *, failed: bool = False
    ) -> None:
        """Record a calculation that this run does not upload, and why.

        ``failed`` marks a problem the user must fix (unreadable, too large), as
        opposed to a folder that simply holds no calculation.
        """
        self._ord += 1
        self._conn.execute(
            "INSERT INTO items(key, group_seq, ord, size, calc, skip, failed) "
            "VALUES (?, NULL, ?, ?, ?, ?, ?)",
            (key, self._ord, size, json.dumps(calc), reason, int(failed)),
        )

    def isolated_keys(self) -> frozenset[str]:
        """Calculations to be uploaded on their own (their entries failed in a shared upload)."""
        return frozenset(row[0] for row in self._conn.execute("SELECT key FROM isolated"))

    def isolate(self, keys: Sequence[str]) -> None:
        """Upload these calculations on their own from now on."""
        self._conn.executemany(
            "INSERT OR IGNORE INTO isolated(key) VALUES (?)", [(key,) for key in keys]
        )

    def add_group(
        self,
        *,
        key: str,
        upload_name: str,
        label: str,
        size: int,
        expected_entries: int,
        items: Sequence[tuple[str, int, Mapping[str, Any]]],
    ) -> int:
        """Record a planned upload and its calculations ``(key, size, calc)``; return its seq."""
        cursor = self._conn.execute(
            "INSERT INTO groups(group_key, upload_name, label, size, expected_entries, n_items, "
            "updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, upload_name, label, size, expected_entries, len(items), time.time()),
        )
        seq = int(cursor.lastrowid or 0)
        rows = []
        for item_key, item_size, calc in items:
            self._ord += 1
            rows.append((item_key, seq, self._ord, item_size, json.dumps(calc)))
        self._conn.executemany(
            "INSERT INTO items(key, group_seq, ord, size, calc) VALUES (?, ?, ?, ?, ?)", rows
        )
        return seq

    # -- execution ------------------------------------------------------------------------

    def group(self, seq: int) -> GroupRecord:
        """One group by its seq."""
        row = self._conn.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE seq = ?",  # noqa: S608
            (seq,),
        ).fetchone()
        if row is None:
            raise JournalError(f"the journal has no group {seq}")
        return _group(row)

    def groups_after(self, seq: int, limit: int) -> list[GroupRecord]:
        """Groups with a seq above ``seq``, in order, at most ``limit`` of them."""
        rows = self._conn.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
            (seq, limit),
        ).fetchall()
        return [_group(row) for row in rows]

    def iter_groups(self, *, page: int = 500) -> Iterator[GroupRecord]:
        """Every group in plan order, read page by page."""
        last = 0
        while True:
            batch = self.groups_after(last, page)
            if not batch:
                return
            yield from batch
            last = batch[-1].seq

    def discarded_groups(self) -> list[GroupRecord]:
        """Groups whose upload failed on the server (to delete and plan again)."""
        rows = self._conn.execute(
            f"SELECT {_GROUP_COLUMNS} FROM groups WHERE failed = 1 AND discard = 1 "  # noqa: S608
            "ORDER BY seq"
        ).fetchall()
        return [_group(row) for row in rows]

    def group_items(self, seq: int) -> list[ItemRecord]:
        """The calculations of one group, in discovery order."""
        rows = self._conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE group_seq = ? ORDER BY ord",  # noqa: S608
            (seq,),
        ).fetchall()
        return [_item(row) for row in rows]

    def set_intent(
        self,
        seq: int,
        *,
        file_name: str,
        sha256: str,
        packed_size: int,
        mainfiles: Mapping[str, Sequence[str]],
    ) -> None:
        """Write-ahead: this group's zip is about to be POSTed under its upload_name."""
        with self.transaction():
            self._conn.execute(
                "UPDATE groups SET stage = 'posting', upload_id = NULL, deleted = 0, failed = 0, "
                "failed_stage = NULL, message = NULL, discard = 0, file_name = ?, sha256 = ?, "
                "packed_size = ?, attempts = attempts + 1, updated = ? WHERE seq = ?",
                (file_name, sha256, packed_size, time.time(), seq),
            )
            self._conn.executemany(
                "UPDATE items SET upload_mainfiles = ?, entry_ids = NULL, message = NULL "
                "WHERE key = ? AND group_seq = ?",
                [(json.dumps(list(files)), key, seq) for key, files in mainfiles.items()],
            )

    def set_uploaded(self, seq: int, upload_id: str) -> None:
        """The upload exists on the server under ``upload_id``."""
        self._update(seq, stage="uploaded", upload_id=upload_id, deleted=0)

    def set_verified(self, seq: int, entry_ids: Mapping[str, Sequence[str]]) -> None:
        """Processing succeeded; every calculation's entry ids are known."""
        with self.transaction():
            self._conn.executemany(
                "UPDATE items SET entry_ids = ?, message = NULL WHERE key = ? AND group_seq = ?",
                [(json.dumps(list(ids)), key, seq) for key, ids in entry_ids.items()],
            )
            self._update(seq, stage="verified", failed=0, failed_stage=None, message=None)

    def set_described(self, seq: int, meta_digest: str) -> None:
        """The upload's metadata matches ``meta_digest`` (edited, or nothing to edit)."""
        self._update(seq, stage="described", meta_digest=meta_digest)

    def set_meta_digest(self, seq: int, meta_digest: str) -> None:
        """Record the metadata applied to an upload without changing its stage."""
        self._update(seq, meta_digest=meta_digest)

    def set_publishing(self, seq: int) -> None:
        """A publish was requested."""
        self._update(seq, stage="publishing")

    def set_published(self, seq: int) -> None:
        """NOMAD reports the upload as published."""
        self._update(seq, stage="published", failed=0, failed_stage=None, message=None)

    def set_failed(
        self,
        seq: int,
        *,
        stage: str,
        message: str,
        discard: bool,
        item_messages: Mapping[str, str] | None = None,
    ) -> None:
        """Record a failure; ``discard`` marks the server's upload as unusable."""
        with self.transaction():
            self._update(seq, failed=1, failed_stage=stage, message=message, discard=int(discard))
            if item_messages:
                self._conn.executemany(
                    "UPDATE items SET message = ? WHERE key = ? AND group_seq = ?",
                    [(text, key, seq) for key, text in item_messages.items()],
                )

    def set_deleted(self, seq: int) -> None:
        """The group's upload no longer exists on the server."""
        self._update(seq, deleted=1)

    def reset(self, seq: int) -> None:
        """Forget the group's upload: the next attempt starts from packing."""
        with self.transaction():
            self._update(
                seq,
                stage="planned",
                upload_id=None,
                deleted=0,
                failed=0,
                failed_stage=None,
                message=None,
                discard=0,
            )
            self._conn.execute(
                "UPDATE items SET entry_ids = NULL, message = NULL WHERE group_seq = ?", (seq,)
            )

    def clear_failure(self, seq: int) -> None:
        """Make a failed group pending again; it resumes from its last durable stage."""
        self._update(seq, failed=0)

    # -- reporting ------------------------------------------------------------------------

    def iter_items(self) -> Iterator[tuple[ItemRecord, GroupRecord | None]]:
        """Every calculation with its group (``None`` when skipped), in discovery order."""
        cursor = self._conn.execute(
            f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY ord"  # noqa: S608
        )
        cache: dict[int, GroupRecord] = {}
        for row in cursor:
            item = _item(row)
            group = None
            if item.group_seq is not None:
                group = cache.get(item.group_seq)
                if group is None:
                    cache.clear()  # items arrive grouped; keep memory flat
                    group = cache[item.group_seq] = self.group(item.group_seq)
            yield item, group

    def stage_counts(self) -> dict[str, int]:
        """Number of groups per durable stage (``failed`` counted separately)."""
        counts: dict[str, int] = {}
        for stage, failed, count in self._conn.execute(
            "SELECT stage, failed, COUNT(*) FROM groups GROUP BY stage, failed"
        ):
            name = "failed" if failed else str(stage)
            counts[name] = counts.get(name, 0) + int(count)
        return counts

    def count_items(self) -> int:
        """Number of calculations known to the journal."""
        return int(self._conn.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def info(self) -> dict[str, str]:
        """The run's metadata (root, deployment, grouping, run id, dataset)."""
        return {str(k): str(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}


class AsyncJournal:
    """A :class:`Journal` used from the event loop: one call at a time, in a worker thread."""

    __slots__ = ("_limiter", "journal")

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self._limiter = anyio.CapacityLimiter(1)

    async def call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run ``fn(*args, **kwargs)`` on the journal's connection in a worker thread."""

        def run() -> _T:
            try:
                return fn(*args, **kwargs)
            except sqlite3.Error as exc:
                # Item-level code never sees sqlite: a failing journal stops the run.
                raise _journal_failure(self.journal.path, exc) from exc

        async with self._limiter:
            return await anyio.to_thread.run_sync(run)

    async def durable(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Like :meth:`call`, shielded: the write completes even if the run is cancelled."""
        with anyio.CancelScope(shield=True):
            result = await self.call(fn, *args, **kwargs)
        return result
