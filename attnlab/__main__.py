"""``python -m attnlab ...``: the command line, also as ``torchrun -m attnlab train ...``."""

import sys

from attnlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
