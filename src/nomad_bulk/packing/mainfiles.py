"""Mainfile matching as NOMAD does it, for a few codes, in one table.

NOMAD decides which raw files become entries ("mainfiles") by running every
parser's matcher over each file: a regex on the file's path, a MIME type and a
regex on the first 12,000 bytes (``nomad/parsing/parsers.py::match_parser`` and
``nomad/parsing/parser.py::MatchingParser.is_mainfile`` in nomad-lab 2.0). The
regexes below are copied verbatim from the parser entry points of
``nomad-parser-plugins-electronic`` 1.1.0 (``electronicparsers/__init__.py``)
and from ``nomad/parsing/parser.py::ArchiveParser``.

This module imports nothing from nomad-bulk, so that the local server can share
it without depending on the packing layer.

Known approximations (NOMAD asks libmagic for the MIME type; we do not depend on it):
text means "decodes as UTF-8 (or Latin-1) and holds no control bytes that never
appear in text", which is libmagic's own test for text files. Only the codes in
:data:`MAINFILE_MATCHERS` are recognised; files of other codes are not predicted.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import posixpath
import re
import zlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol, cast

__all__ = [
    "MAINFILE_MATCHERS",
    "MATCHING_SIZE",
    "MainfileMatcher",
    "match_mainfile",
    "read_head",
]

#: Bytes NOMAD reads from the top of each file to match it (``parser_matching_size``).
MATCHING_SIZE = 150 * 80

# NOMAD sniffs these magic numbers and matches on the decompressed start of the file
# (``nomad/parsing/parsers.py::_compressions``).
_COMPRESSIONS: dict[bytes, str] = {
    b"\x1f\x8b\x08": "gz",
    b"\x42\x5a\x68": "bz2",
    b"\xfd\x37\x7a": "xz",
}

# libmagic's "never appears in text" bytes (file/src/encoding.c, text_chars table).
_NOT_TEXT = frozenset([*range(0x00, 0x07), *range(0x0E, 0x1B), *range(0x1C, 0x20), 0x7F])


class SupportsRead(Protocol):
    """A binary stream (a file, a zip member)."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True, slots=True)
class MainfileMatcher:
    """One parser's matching rule, as NOMAD's ``MatchingParser`` applies it."""

    parser: str
    """NOMAD's parser name, e.g. ``parsers/fhi-aims``."""
    entry_point: str
    """The entry point id NOMAD 2.0 reports as ``parser_name``."""
    contents_re: re.Pattern[str] | None
    """Searched in the decoded first :data:`MATCHING_SIZE` bytes; ``None``: no condition."""
    name_re: re.Pattern[str]
    """Full-matched against the file's path inside the upload."""
    text_only: bool
    """The parser's MIME regex accepts only ``text/*`` (NOMAD's built-in default;
    plugin entry points default to any type)."""
    alternative: bool
    """A file failing ``name_re`` may still match when no sibling claims the name."""
    compressions: frozenset[str] = frozenset()
    """Compressions (``gz``, ``bz2``, ``xz``) under which the parser still matches."""


# NOMAD: 2.0 reports `parser_name` as the entry point id (e.g.
# "electronicparsers:fhiaims_parser_entry_point"); "parsers/fhi-aims" is its alias.
MAINFILE_MATCHERS: tuple[MainfileMatcher, ...] = (
    MainfileMatcher(
        parser="parsers/exciting",
        entry_point="electronicparsers:exciting_parser_entry_point",
        contents_re=re.compile(
            r"(?:EXCITING.*started[\s\S]+?All units are atomic)|(?:EXCITING.*started)"
        ),
        name_re=re.compile(r"^.*INFO.OUT(\.[^/]*)?$"),
        text_only=False,
        alternative=True,
    ),
    MainfileMatcher(
        parser="parsers/fhi-aims",
        entry_point="electronicparsers:fhiaims_parser_entry_point",
        contents_re=re.compile(r"^(.*\n)*?\s*Invoking FHI-aims \.\.\."),
        name_re=re.compile(r".*"),
        text_only=False,
        alternative=False,
    ),
    MainfileMatcher(
        parser="parsers/quantumespresso",
        entry_point="electronicparsers:quantumespresso_parser_entry_point",
        contents_re=re.compile(
            r"(Program PWSCF.*starts)|(Current dimensions of program PWSCF are)"
        ),
        name_re=re.compile(r".*"),
        text_only=False,
        alternative=False,
        compressions=frozenset({"gz", "bz2", "xz"}),
    ),
    MainfileMatcher(
        parser="parsers/vasp",
        entry_point="electronicparsers:vasp_parser_entry_point",
        contents_re=re.compile(
            r'^\s*<\?xml version="1\.0" encoding="ISO-8859-1"\?>\s*?\s*<modeling>?\s*'
            r'<generator>?\s*<i name="program" type="string">\s*vasp\s*</i>?'
            r"|^\svasp[\.\d]+.+?(?:\(build|complex)[\s\S]+?executed on"
        ),
        name_re=re.compile(r".*[^/]*xml[^/]*"),
        # "(application/.*)|(text/.*)": libmagic gives one of these for anything the
        # contents regex can match.
        text_only=False,
        alternative=True,
        compressions=frozenset({"gz", "bz2", "xz"}),
    ),
    # NOMAD's own schema files; the parser is built into nomad-lab, not a plugin.
    MainfileMatcher(
        parser="parsers/archive",
        entry_point="parsers/archive",
        contents_re=None,
        name_re=re.compile(r".*(archive|metainfo)\.(json|yaml|yml)$"),
        text_only=False,
        alternative=False,
    ),
)


