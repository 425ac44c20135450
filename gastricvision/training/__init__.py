"""Training: data pipeline, shared loop, checkpoints and the per-model recipes.

Entry points are ``gastricvision train <recipe>`` and the scripts in ``train/``, both of
which call :func:`main`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

__all__ = ["main"]


def build_parser(command: str) -> argparse.ArgumentParser:
    from .recipes import RECIPES, add_arguments

    recipe = RECIPES[command]
    parser = argparse.ArgumentParser(
        prog=f"gastricvision train {command}",
        description=f"Train the {recipe.model_name} model and export weights with a manifest.",
    )
    add_arguments(parser, recipe)
    return parser


def main(command: str, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` for recipe ``command``, train, and print where the weights went."""
    from ..errors import GastricVisionError
    from .recipes import RECIPES, run_recipe

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(command).parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        metrics = run_recipe(RECIPES[command], args, argv)
    except GastricVisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if metrics:
        print(f"weights written to {metrics['export']}")
    return 0
