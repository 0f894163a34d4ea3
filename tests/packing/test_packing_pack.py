"""Packing: deterministic, streamed, atomic zips, and ready zips never nested."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nomad_bulk.errors import PackingError
from nomad_bulk.packing import Group, discover, group_calculations, pack_group

from .conftest import write_tree, write_zip, zip_contents
from .samples import AIMS_OUT, CONTROL_IN, QE_OUT, VASPRUN_XML


def _groups(
    root: Path,
    *,
    per_upload: bool = False,
    max_upload_size: int = 10**9,
    max_per_upload: int | None = None,
) -> list[Group]:
    return list(
        group_calculations(
            discover(root, on_problem=lambda p: None),
            per_upload=per_upload,
            max_upload_size=max_upload_size,
            max_per_upload=max_per_upload,
        )
    )


def _spool_files(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.iterdir()) if spool.exists() else []


def test_packed_zip_layout_checksum_and_mainfiles(root: Path, spool: Path) -> None:
    """Each calculation sits under <key>/, the root's files at the top; sha256 and size match."""
    write_tree(
        root,
        {
            "notes.txt": "root file",
            "b/aims.out": AIMS_OUT,
            "b/control.in": CONTROL_IN,
            "a/sub/pw.out": QE_OUT,
        },
    )
    (group,) = _groups(root)
    packed = pack_group(group, spool)
    assert packed.owned and packed.path == spool / f"{group.key}.zip"
    assert packed.file_name == f"{group.key}.zip" and packed.group_key == group.key
    data = packed.path.read_bytes()
    assert packed.size == len(data) and packed.sha256 == hashlib.sha256(data).hexdigest()
    assert _spool_files(spool) == [packed.file_name]
    with zipfile.ZipFile(packed.path) as zf:
        assert zf.testzip() is None
        names = [i.filename for i in zf.infolist()]
        assert names == ["notes.txt", "a/sub/pw.out", "b/aims.out", "b/control.in"]
        for info in zf.infolist():
            assert info.date_time == (1980, 1, 1, 0, 0, 0)
            assert info.external_attr >> 16 == 0o100644 and info.create_system == 3
        assert zf.read("b/aims.out").decode() == AIMS_OUT
    assert dict(packed.mainfiles) == {
        ".": (),
        "a/sub": ("a/sub/pw.out",),
        "b": ("b/aims.out",),
    }
    assert group.size >= packed.size


def test_compression_is_chosen_from_the_data(root: Path, spool: Path) -> None:
    """Text is deflated; random bytes and already compressed suffixes are stored."""
    write_tree(
        root,
        {
            "c/aims.out": AIMS_OUT * 50,
            "c/wavefunction.bin": os.urandom(200_000),
            "c/data.gz": b"pretend-compressed " * 100,
        },
    )
    (group,) = _groups(root)
    packed = pack_group(group, spool)
    with zipfile.ZipFile(packed.path) as zf:
        methods = {i.filename: i.compress_type for i in zf.infolist()}
    assert methods == {
        "c/aims.out": zipfile.ZIP_DEFLATED,
        "c/data.gz": zipfile.ZIP_STORED,
        "c/wavefunction.bin": zipfile.ZIP_STORED,
    }


tree_strategy = st.dictionaries(
    keys=st.lists(
        st.text(alphabet="abcxyz_-09é", min_size=1, max_size=6), min_size=1, max_size=3
    ).map("/".join),
    values=st.one_of(st.binary(max_size=3000), st.text(max_size=2000).map(str.encode)),
    min_size=1,
    max_size=8,
)


def _valid_tree(files: dict[str, bytes]) -> bool:
    # A path cannot be both a file and a folder.
    names = set(files)
    return not any(other.startswith(name + "/") for name in names for other in names)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(files=tree_strategy.filter(_valid_tree), per_upload=st.booleans())
def test_same_input_gives_byte_identical_zips(files: dict[str, bytes], per_upload: bool) -> None:
    """Packing twice, with other mtimes and modes, gives identical bytes and content."""
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        root = write_tree(base / "root", files)
        first = {g.key: pack_group(g, base / "s1") for g in _groups(root, per_upload=per_upload)}
        for path in root.rglob("*"):
            if path.is_file():
                os.utime(path, (1_000_000, 1_000_000))
                path.chmod(0o600)
        second = {g.key: pack_group(g, base / "s2") for g in _groups(root, per_upload=per_upload)}
        assert first.keys() == second.keys()
        unpacked: dict[str, bytes] = {}
        for key, packed in first.items():
            assert packed.path.read_bytes() == second[key].path.read_bytes()
            assert packed.sha256 == second[key].sha256
            unpacked.update(zip_contents(packed.path))
        assert unpacked == files


