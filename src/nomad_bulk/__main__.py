"""Run the command line: ``python -m nomad_bulk``."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
