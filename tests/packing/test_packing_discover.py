"""Discovery: which folders and zips become calculations, and what is reported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nomad_bulk.errors import PackingError
from nomad_bulk.packing import Calculation, Problem, discover

from .conftest import write_tree, write_zip
from .samples import AIMS_OUT, CONTROL_IN, OUTCAR, QE_OUT, VASPRUN_XML


def _collect(root: Path) -> tuple[list[Calculation], list[Problem]]:
    problems: list[Problem] = []
    calcs = list(discover(root, on_problem=problems.append))
    return calcs, problems


def test_tutorial_ready_zip_layout(root: Path) -> None:
    """Each DFT-N folder holding one zip is one calculation: that zip, with its mainfiles."""
    for n in (1, 2, 3):
        write_zip(
            root / f"DFT-{n}" / f"entry{n}.zip", {"aims.out": AIMS_OUT, "control.in": CONTROL_IN}
        )
    calcs, problems = _collect(root)
    assert problems == []
    assert [c.key for c in calcs] == ["DFT-1", "DFT-2", "DFT-3"]
    first = calcs[0]
    assert first.ready_zip == (root / "DFT-1" / "entry1.zip").resolve()
    assert first.path == (root / "DFT-1").resolve()
    assert first.files == ("aims.out", "control.in")
    assert first.mainfiles == ("aims.out",) and first.parsers == ("parsers/fhi-aims",)
    assert first.size == first.ready_zip.stat().st_size
    assert first.unpacked_size == len(AIMS_OUT) + len(CONTROL_IN)


def test_plain_and_nested_folders_in_stable_order(root: Path) -> None:
    """Every folder with files is a calculation of its direct files; parents come first."""
    write_tree(
        root,
        {
            "b/aims.out": AIMS_OUT,
            "b/control.in": CONTROL_IN,
            "b/step_1/aims.out": AIMS_OUT,
            "a/vasp/vasprun.xml": VASPRUN_XML,
            "a/vasp/OUTCAR": OUTCAR,
            "a-b/pw.out": QE_OUT,
            "top.txt": "notes",
        },
    )
    calcs, problems = _collect(root)
    assert problems == []
    assert [c.key for c in calcs] == [".", "a/vasp", "a-b", "b", "b/step_1"]
    by_key = {c.key: c for c in calcs}
    assert by_key["."].files == ("top.txt",) and by_key["."].mainfiles == ()
    assert by_key["b"].files == ("aims.out", "control.in")
    assert by_key["b"].size == len(AIMS_OUT) + len(CONTROL_IN)
    # NOMAD takes vasprun.xml, and not OUTCAR next to it.
    assert by_key["a/vasp"].mainfiles == ("vasprun.xml",)
    assert by_key["a-b"].parsers == ("parsers/quantumespresso",)
    assert by_key["b/step_1"].root == root.resolve()
    assert [c.key for c in discover(root)] == [c.key for c in calcs]


@pytest.mark.parametrize(
    ("pattern", "keys"),
    [
        ("DFT-*", ["DFT-1", "DFT-2"]),
        ("**/calc_*", ["DFT-1/calc_a", "calc_top", "x/y/calc_deep"]),
        ("x/*/calc_*", ["x/y/calc_deep"]),
        ("DFT-?/calc_a", ["DFT-1/calc_a"]),
    ],
)
def test_pattern_selects_folders(root: Path, pattern: str, keys: list[str]) -> None:
    """The pattern is a glob on the folder's relative path; ** spans folders."""
    write_tree(
        root,
        {
            "DFT-1/aims.out": AIMS_OUT,
            "DFT-1/calc_a/aims.out": AIMS_OUT,
            "DFT-2/aims.out": AIMS_OUT,
            "calc_top/aims.out": AIMS_OUT,
            "x/y/calc_deep/aims.out": AIMS_OUT,
            "root.txt": "x",
        },
    )
    assert [c.key for c in discover(root, pattern=pattern)] == keys


def test_empty_pattern_is_refused(root: Path) -> None:
    """A pattern that names no folder raises PackingError."""
    with pytest.raises(PackingError, match="pattern"):
        discover(root, pattern="/")


