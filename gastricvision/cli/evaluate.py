"""``gastricvision evaluate``: measure a model on the held-out split of its data."""

from __future__ import annotations

import json

from .common import add_weights_option

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece_before_temperature", "ece_after_temperature")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="metrics of a model on the held-out split of its training data",
        description="Rebuild the split recorded in the model's manifest (same class map, seed and "
        "fractions) over the given folders and score its tiles as `predict` does.",
    )
    parser.add_argument("--model", required=True, metavar="NAME", help="model name (binary, student, tissue, autoencoder, unet)")
    parser.add_argument("--data", action="append", metavar="ROOT", help="dataset folder (default: the folders in the manifest); repeatable")
    parser.add_argument("--split", choices=("test", "val", "train", "all"), default="test", help="split to score (default test)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--update-manifest", action="store_true",
                        help="recompute the manifest's metrics, temperature and anomaly reference on the rebuilt "
                             "splits and write them (the weights are not changed)")
    add_weights_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from pathlib import Path

    from ..evaluation import evaluate_loaded
    from ..weights import default_weights_dir, load_model

    weights_dir = Path(args.weights) if args.weights else default_weights_dir()
    if args.update_manifest:
        from ..training.recipes import remeasure_manifest

        remeasure_manifest(weights_dir / args.model, args.data)
        print(f"rewrote the metrics in {weights_dir / args.model / 'manifest.json'}")
    loaded = load_model(weights_dir / args.model)
    report = evaluate_loaded(loaded, args.data, split=args.split)
    recorded = loaded.manifest.metrics.get(args.split, {}) if args.split in ("test", "val") else {}

    if args.json:
        print(json.dumps({"model": args.model, "split": args.split, "report": report, "manifest": recorded}, indent=2))
        return 0

    print(f"{args.model} ({loaded.manifest.architecture}) on the {args.split} split: {report['count']} tiles")
    if loaded.manifest.task == "reconstruction":
        print(f"  mean error  {report['mean_error']:.4f}" + _compare(report["mean_error"], recorded.get("mean_error")))
        for name, value in report["error_per_class"].items():
            print(f"    {name:<14} {value:.4f}  ({report['count_per_class'][name]} tiles)")
        return 0

    for key in HEADLINE:
        value = report.get(key)
        if value is not None:
            print(f"  {key:<24} {value:.4f}" + _compare(value, recorded.get(key)))
    print("  per class (precision / recall / F1, support):")
    for name, row in report["per_class"].items():
        print(f"    {name:<10} {row['precision']:.3f} / {row['recall']:.3f} / {row['f1']:.3f}  ({row['support']})")
    print("  confusion matrix (rows: true, columns: predicted; " + ", ".join(loaded.manifest.classes) + "):")
    for row in report["confusion_matrix"]:
        print("    " + " ".join(f"{v:>5}" for v in row))
    return 0


def _compare(value: float, recorded) -> str:
    if not isinstance(recorded, (int, float)):
        return ""
    return "  (manifest: same)" if abs(value - recorded) < 1e-6 else f"  (manifest: {recorded:.4f})"
