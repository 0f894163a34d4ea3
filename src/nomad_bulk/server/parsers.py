"""Mainfile matching: which raw files become entries, and with which parser.

Like NOMAD, a file is matched by its name and its first 12,000 bytes; names
starting with ``.`` or ``~`` are ignored. Three codes are recognised: FHI-aims
(by content), VASP (``vasprun.xml``) and Quantum ESPRESSO (by content).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "FAIL_ENTRY_MARKER",
    "FAIL_UPLOAD_MARKER",
    "HEAD_SIZE",
    "PARSERS",
    "Parser",
    "is_ignored",
    "match_parser",
]

#: Bytes of a file that matching looks at (as NOMAD does).
HEAD_SIZE = 12_000
#: A mainfile whose head contains this fails as an entry (the upload still succeeds).
FAIL_ENTRY_MARKER = b"NOMAD_BULK_FAIL_ENTRY"
#: Any file whose head contains this makes the whole processing fail.
FAIL_UPLOAD_MARKER = b"NOMAD_BULK_FAIL_UPLOAD"


@dataclass(frozen=True, slots=True)
class Parser:
    """A parser: its name in 1.3 and in 2.0, its code, and what it matches."""

    name_v1: str
    name_v2: str
    code_name: str
    file_pattern: re.Pattern[str]
    content_pattern: re.Pattern[bytes] | None

    def name(self, api_version: str) -> str:
        """The parser name as the given API generation reports it."""
        return self.name_v2 if api_version == "2.0" else self.name_v1


PARSERS: tuple[Parser, ...] = (
    Parser(
        "parsers/fhi-aims",
        "electronicparsers:fhiaims_parser_entry_point",
        "FHI-aims",
        re.compile(r".*"),
        re.compile(rb"Invoking FHI-aims"),
    ),
    Parser(
        "parsers/vasp",
        "electronicparsers:vasp_parser_entry_point",
        "VASP",
        re.compile(r"(?:.*/)?vasprun\.xml[^/]*$"),
        None,
    ),
    Parser(
        "parsers/quantumespresso",
        "electronicparsers:quantumespresso_parser_entry_point",
        "Quantum Espresso",
        re.compile(r".*"),
        re.compile(rb"Program PWSCF.*starts|Current dimensions of program PWSCF"),
    ),
)


def is_ignored(path: str) -> bool:
    """Whether NOMAD skips this file when matching (hidden or backup names)."""
    name = path.rsplit("/", 1)[-1]
    return name.startswith((".", "~"))


def match_parser(path: str, head: bytes) -> Parser | None:
    """The parser for the raw file at ``path`` (POSIX, upload-relative), if any."""
    if is_ignored(path):
        return None
    for parser in PARSERS:
        if not parser.file_pattern.match(path):
            continue
        if parser.content_pattern is not None:
            # NOMAD also matches the MIME type (text/*): binary files such as a stored
            # zip never match by content, even if a member's text shows through.
            if b"\x00" in head or not parser.content_pattern.search(head):
                continue
        return parser
    return None
