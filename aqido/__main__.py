"""``python -m aqido``: the aqido command line (see :mod:`aqido.cli`)."""

from __future__ import annotations

import sys

from aqido.cli import main

if __name__ == "__main__":
    sys.exit(main())
