"""The ``gastricvision`` command line.

Each sub-command lives in its own module with a ``register(subparsers)`` function.
Exit status: 0 on success, 2 when any input was rejected (a bad file, folder or
option), 1 on an internal error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..errors import GastricVisionError

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "EXIT_OK", "main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2

logger = logging.getLogger("gastricvision.cli")

COMMAND_MODULES = ("predict", "info", "data", "train", "evaluate", "explain")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="gastricvision",
        description="Review gastric H&E tiles with several neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v info, -vv debug)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    import importlib

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{module_name}":
                raise
            continue
        module.register(subparsers)
    return parser


def configure_logging(verbosity: int) -> None:
    levels = {0: logging.WARNING, 1: logging.INFO}
    level = levels.get(verbosity, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        return int(args.handler(args) or EXIT_OK)
    except GastricVisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # A bug: one line, or the traceback with --debug.
        if args.debug:
            raise
        logger.debug("internal error", exc_info=True)
        print(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback "
            "and report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
