"""Sample calculation files: heads of real code outputs, trimmed to what matchers read."""

from __future__ import annotations

import bz2
import gzip

AIMS_OUT = """\
------------------------------------------------------------
          Invoking FHI-aims ...

  When using FHI-aims, please cite the following reference:

  Volker Blum, Ralf Gehrke, Felix Hanke, Paula Havu,
  Ville Havu, Xinguo Ren, Karsten Reuter, and Matthias Scheffler,
  'Ab Initio Molecular Simulations with Numeric Atom-Centered Orbitals',
  Computer Physics Communications 180, 2175-2196 (2009)
------------------------------------------------------------

  FHI-aims version      : 240101
  Using        1 parallel tasks.

          Have a nice day.
------------------------------------------------------------
"""

CONTROL_IN = "# minimal control.in\nxc pbe\nrelativistic atomic_zora scalar\n"
GEOMETRY_IN = "atom 0.0 0.0 0.0 O\natom 0.0 0.76 0.59 H\natom 0.0 -0.76 0.59 H\n"

VASPRUN_XML = """\
<?xml version="1.0" encoding="ISO-8859-1"?>
<modeling>
 <generator>
  <i name="program" type="string">vasp </i>
  <i name="version" type="string">6.3.0  </i>
 </generator>
 <incar>
  <i type="string" name="SYSTEM">H2O</i>
 </incar>
</modeling>
"""

OUTCAR = """\
 vasp.6.3.0 18Jan22 (build Mar 24 2022 11:08:12) complex

 executed on             LinuxIFC date 2024.01.01  12:00:00
 running on    1 total cores
"""

QE_OUT = """\

     Program PWSCF v.7.2 starts on  1Jan2024 at 12: 0: 0

     This program is part of the open-source Quantum ESPRESSO suite
"""

EXCITING_INFO = """\
================================================================================
| EXCITING NITROGEN-14 started                                                 |
================================================================================

All units are atomic (Hartree, Bohr, etc.)
"""

ARCHIVE_JSON = '{"data": {"m_def": "nomad.datamodel.data.EntryData"}}\n'


def gz(text: str) -> bytes:
    """Gzip ``text`` deterministically (no name, no timestamp)."""
    return gzip.compress(text.encode(), mtime=0)


def bz(text: str) -> bytes:
    """Bzip2 ``text``."""
    return bz2.compress(text.encode())


#: path inside an upload → (content, parser NOMAD picks or None). Checked against NOMAD 2.0.
CORPUS: dict[str, tuple[bytes, str | None]] = {
    "aims/aims.out": (AIMS_OUT.encode(), "parsers/fhi-aims"),
    "aims/control.in": (CONTROL_IN.encode(), None),
    "aims/geometry.in": (GEOMETRY_IN.encode(), None),
    "aims-any-name/run.log": (AIMS_OUT.encode(), "parsers/fhi-aims"),
    "aims-hidden/.aims.out": (AIMS_OUT.encode(), None),
    "aims-tilde/~aims.out": (AIMS_OUT.encode(), None),
    "aims-midline/aims.out": (b"log: Invoking FHI-aims ...\n", None),
    "aims-nul-end/aims.out": (AIMS_OUT.encode() + b"\0\0\0", "parsers/fhi-aims"),
    "aims-nul/aims.out": (
        AIMS_OUT.encode()[:200] + b"\0" + AIMS_OUT.encode()[200:],
        "parsers/fhi-aims",
    ),
    "aims-esc/aims.out": (
        AIMS_OUT.encode()[:200] + b"\x1b" + AIMS_OUT.encode()[200:],
        "parsers/fhi-aims",
    ),
    "aims-del/aims.out": (
        AIMS_OUT.encode()[:200] + b"\x7f" + AIMS_OUT.encode()[200:],
        "parsers/fhi-aims",
    ),
    # The 12,000-byte cut splits the last character: Latin-1 when it is the only
    # non-ASCII byte, nothing when other UTF-8 text precedes it (libmagic's verdicts).
    "aims-cut/aims.out": (
        (AIMS_OUT + " " * (11999 - len(AIMS_OUT)) + "é").encode(),
        "parsers/fhi-aims",
    ),
    "aims-cut-utf8/aims.out": (
        ("é\n" + AIMS_OUT + " " * (11999 - 3 - len(AIMS_OUT)) + "é").encode(),
        None,
    ),
    "aims-latin1/aims.out": (("Caf\xe9\n" + AIMS_OUT).encode("latin-1"), "parsers/fhi-aims"),
    "aims-gz/aims.out.gz": (gz(AIMS_OUT), None),
    "aims-late/aims.out": (((" " * 79 + "\n") * 160 + AIMS_OUT).encode(), None),
    "vasp/vasprun.xml": (VASPRUN_XML.encode(), "parsers/vasp"),
    "vasp/OUTCAR": (OUTCAR.encode(), None),
    "vasp/INCAR": (b"SYSTEM = H2O\nENCUT = 400\n", None),
    "vasp-outcar/OUTCAR": (OUTCAR.encode(), "parsers/vasp"),
    "vasp-alt1/OUTCAR": (OUTCAR.encode(), None),
    "vasp-alt1/notes.xml": (b'<?xml version="1.0"?>\n<notes/>\n', None),
    "vasp-alt2/OUTCAR": (OUTCAR.encode(), "parsers/vasp"),
    "vasp-alt2/notes.xml": (b'<?xml version="1.0"?>\n<notes/>\n', None),
    "vasp-alt2/notes.txt": (b"some notes\n", None),
    "vasp-alt3/OUTCAR": (OUTCAR.encode(), None),
    "vasp-alt3/OUTCAR.xml": (b'<?xml version="1.0"?>\n<notes/>\n', None),
    "vasp-gz/vasprun.xml.gz": (gz(VASPRUN_XML), "parsers/vasp"),
    "vasp-notvasp/vasprun.xml": (b'<?xml version="1.0"?>\n<root/>\n', None),
    "qe/pw.out": (QE_OUT.encode(), "parsers/quantumespresso"),
    "qe-bz2/pw.out.bz2": (bz(QE_OUT), "parsers/quantumespresso"),
    "exciting/INFO.OUT": (EXCITING_INFO.encode(), "parsers/exciting"),
    "exciting-alt/info.txt": (EXCITING_INFO.encode(), "parsers/exciting"),
    "archive/sample.archive.json": (ARCHIVE_JSON.encode(), "parsers/archive"),
}
