"""``gastricvision explain``: write class activation maps or reconstruction error maps.

For a classifier, each tile gives ``<stem>.<model>.<method>.overlay.png`` (the map over
the tile), ``.map.npy`` (the raw float32 map in [0, 1]) and ``.mask.png`` (the thresholded
region). For the autoencoder or U-Net it gives ``<stem>.<model>.reconstruction.png``,
``.l1.npy`` and ``.ssim.npy`` (the error maps) and ``.l1.png`` (the L1 error over the
tile).
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import EXIT_BAD_INPUT, EXIT_OK
from ..modelcards import ordinal
from .common import add_weights_option, expand_paths, print_error


def register(subparsers) -> None:
    from ..explain import CAM_METHODS, COLORMAPS
    from ..models import MODEL_SPECS

    parser = subparsers.add_parser(
        "explain",
        help="write class activation maps or reconstruction error maps",
        description="Explain one model's output for image files (or every image under a folder): "
        "a class activation map for a classifier, the reconstruction and its error maps for "
        "the autoencoder or U-Net.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    parser.add_argument("--model", required=True, choices=list(MODEL_SPECS), help="model to explain")
    parser.add_argument(
        "--method",
        choices=list(CAM_METHODS),
        help="CAM method for classifiers (default gradcam; scorecam is slow)",
    )
    parser.add_argument(
        "--target",
        metavar="CLASS",
        help="class name or logit index to explain (default: the predicted class)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder, created if missing")
    parser.add_argument(
        "--score",
        action="store_true",
        help="also print the ROAD faithfulness score against random maps (seconds per tile)",
    )
    parser.add_argument("--colormap", default="jet", choices=COLORMAPS, help="overlay colormap (default jet)")
    parser.add_argument(
        "--opacity", type=float, default=0.5, metavar="A", help="overlay colour weight from 0 to 1 (default 0.5)"
    )
    parser.add_argument(
        "--threshold",
        default="otsu",
        choices=("otsu", "percentile"),
        help="how the mask threshold is chosen (default otsu)",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=80.0,
        metavar="P",
        help="map percentile used as the threshold with --threshold percentile (default 80)",
    )
    add_weights_option(parser)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from ..errors import ImageError
    from ..explain import ExplanationError, resolve_target
    from ..imaging import load_image
    from ..weights import default_weights_dir, load_model

    if not 0.0 <= args.opacity <= 1.0:
        raise ExplanationError(f"Invalid --opacity {args.opacity}: use a number from 0 to 1.")
    if not 0.0 <= args.percentile < 100.0:
        raise ExplanationError(f"Invalid --percentile {args.percentile}: use a number from 0 to below 100.")

    weights_dir = Path(args.weights) if args.weights else default_weights_dir()
    model = load_model(weights_dir / args.model)
    target = _parse_target(args.target)
    if model.manifest.task == "reconstruction":
        if args.method or target is not None or args.score:
            print(f"note: --method, --target and --score do not apply to {model.name}; ignored", file=sys.stderr)
    else:
        args.method = args.method or "gradcam"
        if target is not None:
            resolve_target(model, target)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    files, problems = expand_paths(args.paths)
    for message in problems:
        print_error(message)
    status = EXIT_BAD_INPUT if problems else EXIT_OK

    used_stems: dict[str, int] = {}
    for path in files:
        try:
            image = load_image(path)
        except ImageError as exc:
            print_error(str(exc))
            status = EXIT_BAD_INPUT
            continue
        stem = _unique_stem(Path(path).stem, used_stems)
        print(f"{image.name} ({image.width}x{image.height} px)", flush=True)
        if model.manifest.task == "reconstruction":
            _explain_reconstruction(model, image, out, stem, args)
        else:
            _explain_classifier(model, image, out, stem, target, args)
        for warning in image.warnings:
            print(f"  warning [{warning.code}]: {warning.message}")
    return status


def _parse_target(text: str | None) -> str | int | None:
    """Parse ``--target``: digits give a logit index, anything else a class name."""
    if text is None:
        return None
    return int(text) if text.strip().isdigit() else text


def _unique_stem(stem: str, used: dict[str, int]) -> str:
    """Number repeated file stems (``tile``, ``tile-2``...) so that outputs do not collide."""
    count = used.get(stem, 0) + 1
    used[stem] = count
    return stem if count == 1 else f"{stem}-{count}"


def _explain_classifier(model, image, out: Path, stem: str, target, args) -> None:
    import numpy as np
    from PIL import Image

    from ..explain import CAM_METHODS, compute_cam, faithfulness, overlay, save_mask_png, segment_cam

    cam = compute_cam(model, image, method=args.method, target=target)
    mask = segment_cam(cam.map, method=args.threshold, percentile=args.percentile)

    prefix = out / f"{stem}.{model.name}.{args.method}"
    overlay_path = prefix.with_name(prefix.name + ".overlay.png")
    map_path = prefix.with_name(prefix.name + ".map.npy")
    mask_path = prefix.with_name(prefix.name + ".mask.png")
    Image.fromarray(overlay(image.array, cam.map, colormap=args.colormap, opacity=args.opacity)).save(overlay_path)
    np.save(map_path, cam.map)
    save_mask_png(mask, mask_path)

    label = CAM_METHODS[args.method].label
    print(
        f"  {model.name} {label} for {cam.target_class} (p = {cam.target_probability:.3f}; "
        f"predicted {cam.predicted_class})"
    )
    print(f"  mask: {mask.area_fraction:.1%} of the tile above {mask.method} threshold {mask.threshold:.3f}")
    if args.score:
        result = faithfulness(model, image, cam)
        verdict = "better than" if result.better_than_random else "not better than"
        print(
            f"  faithfulness (ROAD): {result.score:.4f}, random maps {result.random_baseline:.4f}: "
            f"{verdict} random"
        )
    for warning in cam.warnings:
        print(f"  warning [{warning.code}]: {warning.message}")
    for path in (overlay_path, map_path, mask_path):
        print(f"  wrote {path}")
    sys.stdout.flush()


def _explain_reconstruction(model, image, out: Path, stem: str, args) -> None:
    import numpy as np
    from PIL import Image

    from ..reconstruction import error_overlay, reconstruction_maps

    maps = reconstruction_maps(model, image)
    prefix = f"{stem}.{model.name}"
    paths = {
        "reconstruction": out / f"{prefix}.reconstruction.png",
        "l1": out / f"{prefix}.l1.npy",
        "ssim": out / f"{prefix}.ssim.npy",
        "l1_overlay": out / f"{prefix}.l1.png",
    }
    Image.fromarray(maps.reconstruction).save(paths["reconstruction"])
    np.save(paths["l1"], maps.l1_map)
    np.save(paths["ssim"], maps.ssim_map)
    colour = error_overlay(image.array, maps.l1_map, colormap=args.colormap, opacity=args.opacity)
    Image.fromarray(colour).save(paths["l1_overlay"])

    percentile = (
        f" ({ordinal(maps.percentile)} percentile of training tiles)" if maps.percentile is not None else ""
    )
    flag = ", unusual" if maps.unusual else ""
    print(f"  {model.name} error {maps.score:.4f}{percentile}{flag}")
    for warning in maps.warnings:
        print(f"  warning [{warning.code}]: {warning.message}")
    for path in paths.values():
        print(f"  wrote {path}")
    sys.stdout.flush()