def test_hidden_files_and_state_dir_are_ignored(root: Path) -> None:
    """Names starting with '.' or '~' and the .nomad-bulk state dir are never discovered."""
    write_tree(
        root,
        {
            "c/aims.out": AIMS_OUT,
            "c/.aims.out.swp": "x",
            "c/~lock": "x",
            ".nomad-bulk/journal.sqlite": "x",
            ".hidden/aims.out": AIMS_OUT,
            "~tmp/aims.out": AIMS_OUT,
        },
    )
    calcs, problems = _collect(root)
    assert [(c.key, c.files) for c in calcs] == [("c", ("aims.out",))]
    assert problems == []


def test_links_escaping_the_root_are_skipped_and_reported(root: Path, tmp_path: Path) -> None:
    """File and folder links resolving outside the root are skipped, reported, recorded."""
    outside = write_tree(
        tmp_path / "outside", {"secret.txt": "do not upload", "d/aims.out": AIMS_OUT}
    )
    write_tree(root, {"c/aims.out": AIMS_OUT})
    (root / "c" / "leak.txt").symlink_to(outside / "secret.txt")
    (root / "dirlink").symlink_to(outside / "d")
    (root / "c" / "inner.txt").symlink_to(root / "c" / "aims.out")
    calcs, problems = _collect(root)
    assert [c.key for c in calcs] == [".", "c"]
    by_key = {c.key: c for c in calcs}
    assert by_key["c"].files == ("aims.out", "inner.txt")
    assert {p.path.name for p in problems} == {"leak.txt", "dirlink"}
    assert all("outside the root" in p.message for p in problems)
    assert any("leak.txt" in m for m in by_key["c"].problems)
    # A folder whose only content was an escaping link still shows up, with no files.
    assert by_key["."].files == () and "dirlink" in by_key["."].problems[0]


def test_links_to_folders_inside_the_root_are_not_followed(root: Path) -> None:
    """A folder link inside the root is listed as ignored; its target is found once."""
    write_tree(root, {"real/aims.out": AIMS_OUT, "c/control.in": CONTROL_IN})
    (root / "c" / "alias").symlink_to(root / "real")
    calcs, problems = _collect(root)
    assert [c.key for c in calcs] == ["c", "real"]
    assert calcs[0].ignored == ("alias/",) and problems == []


def test_symlink_loops_and_broken_links_do_not_hang(root: Path) -> None:
    """Link loops and dangling links are reported; discovery goes on."""
    write_tree(root, {"c/aims.out": AIMS_OUT})
    (root / "c" / "loop_a").symlink_to(root / "c" / "loop_b")
    (root / "c" / "loop_b").symlink_to(root / "c" / "loop_a")
    (root / "c" / "self").symlink_to(root / "c")
    (root / "c" / "dangling").symlink_to(root / "c" / "missing")
    calcs, problems = _collect(root)
    assert [c.key for c in calcs] == ["c"]
    assert calcs[0].files == ("aims.out",)
    messages = {p.path.name: p.message for p in problems}
    assert "loop" in messages["loop_a"] and "loop" in messages["loop_b"]
    assert "broken symbolic link" in messages["dangling"]
    assert "self" not in messages and calcs[0].ignored == ("self/",)


def test_special_files_are_reported_without_blocking(root: Path) -> None:
    """A FIFO is never opened (it would block); it is reported as not a regular file."""
    write_tree(root, {"c/aims.out": AIMS_OUT})
    os.mkfifo(root / "c" / "pipe")
    calcs, problems = _collect(root)
    assert calcs[0].files == ("aims.out",)
    assert [p.path.name for p in problems] == ["pipe"]
    assert "not a regular file" in calcs[0].problems[0]


def _drop_read_override() -> None:
    """In the child, before exec: lose root's right to read any file.

    Dropping CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set means
    the exec'd root process no longer gets them, so file modes apply to it.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(pr_capbset_drop, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file_is_reported(root: Path) -> None:
    """A file that cannot be read (mode 000, no root override) is skipped and reported."""
    write_tree(root, {"c/aims.out": AIMS_OUT, "c/secret.out": "x"})
    (root / "c" / "secret.out").chmod(0)
    if os.geteuid() != 0:
        calcs, problems = _collect(root)
        assert calcs[0].files == ("aims.out",)
        assert "cannot read" in problems[0].message and "secret.out" in problems[0].message
        return
    # Root reads everything: run the same discovery in a root process without the
    # capabilities that bypass file modes.
    script = textwrap.dedent(
        f"""
        from nomad_bulk.packing import discover
        problems = []
        calcs = list(discover({str(root)!r}, on_problem=problems.append))
        print(calcs[0].files, len(calcs[0].problems))
        print(problems[0].message)
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            preexec_fn=_drop_read_override,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop root's read override here: {exc}")
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.splitlines()[:2]
    assert first == "('aims.out',) 1"
    assert "secret.out" in message and "cannot read" in message


