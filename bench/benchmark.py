"""Measure GastricVision's inference paths against the limits the models set.

Run from the repository root:

    .venv/bin/python bench/benchmark.py --tiles ../shared/data/gashissdb/160

It prints, in one run:

1. per-model forward latency for one tile and throughput at the best batch size, under
   ``torch.inference_mode`` (the U-Net's forward is its four masked passes, which is what
   scoring needs);
2. the review panel of one tile (every model's output, both reconstruction maps and
   Grad-CAM for the binary and tissue models): the first call after loading, then
   warm p50/p95, against the sum of the raw forward and backward times it needs;
3. folder scoring throughput, decoding included, as a ratio of the limit the forward
   passes allow (one over the per-tile sum of the forward times, at the best batch size,
   for the views each model needs of these tiles). The speed of a shared CPU drifts by
   tens of percent over minutes, so the folder is scored in several rounds, each right
   after the limit is re-measured, and the median round is reported;
4. a naive baseline (models reloaded for every tile, one tile at a time, Pillow decoding
   in the loop) and the folder scoring gain over it;
5. the peak resident memory of each path, sampled every 10 ms.

``--json FILE`` also writes every figure for the records in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import psutil
import torch

from gastricvision.imaging import IMAGE_SUFFIXES, load_image
from gastricvision.inference import Predictor
from gastricvision.preprocessing import normalise, to_float_tensor
from gastricvision.reconstruction import reconstruct
from gastricvision.weights import default_weights_dir, load_all

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


# --------------------------------------------------------------------------- helpers


class PeakMemory:
    """Peak resident set size of this process while the block runs, in MiB."""

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        self.process = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def peak_mib(self) -> float:
        return self.peak / 2**20


def timed(function, repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def list_tiles(folder: Path) -> list[Path]:
    tiles = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not tiles:
        sys.exit(f"error: no image files under {folder}")
    return tiles


# --------------------------------------------------------------------------- sections


@torch.inference_mode()
def forward_one(model, batch: torch.Tensor) -> None:
    manifest = model.manifest
    if manifest.task == "reconstruction":
        reconstruct(model.module, batch)
    else:
        model.module(normalise(batch, manifest.mean, manifest.std))


def measure_forward(predictor: Predictor, tile_array: np.ndarray, repeats: int) -> dict:
    """Per-view time at every batch size; views per tile for this tile size."""
    from gastricvision.imaging import LoadedImage

    image = LoadedImage(tile_array, "bench", "PNG", "RGB", "0" * 64)
    figures = {}
    for name, model in predictor.models.items():
        plan = predictor.plan(image, model)
        view = to_float_tensor(plan.views[:1])
        rows = {}
        for batch_size in BATCH_SIZES:
            batch = view.repeat(batch_size, 1, 1, 1).contiguous(memory_format=torch.channels_last)
            times = timed(lambda: forward_one(model, batch), repeats)
            rows[batch_size] = statistics.median(times) / batch_size
        best = min(rows, key=rows.get)
        figures[name] = {
            "views_per_tile": len(plan.views),
            "latency_one_view_ms": rows[1] * 1000,
            "best_batch": best,
            "per_view_at_best_ms": rows[best] * 1000,
            "throughput_views_per_s": 1.0 / rows[best],
            "per_batch_ms": {b: t * 1000 for b, t in rows.items()},
        }
    return figures


def measure_limit(predictor: Predictor, tile_array: np.ndarray, forward: dict, repeats: int) -> float:
    """Re-measure the forward-pass limit (ms per tile) at each model's best batch size."""
    from gastricvision.imaging import LoadedImage

    image = LoadedImage(tile_array, "bench", "PNG", "RGB", "0" * 64)
    total = 0.0
    for name, model in predictor.models.items():
        plan = predictor.plan(image, model)
        best = forward[name]["best_batch"]
        batch = to_float_tensor(plan.views[:1]).repeat(best, 1, 1, 1).contiguous(memory_format=torch.channels_last)
        per_view = statistics.median(timed(lambda: forward_one(model, batch), repeats)) / best
        total += len(plan.views) * per_view * 1000
    return total


def measure_folder(predictor: Predictor, paths: list[Path], batch_tiles: int) -> dict:
    with PeakMemory() as memory:
        start = time.perf_counter()
        results = list(predictor.predict_many(paths, batch_tiles=batch_tiles))
        seconds = time.perf_counter() - start
    failed = [r.name for r in results if not r.ok]
    return {"tiles": len(paths), "seconds": seconds, "tiles_per_s": len(paths) / seconds, "failed": failed, "peak_rss_mib": memory.peak_mib}


