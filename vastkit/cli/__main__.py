"""``python -m vastkit.cli``: the same as the ``vastkit`` command."""

from __future__ import annotations

import sys

from vastkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
