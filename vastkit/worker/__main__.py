"""``python -m vastkit.worker``: run one attempt of a job (see :mod:`vastkit.worker`)."""

from __future__ import annotations

from vastkit.worker._runtime import main

if __name__ == "__main__":
    raise SystemExit(main())