def measure_naive(weights_dir: Path, paths: list[Path]) -> dict:
    """Models reloaded per tile, one tile at a time, Pillow decoding in the loop."""
    from PIL import Image

    from gastricvision.imaging import LoadedImage

    with PeakMemory() as memory:
        start = time.perf_counter()
        for path in paths:
            loaded, unavailable = load_all(weights_dir)
            with Image.open(path) as image:
                array = np.asarray(image.convert("RGB"))
            predictor = Predictor(loaded=loaded, unavailable=unavailable)
            predictor.predict_image(LoadedImage(array, str(path), "PNG", "RGB", ""))
        seconds = time.perf_counter() - start
    return {"tiles": len(paths), "seconds": seconds, "tiles_per_s": len(paths) / seconds, "peak_rss_mib": memory.peak_mib}


def measure_panel(predictor: Predictor, paths: list[Path], repeats: int, forward: dict) -> dict | None:
    """Everything the review page computes for one tile."""
    try:
        from gastricvision.explain import compute_cam
    except ImportError:
        return None

    classifiers = [n for n in ("binary", "tissue") if n in predictor.models]
    reconstructors = [n for n, m in predictor.models.items() if m.manifest.task == "reconstruction"]

    def panel(path: Path) -> None:
        # As the review page does: one scoring pass that keeps the reconstruction maps,
        # then maps for the predicted classes, reusing the probabilities already computed.
        image = load_image(path)
        result = predictor.predict_image(image, with_maps=True)
        assert set(result.maps) == set(reconstructors)
        for name in classifiers:
            compute_cam(predictor.models[name], image, method="gradcam", probabilities=getattr(result, name).probabilities)

    with PeakMemory() as memory:
        start = time.perf_counter()
        panel(paths[0])
        cold = time.perf_counter() - start
        warm = []
        for i in range(repeats):
            path = paths[(i + 1) % len(paths)]
            start = time.perf_counter()
            panel(path)
            warm.append(time.perf_counter() - start)

    budget = raw_panel_seconds(predictor, paths[0], forward, classifiers)
    p50 = percentile(warm, 50)
    return {
        "cold_s": cold,
        "warm_p50_s": p50,
        "warm_p95_s": percentile(warm, 95),
        "raw_forward_backward_s": budget,
        "ratio_p50_to_raw": p50 / budget,
        "peak_rss_mib": memory.peak_mib,
    }


