"""The review of one tile as data: the Normal/Abnormal call, the numbers, the exported panel.

Front ends gather the model outputs for a tile (a
:class:`~gastricvision.inference.TileResult`, reconstruction maps, class activation
maps) and turn it into:

- a call with an uncertainty band (:class:`UncertainBand`): a probability of Abnormal
  between the two limits is reported as ``Uncertain`` rather than forced to a class;
- plain numbers (:func:`review_numbers`), written as JSON or as ``key,value`` CSV rows
  (:func:`numbers_csv`);
- one PNG of the whole panel (:func:`compose_panel`), drawn with Pillow so that it
  looks the same whichever front end asks for it.
"""

from __future__ import annotations

import csv
import io
import math
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import GastricVisionError, TileWarning

if TYPE_CHECKING:
    from .explain import CamResult
    from .inference import TileResult
    from .reconstruction import ReconstructionMaps

__all__ = [
    "ABNORMAL",
    "UNCERTAIN",
    "PanelImage",
    "UncertainBand",
    "compose_panel",
    "flatten_numbers",
    "numbers_csv",
    "result_row",
    "review_numbers",
    "rows_csv",
    "unique_warnings",
]

ABNORMAL = "Abnormal"
UNCERTAIN = "Uncertain"


@dataclass(frozen=True)
class UncertainBand:
    """Probabilities of Abnormal from ``low`` to ``high`` (inclusive) give no call.

    ``UncertainBand(0.5, 0.5)`` reduces the band to the usual 0.5 threshold, where 0.5
    itself is still ``Uncertain``.

    Raises:
        GastricVisionError: Limits outside [0, 1] or ``low > high``.
    """

    low: float = 0.35
    high: float = 0.65

    def __post_init__(self) -> None:
        if not (0.0 <= self.low <= self.high <= 1.0):
            raise GastricVisionError(
                f"Invalid uncertain band {self.low}-{self.high}: use limits from 0 to 1 "
                "with the lower one first."
            )

    def call(self, p_abnormal: float) -> str:
        """``Abnormal`` above ``high``, ``Normal`` below ``low``, ``Uncertain`` between."""
        if p_abnormal > self.high:
            return ABNORMAL
        if p_abnormal < self.low:
            return "Normal"
        return UNCERTAIN


# --------------------------------------------------------------------------- numbers


def unique_warnings(groups: Iterable[Iterable[TileWarning]]) -> list[TileWarning]:
    """Merge warning lists, keeping the first of identical warnings."""
    merged: list[TileWarning] = []
    for group in groups:
        for warning in group:
            if warning not in merged:
                merged.append(warning)
    return merged


def _classifier_numbers(output, band: UncertainBand | None, sha256: str | None) -> dict[str, Any]:
    numbers: dict[str, Any] = {
        "label": output.label,
        "probabilities": {name: float(value) for name, value in output.probabilities.items()},
        "temperature": float(output.temperature),
        "crops_averaged": int(output.views),
    }
    if band is not None and ABNORMAL in output.probabilities:
        p_abnormal = float(output.probabilities[ABNORMAL])
        numbers["p_abnormal"] = p_abnormal
        numbers["call"] = band.call(p_abnormal)
    if sha256:
        numbers["weights_sha256"] = sha256
    return numbers


