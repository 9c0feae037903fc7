"""``python -m flexframe``: the ``flexframe`` command (see :mod:`flexframe.cli`)."""

from flexframe.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