def test_not_a_zip_is_a_calculation_with_a_problem(root: Path) -> None:
    """A .zip that is no zip yields a calculation with no files and a clear problem."""
    (root / "DFT-1").mkdir()
    (root / "DFT-1" / "broken.zip").write_bytes(b"this is not a zip")
    write_zip(root / "DFT-2" / "ok.zip", {"aims.out": AIMS_OUT})
    calcs, problems = _collect(root)
    assert [c.key for c in calcs] == ["DFT-1", "DFT-2"]
    broken = calcs[0]
    assert broken.files == () and broken.ready_zip is not None
    assert "not a readable zip" in broken.problems[0] and "broken.zip" in broken.problems[0]
    assert [p.key for p in problems] == ["DFT-1"]
    assert calcs[1].problems == ()


def test_several_zips_in_a_folder_are_separate_calculations(root: Path) -> None:
    """With several ready zips each is keyed folder/name.zip; loose files are left out."""
    write_zip(root / "runs" / "b.zip", {"aims.out": AIMS_OUT})
    write_zip(root / "runs" / "a.zip", {"x/pw.out": QE_OUT})
    (root / "runs" / "README").write_text("what these are")
    calcs, _ = _collect(root)
    assert [c.key for c in calcs] == ["runs/a.zip", "runs/b.zip"]
    assert calcs[0].mainfiles == ("x/pw.out",)
    assert calcs[0].ignored == ("README",)


def test_zip_next_to_a_mainfile_is_an_ordinary_file(root: Path) -> None:
    """A folder with a recognised mainfile is a plain calculation, its zips plain files."""
    write_tree(root, {"c/aims.out": AIMS_OUT})
    write_zip(root / "c" / "restart.zip", {"aims.out": AIMS_OUT})
    calcs, _ = _collect(root)
    assert len(calcs) == 1
    assert calcs[0].ready_zip is None and calcs[0].files == ("aims.out", "restart.zip")
    assert calcs[0].mainfiles == ("aims.out",)


def test_zip_members_unsafe_or_links_are_left_out(root: Path) -> None:
    """Absolute or '..' members are problems; symlink members are ignored as NOMAD does."""
    import zipfile

    path = root / "c" / "r.zip"
    path.parent.mkdir()
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("aims.out", AIMS_OUT)
        zf.writestr("../evil.txt", "x")
        link = zipfile.ZipInfo("link")
        link.create_system = 3
        link.external_attr = (0o120777) << 16
        zf.writestr(link, "aims.out")
    calcs, problems = _collect(root)
    assert calcs[0].files == ("aims.out",)
    assert calcs[0].ignored == ("link",)
    assert "../evil.txt" in calcs[0].problems[0] and len(problems) == 1


def test_root_problems_raise_and_empty_root_yields_nothing(root: Path, tmp_path: Path) -> None:
    """A missing root or a file as root raise PackingError; an empty root is just empty."""
    with pytest.raises(PackingError, match="does not exist"):
        discover(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackingError, match="not a folder"):
        discover(tmp_path / "file")
    assert list(discover(root)) == []


def test_discovery_is_lazy(root: Path) -> None:
    """The first calculation arrives before later folders are even listed."""
    write_tree(root, {f"c{n:03d}/aims.out": AIMS_OUT for n in range(50)})
    it = discover(root)
    first = next(it)
    assert first.key == "c000"
    # Folders not yet reached can still change and are seen as they are then.
    (root / "c049" / "late.txt").write_text("added after the walk started")
    last = list(it)[-1]
    assert last.files == ("aims.out", "late.txt")


def test_problems_are_logged_without_a_handler(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without on_problem, each problem is logged as a warning naming the path."""
    write_tree(root, {"c/aims.out": AIMS_OUT})
    (root / "c" / "dangling").symlink_to(root / "nowhere")
    with caplog.at_level("WARNING", logger="nomad_bulk.packing"):
        calcs = list(discover(root))
    assert calcs[0].problems and "dangling" in caplog.text
