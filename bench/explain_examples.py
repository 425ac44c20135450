"""Faithfulness and randomisation figures of class activation maps on real tiles.

Run from the repository root, e.g.:

    .venv/bin/python bench/explain_examples.py --models binary,tissue \\
        ../shared/data/gashissdb/160/Abnormal/Abnormal-00051.png ...

For each tile and classifier it prints the predicted class, the ROAD faithfulness score
of the Grad-CAM map next to the mean score of random maps of the same tile, and the rank
correlation between the map of the trained model and that of the same network with
random weights. These are the figures the app's review and teaching pages show.
"""

from __future__ import annotations

import argparse
import math
import sys

from gastricvision.explain import compute_cam, faithfulness, randomisation_check
from gastricvision.imaging import load_image
from gastricvision.weights import load_all


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tiles", nargs="+", help="image files")
    parser.add_argument("--models", default="binary,tissue", help="comma-separated classifiers (default binary,tissue)")
    parser.add_argument("--method", default="gradcam", help="CAM method (default gradcam)")
    parser.add_argument("--weights", default=None, help="weights folder (default: the project's weights/)")
    args = parser.parse_args(argv)

    loaded, unavailable = load_all(args.weights, args.models.split(","))
    for name, reason in unavailable.items():
        print(f"{name} not available: {reason}", file=sys.stderr)

    print("tile | model | predicted (p) | ROAD score | random maps | better than random | rank correlation with random weights")
    for path in args.tiles:
        image = load_image(path)
        for name, model in loaded.items():
            cam = compute_cam(model, image, method=args.method)
            road = faithfulness(model, image, cam)
            sanity = randomisation_check(model, image, method=args.method)
            correlation = "undefined (a map is flat)" if math.isnan(sanity.rank_correlation) else f"{sanity.rank_correlation:.2f}"
            print(
                f"{image.name} | {name} | {cam.predicted_class} ({cam.target_probability:.2f}) | {road.score:.3f} | "
                f"{road.random_baseline:.3f} | {'yes' if road.better_than_random else 'no'} | {correlation}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
