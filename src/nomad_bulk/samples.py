"""Generated calculation folders for the demo, the tests and the benchmarks.

Each folder looks like a small FHI-aims run (``aims.out`` with the header
NOMAD's parser matches on, ``control.in``, ``geometry.in``), optionally a VASP
run (``vasprun.xml``), optionally in the tutorial's layout (``DFT-1/<id>.zip``
holding the files at the zip's root). Markers make the local server fail an
entry (``NOMAD_BULK_FAIL_ENTRY`` in a mainfile's head) or a whole upload
(``NOMAD_BULK_FAIL_UPLOAD`` in any file). Everything is deterministic.
"""

from __future__ import annotations

import base64
import hashlib
import random
import zipfile
from collections.abc import Collection
from pathlib import Path
from typing import Literal

__all__ = [
    "FAIL_ENTRY_MARKER",
    "FAIL_UPLOAD_MARKER",
    "aims_out",
    "make_samples",
]

FAIL_ENTRY_MARKER = "NOMAD_BULK_FAIL_ENTRY"
FAIL_UPLOAD_MARKER = "NOMAD_BULK_FAIL_UPLOAD"

Code = Literal["fhi-aims", "vasp", "mixed"]
Layout = Literal["folders", "ready-zip", "nested"]

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)

_AIMS_OUT = """\
  MPI-parallelism will be employed.
------------------------------------------------------------
          Invoking FHI-aims ...
{marker}
  When using FHI-aims, please cite the following reference:

  Volker Blum, Ralf Gehrke, Felix Hanke, Paula Havu,
  Ville Havu, Xinguo Ren, Karsten Reuter, and Matthias Scheffler,
  'Ab Initio Molecular Simulations with Numeric Atom-Centered Orbitals',
  Computer Physics Communications 180, 2175-2196 (2009)

  For any questions about FHI-aims, please visit the aimsclub website
  with its forums and wiki. Contributions to both the forums and the
  wiki are warmly encouraged - they are for you, and everyone else.
------------------------------------------------------------

  Date     :  20240101, Time     :  12{minute:02d}00.000
  Time zero on CPU 1             :   0.100000000000000E+00  s.
  Internal wall clock time zero  :           400000000.000  s.

  FHI-aims created a unique identifier for this run for later identification
  aims_uuid : {uuid}

  Build configuration of the current instance of FHI-aims
  -------------------------------------------------------
  FHI-aims version      : 240101
  Commit number         : 0000000

  Using        1 parallel tasks.
  Task        0 on host localhost reporting.

  Obtaining array dimensions for all initial allocations:

  ------------------------------------------------------------
          Leaving FHI-aims.
          Date     :  20240101, Time     :  12{minute:02d}01.000

          Computational steps:
          | Number of self-consistency cycles          :            0
          | Number of SCF (re)initializations          :            0

          Have a nice day.
------------------------------------------------------------
"""

_CONTROL_IN = """\
# control.in of sample calculation {index}
xc                 pbe
relativistic       atomic_zora scalar
charge             0.0
spin               none
"""

_VASPRUN = """\
<?xml version="1.0" encoding="ISO-8859-1"?>
<modeling>
 <generator>
  <i name="program" type="string">vasp </i>
  <i name="version" type="string">6.4.2  </i>
  <i name="subversion" type="string">sample {index} </i>
 </generator>
 <incar>
  <i type="string" name="SYSTEM">water {index}{marker}</i>
  <i name="ENCUT">    400.00000000</i>
 </incar>
</modeling>
"""


def _uuid(seed: int, index: int) -> str:
    digest = hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def aims_out(index: int, *, seed: int = 0, fail_entry: bool = False) -> str:
    """The text of a small FHI-aims ``aims.out`` that NOMAD's parser accepts."""
    marker = f"  {FAIL_ENTRY_MARKER}\n" if fail_entry else ""
    return _AIMS_OUT.format(marker=marker, uuid=_uuid(seed, index), minute=index % 60)


