"""``python -m tidal``: the same as the ``tidal`` command."""

from tidal.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
