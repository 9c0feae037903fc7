"""``python -m flexframe``: the ``flexframe`` command (see :mod:`flexframe.cli`).

Under ``torchrun`` a command that succeeded ends its process through
:func:`flexframe.distributed.exit_process`: gloo can abort a finished CPU worker during
interpreter teardown. A failing one exits as usual, which leaves rank 0 the time to say why
before torchrun stops the other ranks.
"""

from flexframe.cli import main
from flexframe.distributed import exit_process, under_torchrun

if __name__ == "__main__":
    code = main()
    if code == 0 and under_torchrun():
        exit_process(0)
    raise SystemExit(code)
