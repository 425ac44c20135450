"""``gastricvision train RECIPE``: train one model and export its weights folder."""

from __future__ import annotations

import logging


def register(subparsers) -> None:
    from ..training import build_parser
    from ..training.recipes import RECIPES, add_arguments

    parser = subparsers.add_parser(
        "train",
        help="train a model (binary, tissue, distill, autoencoder, unet)",
        description="Train one model; see `gastricvision train RECIPE --help` for its options.",
    )
    recipes = parser.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    for name, recipe in RECIPES.items():
        sub = recipes.add_parser(name, help=f"train the {recipe.model_name} model", description=build_parser(name).description)
        add_arguments(sub, recipe)
        sub.set_defaults(handler=run)


def run(args) -> int:
    import sys

    from ..training.recipes import RECIPES, run_recipe

    if args.verbose == 0:
        # Training is long: progress lines are the point, so INFO is the floor here.
        logging.getLogger().setLevel(logging.INFO)
    argv = sys.argv[sys.argv.index(args.recipe) + 1 :] if args.recipe in sys.argv else []
    metrics = run_recipe(RECIPES[args.recipe], args, argv)
    if metrics:
        print(f"weights written to {metrics['export']}")
    return 0
