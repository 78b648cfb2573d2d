"""The ``litserve`` command: ``litserve serve module:attr`` and ``litserve dockerize server.py``.

Also ``python -m litserve``. Each subcommand lives in a module of its own; this one only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from . import dockerize, serve

__all__ = ("main",)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="litserve",
        description="Serve a LitAPI over HTTP, or write a Dockerfile for a server file.",
    )
    # which project answers matters: Lightning's LitServe is imported as `litserve` too
    where = Path(__file__).resolve().parents[1]
    parser.add_argument(
        "--version", action="version", version=f"litserve-zmq {__version__} (imported as litserve from {where})"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.add_parser(sub)
    dockerize.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (also used as the console script's)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.run(args, parser)
    return status


if __name__ == "__main__":
    sys.exit(main())
