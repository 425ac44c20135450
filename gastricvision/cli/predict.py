"""``gastricvision predict``: score tiles with every model that has weights."""

from __future__ import annotations

import json
import sys

from . import EXIT_BAD_INPUT, EXIT_OK
from ..modelcards import is_stand_in, ordinal
from .common import add_weights_option, expand_paths, print_error


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score tiles with every model that has weights",
        description="Score image files (or every image under a folder) with each available model.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--json", action="store_true", help="print one JSON object per tile (JSON Lines)")
    parser.add_argument("--models", metavar="NAMES", help="comma-separated models to run (default: all)")
    parser.add_argument("--batch-tiles", type=int, default=32, metavar="N", help="tiles batched together (default 32)")
    add_weights_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..inference import Predictor

    files, problems = expand_paths(args.paths)
    for message in problems:
        print_error(message)

    models = [name.strip() for name in args.models.split(",")] if args.models else None
    predictor = Predictor(args.weights, models)
    for name, reason in predictor.unavailable.items():
        print(f"note: model {name} not available: {reason}", file=sys.stderr)
    stand_ins = [name for name, model in predictor.models.items() if is_stand_in(model.manifest)]
    if stand_ins:
        print(
            f"note: {', '.join(stand_ins)} were trained on stand-in data, not GasHisSDB or GCHTID; "
            "their outputs say little about gastric tissue (gastricvision info shows the data).",
            file=sys.stderr,
        )

    status = EXIT_BAD_INPUT if problems else EXIT_OK
    for result in predictor.predict_many(files, batch_tiles=args.batch_tiles):
        if not result.ok:
            print_error(result.error)
            status = EXIT_BAD_INPUT
            continue
        if args.json:
            print(json.dumps(result.to_dict()), flush=True)
        else:
            print(format_result(result), flush=True)
    return status


def format_result(result) -> str:
    lines = [f"{result.name} ({result.width}x{result.height} px)"]
    for key in ("binary", "student"):
        output = getattr(result, key)
        if output:
            abnormal = output.probabilities.get("Abnormal")
            detail = f"P(Abnormal) = {abnormal:.3f}" if abnormal is not None else ""
            lines.append(f"  {key:<12} {output.label:<9} {detail}")
    if result.tissue:
        top = sorted(result.tissue.probabilities.items(), key=lambda kv: -kv[1])[:3]
        lines.append("  tissue       " + ", ".join(f"{name} {p:.2f}" for name, p in top))
    for name, output in result.reconstruction.items():
        percentile = f" ({ordinal(output.percentile)} percentile of training tiles)" if output.percentile is not None else ""
        lines.append(f"  {name:<12} error {output.error:.4f}{percentile}")
    for warning in result.warnings:
        lines.append(f"  warning [{warning.code}]: {warning.message}")
    return "\n".join(lines)
