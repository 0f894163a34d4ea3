"""Discovery: a root directory becomes a lazy, sorted stream of calculations.

Rules (what counts as a calculation):

- Every folder under the root (the root included) that directly holds files is
  one calculation; its files are the files directly in it. Subfolders are
  calculations of their own. This matches NOMAD, whose entries take as aux files
  only the files in the mainfile's own directory (VASP and FHI-aims runs keep a
  calculation in one folder; a relaxation with ``step_*/`` subfolders yields one
  calculation per step folder, as NOMAD would make one entry per mainfile anyway).
- A folder that holds ``.zip`` files and no recognised mainfile among its other
  files is the tutorial's ready-zip layout: each zip is uploaded as it is. With one
  zip the calculation's key is the folder's; with several, each zip is its own
  calculation keyed ``folder/name.zip``. The folder's other files are left out (they
  are typically the zip's own content, unpacked for a look) and listed in
  ``Calculation.ignored``. A folder with a recognised mainfile is a plain folder:
  its zips are ordinary files (NOMAD does not extract nested archives).
- Names starting with ``.`` or ``~`` are ignored, as NOMAD ignores them, and so is
  the tool's own state dir ``.nomad-bulk``.
- Links are resolved, and anything resolving outside the root is skipped and
  reported. Links to directories are never followed (their target, when inside
  the root, is discovered at its own path), so a link loop cannot hang discovery.
- ``pattern`` is a glob on the folder's key (its POSIX path relative to the root):
  ``*`` and ``?`` stay within one path component, ``**`` spans any number of them
  (also none). The root itself (key ``"."``) counts only without a pattern.

Order: depth first, siblings sorted by name; a folder's own calculations come
before its subfolders'. Memory: one directory listing per level of depth.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import posixpath
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from nomad_bulk.errors import PackingError
from nomad_bulk.packing.mainfiles import match_mainfile, read_head

__all__ = ["Calculation", "Problem", "ProblemHandler", "discover", "predict_mainfiles"]

_log = logging.getLogger("nomad_bulk.packing")

_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    OSError,
    EOFError,
    RuntimeError,  # encrypted members
    NotImplementedError,  # compression methods zipfile cannot read
    ValueError,
    zlib.error,
)


@dataclass(frozen=True, slots=True)
class Calculation:
    """One calculation: a folder's files, or one ready zip."""

    key: str
    """POSIX path of the folder relative to the root (``"."`` for the root itself);
    ``folder/name.zip`` when a folder holds several ready zips."""
    path: Path
    """Absolute folder path."""
    files: tuple[str, ...]
    """POSIX paths relative to ``path`` (for a ready zip: the zip's file members), sorted."""
    size: int
    """Bytes: the sum of the files, or the ready zip's size."""
    ready_zip: Path | None
    """The ready zip uploaded as this calculation (the tutorial's layout), if any."""
    mainfiles: tuple[str, ...]
    """Predicted mainfiles, relative to the folder (or to the zip's root), sorted."""
    parsers: tuple[str, ...] = ()
    """The parser predicted for each of ``mainfiles``, in the same order."""
    problems: tuple[str, ...] = ()
    """Why the calculation is incomplete or unusable; empty when it is fine."""
    ignored: tuple[str, ...] = ()
    """Entries deliberately left out (files next to a ready zip, links to folders)."""
    content_size: int | None = None
    """Uncompressed bytes of the content when it differs from ``size`` (ready zips)."""
    root: Path | None = None
    """The discovery root; packing refuses files that resolve outside it."""

    @property
    def expected_entries(self) -> int:
        """Entries NOMAD is predicted to create for this calculation."""
        return len(self.mainfiles)

    @property
    def unpacked_size(self) -> int:
        """Bytes of the content once extracted."""
        return self.size if self.content_size is None else self.content_size


@dataclass(frozen=True, slots=True)
class Problem:
    """Something under the root that cannot be uploaded as it is."""

    key: str
    """The key of the folder (or ready zip) the problem belongs to."""
    path: Path
    """The offending file, link or folder."""
    message: str
    """What happened and what to do, naming the path."""

    def __str__(self) -> str:
        return self.message


ProblemHandler = Callable[[Problem], None]


class _Pattern:
    """A glob over POSIX paths where ``**`` spans any number of components."""

    def __init__(self, pattern: str) -> None:
        parts = [part for part in pattern.strip("/").split("/") if part not in ("", ".")]
        if not parts:
            raise PackingError(f"The pattern {pattern!r} selects no folder; give e.g. 'DFT-*'.")
        self.parts = tuple(parts)
        self.unbounded = "**" in self.parts

    def matches(self, key: str) -> bool:
        return key != "." and _glob_match(self.parts, tuple(key.split("/")))

    def may_match_below(self, key: str) -> bool:
        """Whether some folder below ``key`` could match (prunes the walk)."""
        if self.unbounded or key == ".":
            return True
        parts = key.split("/")
        if len(parts) >= len(self.parts):
            return False
        return all(fnmatch.fnmatchcase(p, g) for p, g in zip(parts, self.parts, strict=False))