def test_ready_zip_alone_is_uploaded_as_is(root: Path, spool: Path) -> None:
    """A ready zip in its own group is the upload itself: no copy, not owned."""
    zip_path = write_zip(
        root / "DFT-1" / "0iCl.zip", {"aims.out": AIMS_OUT, "control.in": CONTROL_IN}
    )
    (group,) = _groups(root, per_upload=True)
    packed = pack_group(group, spool)
    assert packed.path == zip_path.resolve() and not packed.owned
    assert packed.file_name == "0iCl.zip"
    assert packed.sha256 == hashlib.sha256(zip_path.read_bytes()).hexdigest()
    assert dict(packed.mainfiles) == {"DFT-1": ("aims.out",)}
    assert _spool_files(spool) == []


def test_ready_zips_are_repacked_never_nested(root: Path, spool: Path) -> None:
    """Grouped ready zips give their members under <key>/; no zip lands inside the upload."""
    write_zip(root / "DFT-1" / "a.zip", {"aims.out": AIMS_OUT, "sub/pw.out": QE_OUT})
    write_zip(root / "DFT-2" / "b.zip", {"vasprun.xml": VASPRUN_XML})
    write_tree(root, {"plain/aims.out": AIMS_OUT})
    (group,) = _groups(root)
    packed = pack_group(group, spool)
    contents = zip_contents(packed.path)
    assert sorted(contents) == [
        "DFT-1/aims.out",
        "DFT-1/sub/pw.out",
        "DFT-2/vasprun.xml",
        "plain/aims.out",
    ]
    assert contents["DFT-1/sub/pw.out"] == QE_OUT.encode()
    assert dict(packed.mainfiles) == {
        "DFT-1": ("DFT-1/aims.out", "DFT-1/sub/pw.out"),
        "DFT-2": ("DFT-2/vasprun.xml",),
        "plain": ("plain/aims.out",),
    }
    assert group.expected_entries == 4


def test_colliding_paths_are_refused(root: Path, spool: Path) -> None:
    """Two calculations writing the same path into one upload raise PackingError."""
    write_zip(root / "a" / "r.zip", {"b/x.txt": "from the zip"})
    write_tree(root, {"a/b/x.txt": "from the folder"})
    (group,) = _groups(root)
    with pytest.raises(PackingError, match=r"a/b/x\.txt"):
        pack_group(group, spool)
    assert _spool_files(spool) == []


def test_file_vanished_since_discovery(root: Path, spool: Path) -> None:
    """A file gone since discovery raises PackingError naming it; no partial file remains."""
    write_tree(root, {"c/aims.out": AIMS_OUT, "c/z.txt": "x" * 100_000})
    (group,) = _groups(root)
    (root / "c" / "z.txt").unlink()
    with pytest.raises(PackingError, match=r"z\.txt"):
        pack_group(group, spool)
    assert _spool_files(spool) == []


def test_link_swapped_to_escape_the_root_is_refused(
    root: Path, spool: Path, tmp_path: Path
) -> None:
    """A file replaced by a link out of the root after discovery is not packed."""
    write_tree(root, {"c/aims.out": AIMS_OUT, "c/data.txt": "fine"})
    secret = write_tree(tmp_path / "outside", {"secret": "private"}) / "secret"
    (group,) = _groups(root)
    (root / "c" / "data.txt").unlink()
    (root / "c" / "data.txt").symlink_to(secret)
    with pytest.raises(PackingError, match="outside the root"):
        pack_group(group, spool)
    assert _spool_files(spool) == []


def test_broken_ready_zip_alone_raises(root: Path, spool: Path) -> None:
    """A group that is a broken ready zip raises PackingError with the discovery problem."""
    (root / "c").mkdir()
    (root / "c" / "x.zip").write_bytes(b"garbage")
    (group,) = _groups(root, per_upload=True)
    with pytest.raises(PackingError, match="not a readable zip"):
        pack_group(group, spool)


