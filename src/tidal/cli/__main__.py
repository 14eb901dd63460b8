"""``python -m tidal.cli``: the same as ``tidal``."""

from tidal.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