def _glob_match(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_glob_match(rest, parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], head) and _glob_match(rest, parts[1:])


def _hidden(name: str) -> bool:
    return name.startswith((".", "~"))


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _join(key: str, name: str) -> str:
    return name if key == "." else f"{key}/{name}"


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass(slots=True)
class _Listing:
    """One folder's direct content after links and special files were sorted out."""

    files: list[tuple[str, int]] = field(default_factory=list)
    subdirs: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    unlistable: bool = False


class _Walker:
    def __init__(self, root: Path, pattern: _Pattern | None, on_problem: ProblemHandler | None):
        self.root = root
        self.root_real = os.path.realpath(root)
        self.pattern = pattern
        self.on_problem = on_problem

    def report(self, problem: Problem) -> None:
        if self.on_problem is None:
            _log.warning("%s", problem.message)
        else:
            self.on_problem(problem)

    def walk(self) -> Iterator[Calculation]:
        stack: list[Iterator[str]] = [iter(["."])]
        while stack:
            key = next(stack[-1], None)
            if key is None:
                stack.pop()
                continue
            selected = self.pattern is None or self.pattern.matches(key)
            descend = self.pattern is None or self.pattern.may_match_below(key)
            if not selected and not descend:
                continue
            path = self.root if key == "." else self.root.joinpath(*key.split("/"))
            listing = self._list(key, path)
            if selected:
                yield from self._calculations(key, path, listing)
            elif listing.unlistable:
                # Folders below it might have matched the pattern.
                for problem in listing.problems:
                    self.report(problem)
            if descend and listing.subdirs:
                stack.append(iter([_join(key, name) for name in listing.subdirs]))

    def _list(self, key: str, path: Path) -> _Listing:
        listing = _Listing()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda entry: entry.name)
        except OSError as exc:
            if key == ".":
                raise PackingError(
                    f"Cannot read the root folder {path}: {_describe(exc)}. Check its permissions."
                ) from exc
            listing.problems.append(
                Problem(
                    key,
                    path,
                    f"{path}: cannot list the folder ({_describe(exc)}); it was skipped. "
                    "Fix its permissions and run again.",
                )
            )
            listing.unlistable = True
            return listing
        for entry in entries:
            name = entry.name
            if _hidden(name):
                continue
            item = Path(entry.path)
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                listing.problems.append(
                    Problem(
                        key,
                        item,
                        f"{item!s}: the name is not valid UTF-8 and cannot be stored in a "
                        "zip; it was skipped. Rename it.",
                    )
                )
                continue
            try:
                self._classify(key, entry, item, listing)
            except OSError as exc:
                listing.problems.append(
                    Problem(
                        key,
                        item,
                        f"{item}: cannot inspect it ({_describe(exc)}); it was skipped. "
                        "Fix its permissions and run again.",
                    )
                )
        return listing

    def _classify(self, key: str, entry: os.DirEntry[str], item: Path, listing: _Listing) -> None:
        name = entry.name
        if not entry.is_symlink():
            # d_type answers these without a stat call; only files need their size.
            if entry.is_dir(follow_symlinks=False):
                listing.subdirs.append(name)
            elif entry.is_file(follow_symlinks=False):
                listing.files.append((name, entry.stat(follow_symlinks=False).st_size))
            else:
                listing.problems.append(_special(key, item))
            return
        try:
            st = os.stat(item)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                message = f"{item}: symbolic link loop; it was skipped. Remove or fix the link."
            elif exc.errno == errno.ENOENT:
                message = (
                    f"{item}: broken symbolic link (its target does not exist); it was "
                    "skipped. Remove or fix the link."
                )
            else:
                message = (
                    f"{item}: cannot follow the symbolic link ({_describe(exc)}); it was skipped."
                )
            listing.problems.append(Problem(key, item, message))
            return
        real = os.path.realpath(item)
        if not _inside(real, self.root_real):
            listing.problems.append(
                Problem(
                    key,
                    item,
                    f"{item}: symbolic link to {real}, outside the root {self.root}; "
                    "links out of the root are never followed, so it was skipped. Copy the "
                    "target into the folder if it belongs to the calculation.",
                )
            )
        elif stat.S_ISDIR(st.st_mode):
            # Its target is inside the root and discovered at its own path.
            listing.ignored.append(name + "/")
        elif stat.S_ISREG(st.st_mode):
            listing.files.append((name, st.st_size))
        else:
            listing.problems.append(_special(key, item))

    def _calculations(self, key: str, path: Path, listing: _Listing) -> Iterator[Calculation]:
        zips = [(n, s) for n, s in listing.files if n.lower().endswith(".zip")]
        others = [(n, s) for n, s in listing.files if not n.lower().endswith(".zip")]
        other_problems: list[Problem] = []
        prefix = "" if key == "." else key + "/"
        names = [n for n, _ in listing.files]
        predicted: dict[str, str] = {}
        for name, _ in others:
            try:
                parser = _predict_file(path / name, prefix + name, names)
            except OSError as exc:
                other_problems.append(
                    Problem(
                        key,
                        path / name,
                        f"{path / name}: cannot read the file ({_describe(exc)}); it was "
                        "skipped. Fix its permissions and run again.",
                    )
                )
                continue
            if parser is not None:
                predicted[name] = parser
        if zips and not predicted:
            # Loose files next to ready zips are not uploaded, so their problems are
            # reported but do not make the zips incomplete.
            loose_problems = listing.problems + other_problems
            for problem in loose_problems:
                self.report(problem)
            left_out = [n for n, _ in others] + [p.path.name for p in loose_problems]
            ignored = tuple(sorted(set(left_out))) + tuple(listing.ignored)
            for name, size in zips:
                zip_key = key if len(zips) == 1 else _join(key, name)
                yield self._ready_zip(zip_key, path, path / name, size, ignored)
            return
        problems = listing.problems + other_problems
        for problem in problems:
            self.report(problem)
        unreadable = {p.path.name for p in other_problems}
        files = [(n, s) for n, s in listing.files if n not in unreadable]
        if not files and not problems:
            return
        mainfiles = sorted(predicted)
        yield Calculation(
            key=key,
            path=path,
            files=tuple(n for n, _ in files),
            size=sum(s for _, s in files),
            ready_zip=None,
            mainfiles=tuple(mainfiles),
            parsers=tuple(predicted[m] for m in mainfiles),
            problems=tuple(p.message for p in problems),
            ignored=tuple(listing.ignored),
            root=self.root,
        )

    def _ready_zip(
        self, key: str, folder: Path, zip_path: Path, size: int, ignored: tuple[str, ...]
    ) -> Calculation:
        try:
            content = _inspect_zip(zip_path)
        except _ZIP_ERRORS as exc:
            detail = _describe(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
            problem = Problem(
                key,
                zip_path,
                f"{zip_path}: not a readable zip archive ({detail}). NOMAD would fail the "
                "whole upload; replace it with a valid zip or remove it.",
            )
            self.report(problem)
            return Calculation(
                key=key,
                path=folder,
                files=(),
                size=size,
                ready_zip=zip_path,
                mainfiles=(),
                problems=(problem.message,),
                ignored=ignored,
                root=self.root,
            )
        for message in content.problems:
            self.report(Problem(key, zip_path, message))
        return Calculation(
            key=key,
            path=folder,
            files=content.files,
            size=size,
            ready_zip=zip_path,
            mainfiles=tuple(content.mainfiles),
            parsers=tuple(content.mainfiles.values()),
            problems=content.problems,
            ignored=ignored + content.ignored,
            content_size=content.content_size,
            root=self.root,
        )


def _special(key: str, item: Path) -> Problem:
    return Problem(
        key,
        item,
        f"{item}: not a regular file (a FIFO, socket or device); it was skipped. "
        "Remove it from the folder or copy its data into a regular file.",
    )


def open_regular(path: Path) -> IO[bytes]:
    """Open a regular file for reading; ``OSError`` for anything else.

    ``O_NONBLOCK``: a FIFO swapped in since the listing must not block the caller.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _predict_file(path: Path, name: str, siblings: Sequence[str]) -> str | None:
    """Match one file on disk; ``OSError`` if it cannot be read."""
    with open_regular(path) as stream:
        head, compression = read_head(stream)
    return match_mainfile(name, head, compression=compression, siblings=siblings)


@dataclass(frozen=True, slots=True)
class _ZipContent:
    files: tuple[str, ...]
    mainfiles: dict[str, str]
    content_size: int
    problems: tuple[str, ...]
    ignored: tuple[str, ...]


def _safe_member(name: str) -> bool:
    if not name or name.startswith("/") or "\\" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def _is_link_member(info: zipfile.ZipInfo) -> bool:
    return info.create_system == 3 and stat.S_ISLNK(info.external_attr >> 16)


def zip_members(zf: zipfile.ZipFile) -> tuple[dict[str, zipfile.ZipInfo], list[str], list[str]]:
    """The file members NOMAD would extract, by name; plus problems and ignored names."""
    members: dict[str, zipfile.ZipInfo] = {}
    problems: list[str] = []
    ignored: list[str] = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        if _is_link_member(info):
            # NOMAD skips symbolic links stored in archives.
            ignored.append(info.filename)
        elif not _safe_member(info.filename):
            problems.append(
                f"{zf.filename}: member {info.filename!r} has an unsafe path (absolute or "
                "with '..'); it is left out. Rebuild the zip with relative paths."
            )
        else:
            members[info.filename] = info  # the last of duplicate names wins, as on extraction
    return members, problems, ignored


def _inspect_zip(
    zip_path: Path, *, prefix: str = "", wanted: set[str] | None = None
) -> _ZipContent:
    with zipfile.ZipFile(zip_path) as zf:
        members, problems, ignored = zip_members(zf)
        names = sorted(n for n in members if wanted is None or n in wanted)
        siblings: dict[str, list[str]] = {}
        for name in names:
            directory, base = posixpath.split(name)
            siblings.setdefault(directory, []).append(base)
        mainfiles: dict[str, str] = {}
        for name in names:
            if _hidden(posixpath.basename(name)):
                continue
            # Only the head is decompressed; the member is never read whole.
            with zf.open(members[name]) as stream:
                head, compression = read_head(stream)
            parser = match_mainfile(
                prefix + name,
                head,
                compression=compression,
                siblings=siblings[posixpath.dirname(name)],
            )
            if parser is not None:
                mainfiles[name] = parser
        return _ZipContent(
            files=tuple(names),
            mainfiles=mainfiles,
            content_size=sum(members[n].file_size for n in names),
            problems=tuple(problems),
            ignored=tuple(sorted(ignored)),
        )


def discover(
    root: Path | str,
    *,
    pattern: str | None = None,
    on_problem: ProblemHandler | None = None,
) -> Iterator[Calculation]:
    """Find the calculations under ``root``, lazily, in a stable order.

    Item-level problems (unreadable files, links leaving the root, link loops,
    broken zips) never stop discovery: each is passed to ``on_problem`` (logged as
    a warning when no handler is given) and recorded in ``Calculation.problems`` of
    the calculation it makes incomplete. A folder whose every item failed still
    yields a calculation (with no files) so that the failure can be reported.

    Raises:
        PackingError: the root does not exist, is not a folder, or cannot be read;
            or the pattern is empty. An empty root yields nothing.
    """
    root_path = Path(root).expanduser()
    try:
        resolved = root_path.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise PackingError(
            f"The root folder {root_path} does not exist; give the folder that holds "
            "the calculation folders."
        ) from exc
    if not resolved.is_dir():
        raise PackingError(
            f"The root {root_path} is not a folder; give the folder that holds the "
            "calculation folders."
        )
    if not os.access(resolved, os.R_OK | os.X_OK):
        raise PackingError(f"Cannot read the root folder {resolved}. Check its permissions.")
    walker = _Walker(resolved, _Pattern(pattern) if pattern is not None else None, on_problem)
    return walker.walk()


def predict_mainfiles(
    source: Path | str, files: Iterable[str] | None = None, *, prefix: str = ""
) -> dict[str, str]:
    """Predict NOMAD's mainfiles in a folder or a zip: path → parser name, sorted by path.

    ``source`` is a folder (then ``files`` are paths relative to it, by default the
    regular, non-hidden files directly in it) or a zip (then ``files`` are member
    names, by default all file members). ``prefix`` is the folder the files will
    have inside the upload (e.g. ``"calc-1/"``); NOMAD matches some names on the
    whole path. Only the first 12,000 bytes of each file are read.

    Raises:
        PackingError: the source or one of the files cannot be read, or the zip is broken.
    """
    source_path = Path(source)
    if not source_path.exists():
        raise PackingError(f"{source_path} does not exist; give a folder or a zip.")
    if source_path.is_dir():
        if files is None:
            with os.scandir(source_path) as it:
                names = sorted(
                    e.name for e in it if not _hidden(e.name) and e.is_file(follow_symlinks=False)
                )
        else:
            names = sorted(files)
        by_dir: dict[str, list[str]] = {}
        for name in names:
            directory, base = posixpath.split(name)
            by_dir.setdefault(directory, []).append(base)
        result: dict[str, str] = {}
        for name in names:
            try:
                parser = _predict_file(
                    source_path.joinpath(*name.split("/")),
                    prefix + name,
                    by_dir[posixpath.dirname(name)],
                )
            except OSError as exc:
                raise PackingError(
                    f"{source_path / name}: cannot read the file ({_describe(exc)}). "
                    "Fix its permissions and run again."
                ) from exc
            if parser is not None:
                result[name] = parser
        return result
    try:
        content = _inspect_zip(
            source_path, prefix=prefix, wanted=set(files) if files is not None else None
        )
    except _ZIP_ERRORS as exc:
        raise PackingError(
            f"{source_path}: not a readable zip archive ({exc}). Replace it with a valid zip."
        ) from exc
    return content.mainfiles
