"""Helpers shared by the sub-commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterable

from ..imaging import IMAGE_SUFFIXES


def expand_paths(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """Expand folders into the image files under them (sorted, recursive).

    Returns:
        The files to process and one message per path that gave nothing to process.
    """
    files: list[str] = []
    problems: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
            )
            if not found:
                problems.append(f"{raw}: folder holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).")
            files.extend(found)
        else:
            # Files (and missing paths) go to the loader, which names the problem.
            files.append(raw)
    return files, problems


def print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def add_weights_option(parser) -> None:
    parser.add_argument(
        "--weights",
        metavar="DIR",
        default=os.environ.get("GASTRICVISION_WEIGHTS"),
        help="folder with one sub-folder per model (default: $GASTRICVISION_WEIGHTS or the project's weights/)",
    )