def review_numbers(
    result: TileResult,
    *,
    band: UncertainBand,
    reconstructions: Mapping[str, ReconstructionMaps] | None = None,
    cams: Sequence[CamResult] = (),
    weights_sha256: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Collect the numbers of one tile's review as JSON-ready values.

    Args:
        result: The Predictor's result for the tile.
        band: Uncertain band for the Normal/Abnormal calls.
        reconstructions: Reconstruction maps per model, when computed.
        cams: Class activation maps shown for the tile.
        weights_sha256: sha256 of each model's weights, recorded for reproducibility.

    Raises:
        GastricVisionError: ``result`` is a rejected tile.
    """
    if not result.ok:
        raise GastricVisionError(result.error or f"{result.name} could not be scored.")
    hashes = dict(weights_sha256 or {})
    numbers: dict[str, Any] = {
        "tile": {"name": result.name, "sha256": result.sha256, "width": result.width, "height": result.height},
        "uncertain_band": {"low": band.low, "high": band.high},
    }
    for key in ("binary", "student"):
        output = getattr(result, key)
        if output is not None:
            numbers[key] = _classifier_numbers(output, band, hashes.get(key))
    if result.tissue is not None:
        numbers["tissue"] = _classifier_numbers(result.tissue, None, hashes.get("tissue"))

    reconstruction: dict[str, Any] = {}
    for name, output in result.reconstruction.items():
        entry: dict[str, Any] = {"score": float(output.error), "percentile": output.percentile}
        maps = (reconstructions or {}).get(name)
        if maps is not None:
            entry["unusual"] = bool(maps.unusual)
            entry["ssim_error_mean"] = float(np.mean(maps.ssim_map))
        if hashes.get(name):
            entry["weights_sha256"] = hashes[name]
        reconstruction[name] = entry
    if reconstruction:
        numbers["reconstruction"] = reconstruction

    numbers["cams"] = [
        {
            "model": cam.model,
            "method": cam.method,
            "target_class": cam.target_class,
            "target_probability": _finite_or_none(cam.target_probability),
            "predicted_class": cam.predicted_class,
        }
        for cam in cams
    ]
    groups = [result.warnings, *((m.warnings for m in (reconstructions or {}).values())), *(c.warnings for c in cams)]
    numbers["warnings"] = [w.to_dict() for w in unique_warnings(groups)]
    numbers["unavailable"] = dict(result.unavailable)
    return numbers


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def flatten_numbers(numbers: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Turn nested numbers into ``(dotted.key, value)`` pairs; list items get their index."""
    pairs: list[tuple[str, Any]] = []
    for key, value in numbers.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            pairs.extend(flatten_numbers(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    pairs.extend(flatten_numbers(item, f"{name}.{index}."))
                else:
                    pairs.append((f"{name}.{index}", item))
        else:
            pairs.append((name, value))
    return pairs


def numbers_csv(numbers: Mapping[str, Any]) -> str:
    """Write the numbers of :func:`review_numbers` as CSV text, one ``key,value`` row each."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["key", "value"])
    for key, value in flatten_numbers(numbers):
        writer.writerow([key, "" if value is None else value])
    return buffer.getvalue()


RECONSTRUCTION_MODELS = ("autoencoder", "unet")


def result_row(result: TileResult, band: UncertainBand, *, true_class: str | None = None) -> dict[str, Any]:
    """Build one table row of a scored tile: calls, probabilities, anomaly scores, warnings.

    Missing models and rejected tiles leave their columns empty (None); a rejected tile
    has its reason in ``error``.
    """
    row: dict[str, Any] = {
        "file": result.name,
        "true_class": true_class,
        "error": result.error,
        "width": result.width or None,
        "height": result.height or None,
    }
    for key in ("binary", "student"):
        output = getattr(result, key)
        p_abnormal = float(output.probabilities[ABNORMAL]) if output and ABNORMAL in output.probabilities else None
        row[f"{key}_p_abnormal"] = p_abnormal
        row[f"{key}_call"] = band.call(p_abnormal) if p_abnormal is not None else None
    tissue = result.tissue
    row["tissue_class"] = tissue.label if tissue else None
    row["tissue_probability"] = float(tissue.probabilities[tissue.label]) if tissue else None
    for name in RECONSTRUCTION_MODELS:
        output = result.reconstruction.get(name)
        row[f"{name}_score"] = float(output.error) if output else None
        row[f"{name}_percentile"] = output.percentile if output else None
    row["warnings"] = " ".join(sorted({w.code for w in result.warnings})) or None
    return row


def rows_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Write :func:`result_row` rows as CSV text, with None as an empty cell."""
    buffer = io.StringIO()
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if value is None else value for key, value in row.items()})
    return buffer.getvalue()


# --------------------------------------------------------------------------- panel PNG


@dataclass
class PanelImage:
    """An image of the exported panel, with its title above and caption below.

    Attributes:
        title: One short line, e.g. ``binary Grad-CAM``.
        array: ``(H, W, 3)`` ``uint8`` RGB.
        caption: One or two short lines of numbers.
    """

    title: str
    array: np.ndarray
    caption: str = ""


PANEL_WIDTH = 1280
MARGIN = 24
THUMB = 200
SECTION_GAP = 16
TEXT = (30, 30, 30)
MUTED = (110, 110, 110)
BAR = (70, 110, 180)
WARN = (150, 80, 0)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _thumbnail(array: np.ndarray, side: int) -> Image.Image:
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # Nearest neighbour keeps the tile's pixels visible when enlarging.
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def _summary_lines(numbers: Mapping[str, Any]) -> list[tuple[str, tuple[int, int, int]]]:
    lines: list[tuple[str, tuple[int, int, int]]] = []
    band = numbers.get("uncertain_band", {})
    for key, title in (("binary", "Cancer (binary model)"), ("student", "Cancer (student model)")):
        entry = numbers.get(key)
        if not entry:
            continue
        if "p_abnormal" in entry:
            lines.append((f"{title}: {entry['call']}", TEXT))
            lines.append(
                (
                    f"  P(Abnormal) = {entry['p_abnormal']:.3f}  (uncertain from "
                    f"{band.get('low', 0):.2f} to {band.get('high', 1):.2f}; T = {entry['temperature']:.2f})",
                    MUTED,
                )
            )
        else:
            lines.append((f"{title}: {entry['label']}", TEXT))
    for name, entry in numbers.get("reconstruction", {}).items():
        percentile = entry.get("percentile")
        rank = f", percentile {percentile:.0f} of training tiles" if percentile is not None else ", no training reference"
        lines.append((f"{name}: anomaly score {entry['score']:.4f}{rank}", TEXT))
    unavailable = numbers.get("unavailable") or {}
    if unavailable:
        lines.append(("Not available: " + ", ".join(sorted(unavailable)), MUTED))
    return lines


def _draw_tissue_bars(draw: ImageDraw.ImageDraw, left: int, top: int, width: int, probabilities: Mapping[str, float]) -> int:
    font = _font(14)
    draw.text((left, top), "Tissue type (tissue model)", fill=TEXT, font=_font(16))
    top += 24
    label_width = 48
    bar_width = width - label_width - 56
    for name, value in probabilities.items():
        draw.text((left, top), name, fill=TEXT, font=font)
        length = max(1, round(bar_width * float(value)))
        draw.rectangle([left + label_width, top + 2, left + label_width + length, top + 14], fill=BAR)
        draw.text((left + label_width + bar_width + 6, top), f"{float(value):.2f}", fill=MUTED, font=font)
        top += 20
    return top


def _wrapped(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=width) or [""]


def compose_panel(
    tile: np.ndarray,
    numbers: Mapping[str, Any],
    sections: Sequence[tuple[str, Sequence[PanelImage]]] = (),
) -> bytes:
    """Draw the review of one tile as one PNG and return its bytes.

    The panel shows the tile enlarged with the calls and scores beside it, the tissue
    probabilities as bars, then one row per section (for example reconstructions and
    class activation maps), then the warnings.

    Args:
        tile: The tile, ``(H, W, 3)`` ``uint8`` RGB.
        numbers: Output of :func:`review_numbers`.
        sections: ``(heading, images)`` rows below the summary.
    """
    rows_per_section = [max(1, math.ceil(len(images) / 5)) for _, images in sections]
    warnings = numbers.get("warnings", [])
    warning_lines = [line for w in warnings for line in _wrapped(f"- {w['message']}", 150)]
    height = (
        MARGIN * 2 + 40 + 300
        + sum(34 + rows * (THUMB + 64) for rows in rows_per_section)
        + (SECTION_GAP + 30 + 18 * len(warning_lines) if warning_lines else 0)
        + 30
    )
    panel = Image.new("RGB", (PANEL_WIDTH, height), "white")
    draw = ImageDraw.Draw(panel)

    tile_info = numbers.get("tile", {})
    title = f"GastricVision review: {tile_info.get('name', 'tile')} ({tile_info.get('width')}x{tile_info.get('height')} px)"
    draw.text((MARGIN, MARGIN), title, fill=TEXT, font=_font(20))
    top = MARGIN + 40

    enlarged = _thumbnail(tile, 280)
    panel.paste(enlarged, (MARGIN, top))
    text_left = MARGIN + 300
    line_top = top
    for line, colour in _summary_lines(numbers):
        for part in _wrapped(line, 70):
            draw.text((text_left, line_top), part, fill=colour, font=_font(16))
            line_top += 22
    tissue = numbers.get("tissue")
    if tissue:
        _draw_tissue_bars(draw, PANEL_WIDTH - MARGIN - 360, top, 360, tissue["probabilities"])
    top += 300

    for (heading, images), rows in zip(sections, rows_per_section):
        draw.text((MARGIN, top), heading, fill=TEXT, font=_font(18))
        top += 34
        for index, item in enumerate(images):
            row, column = divmod(index, 5)
            left = MARGIN + column * (THUMB + 40)
            cell_top = top + row * (THUMB + 64)
            draw.text((left, cell_top), item.title, fill=TEXT, font=_font(14))
            panel.paste(_thumbnail(item.array, THUMB), (left, cell_top + 20))
            for offset, part in enumerate(item.caption.splitlines()[:2]):
                draw.text((left, cell_top + THUMB + 24 + 16 * offset), part, fill=MUTED, font=_font(13))
        top += rows * (THUMB + 64)

    if warning_lines:
        top += SECTION_GAP
        draw.text((MARGIN, top), "Warnings", fill=WARN, font=_font(18))
        top += 30
        for line in warning_lines:
            draw.text((MARGIN, top), line, fill=WARN, font=_font(13))
            top += 18
    draw.text(
        (MARGIN, height - MARGIN - 8),
        "GastricVision is a research tool, not a diagnostic device.",
        fill=MUTED,
        font=_font(13),
    )

    buffer = io.BytesIO()
    panel.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
