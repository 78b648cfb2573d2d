"""``python -m litserve``: the ``litserve`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # workers are spawned and import the main module again: they must not serve
    sys.exit(main())