def _geometry(index: int, rng: random.Random) -> str:
    shift = rng.uniform(-0.05, 0.05)
    lines = [f"# water molecule, sample {index}"]
    lines.append(f"atom  {0.0 + shift:.6f}  0.000000  0.119262  O")
    lines.append(f"atom  0.000000  {0.763239 + shift:.6f}  -0.477047  H")
    lines.append(f"atom  0.000000  {-0.763239 - shift:.6f}  -0.477047  H")
    return "\n".join(lines) + "\n"


def _files(
    index: int,
    code: Literal["fhi-aims", "vasp"],
    *,
    seed: int,
    fail_entry: bool,
    fail_upload: bool,
    empty: bool,
    extra_bytes: int,
) -> dict[str, bytes]:
    rng = random.Random(seed * 1_000_003 + index)
    files: dict[str, bytes] = {}
    if empty:
        files["README.txt"] = f"notes of sample {index}; no calculation output here\n".encode()
    elif code == "vasp":
        marker = f" {FAIL_ENTRY_MARKER}" if fail_entry else ""
        files["vasprun.xml"] = _VASPRUN.format(index=index, marker=marker).encode()
        files["INCAR"] = b"ENCUT = 400\n"
    else:
        files["aims.out"] = aims_out(index, seed=seed, fail_entry=fail_entry).encode()
        files["control.in"] = _CONTROL_IN.format(index=index).encode()
        files["geometry.in"] = _geometry(index, rng).encode()
    if fail_upload:
        files["broken.txt"] = f"{FAIL_UPLOAD_MARKER}\n".encode()
    if extra_bytes > 0:
        files["wavefunction.bin"] = rng.randbytes(extra_bytes)
    return files


def _entry_like_id(seed: int, index: int) -> str:
    digest = hashlib.sha512(f"sample:{seed}:{index}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:28]


def make_samples(
    root: Path,
    count: int,
    *,
    code: Code = "fhi-aims",
    layout: Layout = "folders",
    prefix: str = "DFT-",
    start: int = 1,
    fail_entry: Collection[int] = (),
    fail_upload: Collection[int] = (),
    empty: Collection[int] = (),
    extra_bytes: int = 0,
    seed: int = 0,
) -> list[Path]:
    """Write ``count`` calculation folders under ``root`` and return their paths.

    Folders are named ``<prefix><n>`` for ``n`` from ``start``. ``layout``:
    ``folders`` (files directly in each folder), ``ready-zip`` (the tutorial's
    ``DFT-n/<id>.zip``) or ``nested`` (folders in ``batch-k/`` sub-directories,
    100 per batch). ``code="mixed"`` alternates FHI-aims and VASP. The numbers
    in ``fail_entry``, ``fail_upload`` and ``empty`` pick folders that carry a
    failure marker or no mainfile at all. ``extra_bytes`` adds a random binary
    file of that size to each folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for n in range(start, start + count):
        this_code: Literal["fhi-aims", "vasp"]
        if code == "mixed":
            this_code = "vasp" if n % 2 == 0 else "fhi-aims"
        else:
            this_code = code
        files = _files(
            n,
            this_code,
            seed=seed,
            fail_entry=n in fail_entry,
            fail_upload=n in fail_upload,
            empty=n in empty,
            extra_bytes=extra_bytes,
        )
        folder = root / f"{prefix}{n}"
        if layout == "nested":
            folder = root / f"batch-{(n - start) // 100 + 1}" / f"{prefix}{n}"
        folder.mkdir(parents=True, exist_ok=True)
        if layout == "ready-zip":
            target = folder / f"{_entry_like_id(seed, n)}.zip"
            with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
                for name in sorted(files):
                    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    zf.writestr(info, files[name])
        else:
            for name, data in files.items():
                (folder / name).write_bytes(data)
        paths.append(folder)
    return paths