def read_head(stream: SupportsRead) -> tuple[bytes, str | None]:
    """Read what NOMAD matches on: the first bytes, decompressed if gz/bz2/xz.

    Returns the (decompressed) head of at most :data:`MATCHING_SIZE` bytes and the
    compression found. A compressed stream that cannot be decompressed yields
    ``b""`` (NOMAD logs the error and matches nothing). ``OSError`` from the
    underlying stream propagates.
    """
    raw = stream.read(MATCHING_SIZE)
    compression = _COMPRESSIONS.get(raw[:3])
    if compression is None:
        return raw, None
    rest = _Prefixed(raw, stream)
    try:
        with _decompressed(compression, rest) as decompressed:
            return decompressed.read(MATCHING_SIZE), compression
    except (EOFError, zlib.error, lzma.LZMAError, OSError):
        # bz2 and gzip report corrupt data as OSError; only the source's own errors matter.
        if rest.failed:
            raise
        return b"", compression


def _decompressed(compression: str, stream: _Prefixed) -> io.BufferedIOBase:
    # The stubs ask for a full file object; the decompressors only call read().
    source = cast("io.BufferedReader", stream)
    if compression == "gz":
        return gzip.GzipFile(fileobj=source, mode="rb")
    if compression == "bz2":
        return bz2.BZ2File(source, mode="rb")
    return lzma.LZMAFile(source, mode="rb")


class _Prefixed:
    """A read-only stream: ``prefix`` then the rest of ``stream``."""

    def __init__(self, prefix: bytes, stream: SupportsRead) -> None:
        self._prefix = prefix
        self._stream = stream
        self.failed = False

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                data, self._prefix = self._prefix, b""
                more = size - len(data) if size >= 0 else -1
                return data + (self._read(more) if more != 0 else b"")
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._read(size)

    def _read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except OSError:
            self.failed = True
            raise

    def readable(self) -> bool:
        return True


def _decode(head: bytes) -> str | None:
    """Decode as NOMAD does: UTF-8, else Latin-1 when libmagic would call it ISO-8859."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and not head[: exc.start].isascii():
            # Cut inside a character at the 12,000-byte mark after other UTF-8 text:
            # libmagic still says UTF-8, so NOMAD tries nothing else and matches no
            # content. Were the cut byte the only non-ASCII one, libmagic would say
            # ISO-8859-1, handled below.
            return None
    # libmagic names text with C1 control bytes (0x80-0x9f) something else than iso-8859-1.
    if any(byte in _NOT_TEXT or 0x80 <= byte <= 0x9F for byte in head):
        return None
    return head.decode("iso-8859-1")


def _is_text(head: bytes) -> bool:
    """libmagic's verdict ``text/*``: no byte that never occurs in text (trailing NULs aside)."""
    body = head.rstrip(b"\0")
    return bool(body) and not any(byte in _NOT_TEXT for byte in body)


def _is_hidden(name: str) -> bool:
    return name.startswith((".", "~"))


def _alternative_allows(path: str, matcher: MainfileMatcher, siblings: Collection[str]) -> bool:
    """NOMAD's ``mainfile_alternative`` rule for a file whose name did not match."""
    directory, basename = posixpath.split(path)
    stem = basename.rsplit(".", 1)[0]
    others = [name for name in siblings if name != basename]
    matched_siblings: list[bool] = []
    for sibling in others:
        if matcher.name_re.fullmatch(posixpath.join(directory, sibling)) is None:
            continue
        sibling_stem = sibling.rsplit(".", 1)[0]
        if sibling_stem == stem:
            return False
        matched_siblings.append(
            any(s != sibling and s.rsplit(".", 1)[0] == sibling_stem for s in others)
        )
    return not matched_siblings or any(matched_siblings)


def match_mainfile(
    name: str,
    head: bytes,
    *,
    compression: str | None = None,
    siblings: Collection[str] | None = None,
) -> str | None:
    """Return the parser NOMAD would pick for a file, or ``None`` if it is no mainfile.

    Args:
        name: the file's POSIX path inside the upload (e.g. ``calc/aims.out``).
        head: its first :data:`MATCHING_SIZE` bytes, decompressed (see :func:`read_head`).
        compression: the compression :func:`read_head` found, if any.
        siblings: base names of the other files in the same directory; used by
            parsers with alternative names (VASP ``OUTCAR`` next to a ``vasprun.xml``).
            ``None`` is taken as "no siblings".
    """
    basename = posixpath.basename(name)
    if not basename or _is_hidden(basename):
        return None
    decoded = _decode(head)
    text: bool | None = None
    for matcher in MAINFILE_MATCHERS:
        if matcher.contents_re is not None and (
            decoded is None or matcher.contents_re.search(decoded) is None
        ):
            continue
        if matcher.text_only:
            if text is None:
                text = _is_text(head)
            if not text:
                continue
        if compression is not None and compression not in matcher.compressions:
            continue
        if matcher.name_re.fullmatch(name) is None and not (
            matcher.alternative and _alternative_allows(name, matcher, siblings or ())
        ):
            continue
        return matcher.parser
    return None
