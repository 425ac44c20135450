"""Turn a decoded tile into network inputs at the scale a model was trained at.

Scale policy (the same for prediction, class activation maps and reconstruction):

- A tile at least as large as the model's training tile size is cut into crops of that
  size (:func:`~gastricvision.datasets.grid_offsets`: one centred crop when the tile is
  at most 10 % larger, otherwise overlapping crops that cover it). Pixel scale is kept;
  per-crop outputs are averaged, and maps are stitched back at the tile's own size.
- A tile smaller than the training tile size (80 or 120 px GasHisSDB tiles for a model
  trained at 160 px) is resized up to it, which enlarges the tissue, and a
  ``scale_mismatch`` warning says by how much.
- A tile that would need more than :data:`MAX_VIEWS` crops is first scaled down so that
  it needs at most that many, again with a ``scale_mismatch`` warning.
- Each crop is then resized to the network input size if that differs from the tile size.

Fully convolutional networks (the reconstruction models) can take the whole tile
instead: with ``whole_multiple`` set, a tile of up to :data:`MAX_WHOLE_PIXELS` is passed
as one view at its own scale, padded by reflection to a multiple of ``whole_multiple``
pixels. That avoids overlapping crops (and seams in their maps) and costs fewer pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .datasets import grid_offsets
from .errors import TileWarning

__all__ = ["MAX_VIEWS", "ViewPlan", "normalise", "plan_views", "resize_uint8", "stitch", "to_float_tensor"]

MAX_VIEWS = 64
MAX_WHOLE_PIXELS = 1024 * 1024


@dataclass
class ViewPlan:
    """How one tile becomes one or more network inputs for one model.

    Attributes:
        views: ``(N, input_size, input_size, 3)`` ``uint8`` crops, ready for the network;
            for a whole-tile plan, ``(1, H', W', 3)`` with the tile padded to a multiple.
        boxes: ``(left, top, size)`` of each crop in the working image.
        working_size: ``(height, width)`` of the working image the boxes refer to.
        tile_size: Training tile size of the model.
        warnings: Scale changes the user should know about.
        whole: The single view is the whole working image plus padding at the bottom
            and right.
    """

    views: np.ndarray
    boxes: list[tuple[int, int, int]]
    working_size: tuple[int, int]
    tile_size: int
    warnings: list[TileWarning] = field(default_factory=list)
    whole: bool = False


def resize_uint8(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB ``uint8`` array with Pillow's antialiased bicubic filter."""
    if array.shape[1] == width and array.shape[0] == height:
        return array
    image = Image.fromarray(array)
    return np.asarray(image.resize((width, height), Image.Resampling.BICUBIC))


def plan_views(
    array: np.ndarray,
    *,
    tile_size: int,
    input_size: int,
    model_name: str = "model",
    name: str = "tile",
    whole_multiple: int | None = None,
) -> ViewPlan:
    """Cut or resize ``array`` into network inputs following the module's scale policy.

    Args:
        whole_multiple: For fully convolutional networks whose input size equals their
            tile size: pass tiles of up to :data:`MAX_WHOLE_PIXELS` whole, padded to a
            multiple of this many pixels.
    """
    height, width = array.shape[:2]
    notes: list[TileWarning] = []
    working = array

    if min(height, width) < tile_size:
        factor = tile_size / min(height, width)
        new_w, new_h = round(width * factor), round(height * factor)
        working = resize_uint8(array, new_w, new_h)
        notes.append(
            TileWarning(
                "scale_mismatch",
                f"{name} is {width}x{height} px but {model_name} was trained on {tile_size} px "
                f"tiles; it was enlarged {factor:.2f}x, so the tissue looks larger to the model "
                "than in training.",
            )
        )

    if whole_multiple and input_size == tile_size and working.shape[0] * working.shape[1] <= MAX_WHOLE_PIXELS:
        return _whole_plan(working, tile_size, whole_multiple, notes)

    if working is array:
        count = len(grid_offsets(height, tile_size)) * len(grid_offsets(width, tile_size))
        if count > MAX_VIEWS:
            side = int(np.sqrt(MAX_VIEWS))
            factor = min(side * tile_size / width, side * tile_size / height)
            new_w, new_h = max(tile_size, round(width * factor)), max(tile_size, round(height * factor))
            working = resize_uint8(array, new_w, new_h)
            notes.append(
                TileWarning(
                    "scale_mismatch",
                    f"{name} is {width}x{height} px; for {model_name} it was reduced "
                    f"{1 / factor:.1f}x to {new_w}x{new_h} px before cutting {tile_size} px "
                    "tiles, so the tissue looks smaller to the model than in training.",
                )
            )

    work_h, work_w = working.shape[:2]
    boxes = [
        (left, top, tile_size)
        for top in grid_offsets(work_h, tile_size)
        for left in grid_offsets(work_w, tile_size)
    ]
    if len(boxes) > 1:
        notes.append(
            TileWarning(
                "tiled",
                f"{name} ({width}x{height} px) is larger than the {tile_size} px tiles "
                f"{model_name} was trained on; it was scored as {len(boxes)} tiles of "
                f"{tile_size} px and the results averaged.",
            )
        )

    views = np.empty((len(boxes), input_size, input_size, 3), dtype=np.uint8)
    for index, (left, top, size) in enumerate(boxes):
        crop = working[top : top + size, left : left + size]
        if crop.shape[0] != size or crop.shape[1] != size:
            # The working image is smaller than a tile in one direction (a thin strip).
            crop = resize_uint8(crop, size, size)
        views[index] = resize_uint8(crop, input_size, input_size)
    return ViewPlan(views, boxes, (work_h, work_w), tile_size, notes)


