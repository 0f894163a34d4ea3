"""The examples run as scripts (subprocesses) and as a notebook, against the local server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from nomad_bulk.samples import make_samples
from nomad_bulk.server import LocalServer

USER1 = "68878af7-6845-46c0-b2c1-250d4d8eb470"


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_tutorial_part2_script_against_a_given_url(
    examples: Path, server: LocalServer, script_env: dict[str, str], tmp_path: Path
) -> None:
    """tutorial_part2.py --url: three DFT uploads, processed, in a dataset, published, PIDs."""
    root = tmp_path / "tutorial"
    done = _run(
        [
            str(examples / "tutorial_part2.py"),
            "--url",
            server.url,
            "--root",
            str(root),
            "--publish",
        ],
        script_env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    pids = json.loads((root / "PIDs.json").read_text())
    assert sorted(pids["upload_ids"]) == ["DFT-1", "DFT-2", "DFT-3"]
    assert all(len(ids) == 1 for ids in pids["entry_ids"].values())
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert printed["upload_ids"] == pids["upload_ids"]
    uploads = {u.upload_id: u for u in server.state.uploads()}
    assert set(uploads) == set(pids["upload_ids"].values())
    assert all(u.published and u.main_author == USER1 for u in uploads.values())
    (dataset,) = server.state.datasets()
    assert dataset.dataset_id == pids["dataset_id"]
    entries = [e for u in uploads.values() for e in u.entries]
    assert sorted(e.entry_id for e in entries) == sorted(
        i for ids in pids["entry_ids"].values() for i in ids
    )
    assert all(e.datasets == [dataset.dataset_id] for e in entries)


def test_tutorial_part2_script_runs_offline_by_default(
    examples: Path, script_env: dict[str, str], tmp_path: Path
) -> None:
    """Without --url the script starts its own local server and needs no credentials."""
    env = {k: v for k, v in script_env.items() if not k.startswith("NOMAD_")}
    done = _run([str(examples / "tutorial_part2.py")], env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 calculations: 3 published" in done.stdout
    printed = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(printed["upload_ids"].values())) == 3 and printed["dataset_id"]


def test_bulk_upload_script_uploads_a_folder(
    examples: Path, server: LocalServer, script_env: dict[str, str], tmp_path: Path
) -> None:
    """bulk_upload.py packs twelve folders into two uploads, every calculation one entry."""
    root = tmp_path / "calcs"
    make_samples(root, 12)
    args = [str(examples / "bulk_upload.py"), str(root), "--url", server.url, "--dataset", "bulk"]
    done = _run(args, script_env, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "12 calculations: 12 done" in done.stdout
    uploads = server.state.uploads()
    assert len(uploads) == 2  # 12 calculations, at most 10 per upload
    assert sum(len(u.entries) for u in uploads) == 12
    (dataset,) = server.state.datasets()
    assert dataset.dataset_name == "bulk"
    assert all(e.datasets == [dataset.dataset_id] for u in uploads for e in u.entries)
    manifest = json.loads((root / ".nomad-bulk" / "PIDs.json").read_text())
    assert sorted(manifest["upload_ids"].values()) == sorted(
        u.upload_id for u in uploads for _ in u.entries
    )


@pytest.mark.timeout(120)
def test_notebook_executes_inside_the_kernels_running_loop(
    examples: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """examples/notebook.ipynb runs top to bottom in a real kernel: ``await run_upload`` with
    progress bars, then the blocking and tutorial APIs called inside the running loop."""
    for name in ("NOMAD_URL", "NOMAD_USERNAME", "NOMAD_PASSWORD", "NOMAD_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    notebook = nbformat.read(examples / "notebook.ipynb", as_version=4)  # type: ignore[no-untyped-call]
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=90,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()

    def text(index: int, stream: str | None = None) -> str:
        outputs = notebook.cells[index].outputs
        return "".join(
            o.get("text", "") + "".join(o.get("data", {}).get("text/plain", ""))
            for o in outputs
            if stream is None or o.get("name") == stream
        )

    code = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    assert text(code[0]) == "30"
    assert "30 calculations: 30 published" in text(code[1], "stdout")
    progress = text(code[1], "stderr")
    assert "calc" in progress and "30/30" in progress  # the bars were drawn, and finished
    assert "30 calculations, 6 uploads" in text(code[2])
    blocking = text(code[3])
    assert "event loop running in this cell: True" in blocking
    assert "SUCCESS True 5 entries" in blocking  # DFT-1's upload holds 5 calculations
    assert "published uploads: 6" in blocking