def raw_panel_seconds(predictor: Predictor, path: Path, forward: dict, classifiers: list[str]) -> float:
    """Forward of every model for the views of one tile at batch 1 (the panel scores one
    tile), plus forward and backward of each CAM model."""
    image = load_image(path)
    total = 0.0
    for name, model in predictor.models.items():
        plan = predictor.plan(image, model)
        batch = to_float_tensor(plan.views)
        total += statistics.median(timed(lambda: forward_one(model, batch), 5))
    for name in classifiers:
        model = predictor.models[name]
        plan = predictor.plan(image, model)
        batch = normalise(to_float_tensor(plan.views), model.manifest.mean, model.manifest.std)

        def forward_backward() -> None:
            with torch.enable_grad():
                inputs = batch.clone().requires_grad_(True)
                logits = model.module(inputs)
                logits[:, 0].sum().backward()

        total += statistics.median(timed(forward_backward, 5))
    return total


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", required=True, type=Path, help="folder of tiles to score (searched recursively)")
    parser.add_argument("--weights", type=Path, default=None, help="weights folder (default: the project's weights/)")
    parser.add_argument("--folder-tiles", type=int, default=256, help="tiles scored in the folder run (files repeat as needed)")
    parser.add_argument("--naive-tiles", type=int, default=8, help="tiles scored by the naive baseline")
    parser.add_argument("--batch-tiles", type=int, default=32, help="tiles batched by the predictor")
    parser.add_argument("--repeats", type=int, default=10, help="repeats per timing")
    parser.add_argument("--rounds", type=int, default=3, help="folder runs, each against a fresh limit; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    weights_dir = args.weights or default_weights_dir()
    tiles = list_tiles(args.tiles)
    folder_paths = [tiles[i % len(tiles)] for i in range(args.folder_tiles)]
    machine = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": "cpu",  # NOTE: the benchmark measures the CPU path only.
        "tile": f"{tiles[0].name} {load_image(tiles[0]).width}x{load_image(tiles[0]).height} px",
    }
    print("machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()))

    start = time.perf_counter()
    with PeakMemory() as load_memory:
        predictor = Predictor(weights_dir)
    print(f"models loaded in {time.perf_counter() - start:.2f} s: {', '.join(predictor.models)} (peak RSS {load_memory.peak_mib:.0f} MiB)")
    for name, reason in predictor.unavailable.items():
        print(f"  {name} not available: {reason}")

    print("\n1. forward passes (torch.inference_mode)")
    forward = measure_forward(predictor, load_image(tiles[0]).array, args.repeats)
    per_tile_limit = 0.0
    for name, row in forward.items():
        per_tile = row["views_per_tile"] * row["per_view_at_best_ms"]
        per_tile_limit += per_tile
        print(
            f"  {name:<12} one view {row['latency_one_view_ms']:7.1f} ms | best batch {row['best_batch']:>2}: "
            f"{row['per_view_at_best_ms']:6.2f} ms/view, {row['throughput_views_per_s']:7.1f} views/s | "
            f"{row['views_per_tile']} views per tile = {per_tile:6.1f} ms"
        )
    limit_tiles_per_s = 1000.0 / per_tile_limit
    print(f"  limit: {per_tile_limit:.1f} ms of forward passes per tile = {limit_tiles_per_s:.2f} tiles/s")

    print("\n2. review panel (one tile: all outputs, both reconstruction maps, Grad-CAM for binary and tissue)")
    panel = measure_panel(predictor, tiles, args.repeats, forward)
    if panel is None:
        print("  skipped: gastricvision.explain is not available")
    else:
        print(
            f"  cold {panel['cold_s'] * 1000:.0f} ms | warm p50 {panel['warm_p50_s'] * 1000:.0f} ms, "
            f"p95 {panel['warm_p95_s'] * 1000:.0f} ms | raw forward+backward {panel['raw_forward_backward_s'] * 1000:.0f} ms | "
            f"p50 / raw = {panel['ratio_p50_to_raw']:.2f} (target <= 1.5) | peak RSS {panel['peak_rss_mib']:.0f} MiB"
        )

    print(
        f"\n3. folder scoring ({args.folder_tiles} tiles, decoding included, {args.batch_tiles} tiles per batch; "
        f"{args.rounds} rounds, each against the limit re-measured just before it)"
    )
    rounds = []
    for number in range(args.rounds):
        round_limit_ms = per_tile_limit if number == 0 else measure_limit(predictor, load_image(tiles[0]).array, forward, args.repeats)
        run = measure_folder(predictor, folder_paths, args.batch_tiles)
        run["limit_tiles_per_s"] = 1000.0 / round_limit_ms
        run["ratio_to_limit"] = run["tiles_per_s"] / run["limit_tiles_per_s"]
        rounds.append(run)
        print(
            f"  round {number + 1}: {run['tiles_per_s']:.2f} tiles/s, limit {run['limit_tiles_per_s']:.2f} tiles/s, "
            f"ratio {run['ratio_to_limit']:.2f} | peak RSS {run['peak_rss_mib']:.0f} MiB"
        )
    folder = dict(sorted(rounds, key=lambda run: run["ratio_to_limit"])[len(rounds) // 2])
    folder["rounds"] = rounds
    print(
        f"  median round: {folder['tiles_per_s']:.2f} tiles/s = {folder['ratio_to_limit']:.2f} of the forward-pass limit "
        f"(target >= 0.9)"
    )

    print(f"\n4. naive baseline ({args.naive_tiles} tiles: models reloaded per tile, one at a time)")
    naive = measure_naive(weights_dir, folder_paths[: args.naive_tiles])
    gain = folder["tiles_per_s"] / naive["tiles_per_s"]
    print(f"  {naive['tiles_per_s']:.2f} tiles/s | folder scoring is {gain:.1f}x faster (target >= 5) | peak RSS {naive['peak_rss_mib']:.0f} MiB")

    if args.json:
        record = {
            "machine": machine, "forward": forward, "limit_tiles_per_s": limit_tiles_per_s, "panel": panel,
            "folder": folder, "naive": naive, "gain_over_naive": gain, "load_peak_rss_mib": load_memory.peak_mib,
        }
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