def _whole_plan(working: np.ndarray, tile_size: int, multiple: int, notes: list[TileWarning]) -> ViewPlan:
    work_h, work_w = working.shape[:2]
    padding = ((0, -work_h % multiple), (0, -work_w % multiple), (0, 0))
    padded = np.pad(working, padding, mode="reflect") if any(p[1] for p in padding) else working
    return ViewPlan(padded[None], [(0, 0, max(work_h, work_w))], (work_h, work_w), tile_size, notes, whole=True)


def to_float_tensor(views: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` ``uint8`` to ``(N, 3, H, W)`` float32 in [0, 1], channels-last memory."""
    views = np.ascontiguousarray(views)
    if not views.flags.writeable:
        # A decoded image can be a read-only view; torch warns on those.
        views = views.copy()
    tensor = torch.from_numpy(views).permute(0, 3, 1, 2)
    return tensor.float().div_(255.0).contiguous(memory_format=torch.channels_last)


def normalise(batch: torch.Tensor, mean, std) -> torch.Tensor:
    """Subtract ``mean`` and divide by ``std`` per channel (in place when possible)."""
    mean_t = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return batch.sub(mean_t).div_(std_t)


def stitch(
    maps: torch.Tensor | np.ndarray,
    plan: ViewPlan,
    output_size: tuple[int, int],
) -> np.ndarray:
    """Place per-view maps back into one map of ``output_size`` (height, width).

    Args:
        maps: ``(N, h, w)`` or ``(N, C, h, w)`` per-view maps at network resolution.
        plan: The plan the views came from.
        output_size: Size of the original tile.

    Overlapping crops are averaged. The result is resized from the working image to the
    tile's own size with bilinear interpolation.

    NOTE: the average weighs every pixel of a crop alike, so where the maps of
    neighbouring crops disagree (class activation maps of separate crops often do), the
    stitched map shows the crop borders as hard edges. A window that fades each crop
    towards its border would blend them.
    """
    maps_t = torch.as_tensor(np.asarray(maps) if not isinstance(maps, torch.Tensor) else maps).float()
    squeeze = maps_t.dim() == 3
    if squeeze:
        maps_t = maps_t[:, None]
    channels = maps_t.shape[1]
    work_h, work_w = plan.working_size
    if plan.whole:
        merged = maps_t[0, :, :work_h, :work_w]
        if (work_h, work_w) != tuple(output_size):
            merged = F.interpolate(merged[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]
        result = merged.numpy()
        return result[0] if squeeze else result
    total = torch.zeros(channels, work_h, work_w)
    weight = torch.zeros(1, work_h, work_w)
    for view_map, (left, top, size) in zip(maps_t, plan.boxes):
        placed = F.interpolate(view_map[None], size=(size, size), mode="bilinear", align_corners=False)[0]
        bottom, right = min(top + size, work_h), min(left + size, work_w)
        total[:, top:bottom, left:right] += placed[:, : bottom - top, : right - left]
        weight[:, top:bottom, left:right] += 1
    merged = total / weight.clamp_min(1)
    if (work_h, work_w) != tuple(output_size):
        merged = F.interpolate(merged[None], size=tuple(output_size), mode="bilinear", align_corners=False)[0]
    result = merged.numpy()
    return result[0] if squeeze else result
