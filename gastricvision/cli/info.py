"""``gastricvision info``: list the models, their manifests and library versions."""

from __future__ import annotations

import json

from .common import add_weights_option


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", help="list models, their manifests and versions")
    parser.add_argument("--json", action="store_true", help="print the manifests as JSON")
    add_weights_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..errors import ModelUnavailableError, WeightsError
    from ..models import MODEL_SPECS
    from ..weights import default_weights_dir, library_versions, load_model
    from pathlib import Path

    weights_dir = Path(args.weights) if args.weights else default_weights_dir()
    report = {"weights_dir": str(weights_dir), "versions": library_versions(), "models": {}}
    for name, spec in MODEL_SPECS.items():
        entry = {"description": spec.description, "task": spec.task}
        try:
            manifest = load_model(weights_dir / name).manifest
        except ModelUnavailableError as exc:
            entry.update(status="missing", reason=str(exc))
        except WeightsError as exc:
            entry.update(status="rejected", reason=str(exc))
        else:
            entry.update(status="loaded", manifest=manifest.to_dict())
        report["models"][name] = entry

    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    print(f"weights: {weights_dir}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    for name, entry in report["models"].items():
        if entry["status"] != "loaded":
            print(f"{name:<12} {entry['status']}: {entry['reason']}")
            continue
        manifest = entry["manifest"]
        training = manifest.get("training", {})
        data = ", ".join(training.get("datasets", [])) or "unknown data"
        metrics = manifest.get("metrics", {}).get("test", {})
        headline = ", ".join(
            f"{key} {metrics[key]:.3f}" for key in ("accuracy", "balanced_accuracy", "macro_f1", "auroc") if isinstance(metrics.get(key), (int, float))
        )
        print(
            f"{name:<12} {manifest['architecture']} | classes {', '.join(manifest['classes']) or '-'} | "
            f"{manifest['tile_size']} px tiles, input {manifest['input_size']} px | sha256 {manifest['sha256'][:12]}"
        )
        print(f"{'':<12} trained on {data}" + (f" | test {headline}" if headline else ""))
        note = training.get("data_note")
        if note:
            print(f"{'':<12} note: {note}")
    return 0