def test_large_file_is_streamed(root: Path, spool: Path) -> None:
    """A 32 MiB file is packed with a few MiB of Python memory at most."""
    write_tree(root, {"c/big.bin": os.urandom(32 * 1024 * 1024)})
    (group,) = _groups(root)
    tracemalloc.start()
    try:
        packed = pack_group(group, spool)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024
    assert packed.size > 32 * 1024 * 1024


def test_threads_packing_concurrently_agree(root: Path, spool: Path) -> None:
    """Threads packing the same and different groups at once produce the same bytes."""
    write_tree(root, {f"c{n}/aims.out": AIMS_OUT * (n + 1) for n in range(6)})
    groups = _groups(root, max_per_upload=2)
    assert len(groups) == 3
    expected = {g.key: pack_group(g, spool / "one").sha256 for g in groups}
    results: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def work(group: Group) -> None:
        try:
            results.append((group.key, pack_group(group, spool / "many").sha256))
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(g,)) for g in groups * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == sorted((k, v) for k, v in expected.items() for _ in range(3))
    assert _spool_files(spool / "many") == sorted(f"{k}.zip" for k in expected)


def test_disk_full_on_a_tiny_tmpfs(root: Path, tmp_path: Path) -> None:
    """ENOSPC while writing raises PackingError saying so, and leaves no partial file."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root in a mount-capable environment)")
    try:
        write_tree(root, {"c/big.bin": os.urandom(1024 * 1024)})
        (group,) = _groups(root)
        with pytest.raises(PackingError, match="No space left") as info:
            pack_group(group, mount / "spool")
        assert "spool" in str(info.value)
        assert _spool_files(mount / "spool") == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_file_size_limit_is_reported_like_a_full_disk(root: Path, spool: Path) -> None:
    """Hitting RLIMIT_FSIZE (EFBIG) gives the same clear error and no partial file."""
    write_tree(root, {"c/big.bin": os.urandom(2 * 1024 * 1024)})
    script = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from nomad_bulk.errors import PackingError
        from nomad_bulk.packing import discover, group_calculations, pack_group
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))
        (group,) = group_calculations(discover({str(root)!r}), per_upload=False)
        try:
            pack_group(group, Path({str(spool)!r}))
        except PackingError as exc:
            print("PackingError:", exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("PackingError: No space left"), done.stdout
    assert _spool_files(spool) == []


def test_unwritable_spool_is_a_packing_error(root: Path, tmp_path: Path) -> None:
    """A spool path that cannot be created raises PackingError."""
    write_tree(root, {"c/aims.out": AIMS_OUT})
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (group,) = _groups(root)
    with pytest.raises(PackingError, match="Cannot write"):
        pack_group(group, blocker / "spool")


def test_unzip_accepts_the_archive(root: Path, spool: Path) -> None:
    """The system's unzip tests the packed zip as sound (when unzip is installed)."""
    if shutil.which("unzip") is None:
        pytest.skip("unzip is not installed")
    write_tree(root, {"c/aims.out": AIMS_OUT, "c/r.bin": os.urandom(5000)})
    (group,) = _groups(root)
    packed = pack_group(group, spool)
    done = subprocess.run(
        ["unzip", "-t", str(packed.path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compress_level_changes_bytes_not_content(root: Path, spool: Path) -> None:
    """Level 1 and level 9 zips differ in bytes but hold the same files; 0 is refused."""
    from nomad_bulk.errors import ConfigError

    write_tree(root, {"c/aims.out": AIMS_OUT * 200})
    (group,) = _groups(root)
    fast = pack_group(group, spool / "fast", compress_level=1)
    small = pack_group(group, spool / "small", compress_level=9)
    assert fast.sha256 != small.sha256 and small.size < fast.size
    assert zip_contents(fast.path) == zip_contents(small.path)
    with pytest.raises(ConfigError):
        pack_group(group, spool, compress_level=0)


def test_exported_names() -> None:
    """The package exports exactly its sorted public API."""
    import nomad_bulk.packing as packing

    assert packing.__all__ == sorted(packing.__all__, key=lambda n: (not n.isupper(), n))
    public = {n for n in vars(packing) if not n.startswith("_")} - {"annotations", "mainfiles"}
    assert set(packing.__all__) == public
