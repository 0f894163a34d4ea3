"""Mainfile prediction: NOMAD's matchers, on files, folders and zip members."""

from __future__ import annotations

import io
import lzma
import posixpath
from pathlib import Path

import pytest

from nomad_bulk.errors import PackingError
from nomad_bulk.packing import MAINFILE_MATCHERS, match_mainfile, predict_mainfiles
from nomad_bulk.packing.mainfiles import MATCHING_SIZE, read_head

from .conftest import write_tree, write_zip
from .samples import AIMS_OUT, CORPUS, OUTCAR, QE_OUT, VASPRUN_XML, gz


def _siblings(name: str) -> list[str]:
    directory = posixpath.dirname(name)
    return [posixpath.basename(n) for n in CORPUS if posixpath.dirname(n) == directory]


@pytest.mark.parametrize(("name", "content", "parser"), [(n, c, p) for n, (c, p) in CORPUS.items()])
def test_corpus_matches_what_nomad_decided(name: str, content: bytes, parser: str | None) -> None:
    """Each sample gets the parser NOMAD 2.0 picked for it (or none)."""
    head, compression = read_head(io.BytesIO(content))
    assert match_mainfile(name, head, compression=compression, siblings=_siblings(name)) == parser


def test_matchers_table_names_the_codes_and_their_entry_points() -> None:
    """The shared table covers FHI-aims, VASP, Quantum ESPRESSO and exciting."""
    parsers = {m.parser: m.entry_point for m in MAINFILE_MATCHERS}
    assert parsers["parsers/fhi-aims"] == "electronicparsers:fhiaims_parser_entry_point"
    assert {"parsers/vasp", "parsers/quantumespresso", "parsers/exciting"} <= set(parsers)


def test_head_is_limited_to_the_matching_size() -> None:
    """Only the first 12,000 bytes are read, also from a compressed file."""
    big = "x" * (5 * MATCHING_SIZE)
    stream = io.BytesIO(big.encode())
    head, compression = read_head(stream)
    assert len(head) == MATCHING_SIZE == 12_000 and compression is None
    assert stream.tell() == MATCHING_SIZE
    head, compression = read_head(io.BytesIO(gz(big)))
    assert len(head) == MATCHING_SIZE and compression == "gz"


def test_xz_and_corrupt_compressed_heads() -> None:
    """xz is decompressed; a corrupt gzip yields an empty head, as NOMAD matches nothing."""
    head, compression = read_head(io.BytesIO(lzma.compress(QE_OUT.encode())))
    assert compression == "xz" and head.startswith(QE_OUT.encode())
    head, compression = read_head(io.BytesIO(b"\x1f\x8b\x08garbage"))
    assert (head, compression) == (b"", "gz")


def test_vasp_xml_name_is_needed_unless_no_sibling_claims_it() -> None:
    """A vasprun.xml head under another name matches only by NOMAD's alternative rule."""
    head = VASPRUN_XML.encode()
    assert match_mainfile("c/vasprun.xml", head) == "parsers/vasp"
    assert match_mainfile("c/OUTCAR", OUTCAR.encode(), siblings=["vasprun.xml"]) is None
    assert match_mainfile("c/OUTCAR", OUTCAR.encode(), siblings=["INCAR"]) == "parsers/vasp"


def test_hidden_names_never_match() -> None:
    """Names starting with '.' or '~' are ignored whatever their content."""
    assert match_mainfile("a/.aims.out", AIMS_OUT.encode()) is None
    assert match_mainfile("~aims.out", AIMS_OUT.encode()) is None
    assert match_mainfile("a/aims.out", AIMS_OUT.encode()) == "parsers/fhi-aims"


def test_predict_in_a_folder_skips_hidden_files(tmp_path: Path) -> None:
    """A folder's direct, visible files are matched; the result is sorted by path."""
    folder = write_tree(
        tmp_path / "c",
        {"aims.out": AIMS_OUT, ".aims.out": AIMS_OUT, "vasprun.xml": VASPRUN_XML, "x": "1"},
    )
    result = predict_mainfiles(folder)
    assert list(result.items()) == [
        ("aims.out", "parsers/fhi-aims"),
        ("vasprun.xml", "parsers/vasp"),
    ]


def test_predict_in_a_zip_reads_members(tmp_path: Path) -> None:
    """Zip members are matched, in sub-folders too, and a prefix reaches name rules."""
    zip_path = write_zip(
        tmp_path / "r.zip",
        {
            "aims.out": AIMS_OUT,
            "sub/pw.out": QE_OUT,
            "sub/control.in": "xc pbe\n",
            "x/.h": AIMS_OUT,
        },
    )
    assert predict_mainfiles(zip_path) == {
        "aims.out": "parsers/fhi-aims",
        "sub/pw.out": "parsers/quantumespresso",
    }
    assert predict_mainfiles(zip_path, ["sub/pw.out"], prefix="k/") == {
        "sub/pw.out": "parsers/quantumespresso"
    }


def test_predict_refuses_broken_sources(tmp_path: Path) -> None:
    """A missing source or a broken zip raises PackingError naming the path."""
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackingError, match=r"bad\.zip"):
        predict_mainfiles(bad)
    with pytest.raises(PackingError, match="does not exist"):
        predict_mainfiles(tmp_path / "missing")
