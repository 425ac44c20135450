"""Find the tiles of a dataset folder, label them and split them.

Supported layouts, detected from the folder names:

``gashissdb``
    GasHisSDB (Hu et al., Comput Biol Med 2022): ``<root>/<size>/<Class>/<Class>-NNNNN.png``
    with size folders ``160``, ``120``, ``80`` (or ``160x160`` and so on) and classes
    ``Normal`` and ``Abnormal``. The root may be the extracted download, one size folder,
    or any folder that holds ``Normal`` and ``Abnormal`` directly.
``gchtid``
    GCHTID / HMU-GC-HE-30K (Lou et al., Sci Data 2025):
    ``HMU-GC-HE-30K/all_image/<CLASS>/<CLASS>_N.png`` with the eight classes ADI, DEB, LYM,
    MUC, MUS, NOR, STR and TUM. The root may be any folder on that path, or a folder of
    class folders named with those classes.
``class-folders``
    Any folder whose sub-folders are classes and hold images.

Symbolic links that resolve outside the dataset root are skipped and counted, so a
dataset folder cannot expose files elsewhere on the machine.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from PIL import Image

from .errors import DatasetError
from .imaging import IMAGE_SUFFIXES

__all__ = [
    "BINARY_CLASSES",
    "CLASS_MAPS",
    "Dataset",
    "PUBLISHED_COUNTS",
    "TISSUE_CLASSES",
    "TileRecord",
    "expand_crops",
    "grid_offsets",
    "load_splits",
    "make_splits",
    "open_dataset",
    "open_datasets",
    "size_folder_tile_size",
    "parse_class_map",
    "save_splits",
    "verify_dataset",
]

logger = logging.getLogger(__name__)

BINARY_CLASSES = ("Normal", "Abnormal")
TISSUE_CLASSES = ("ADI", "DEB", "LYM", "MUC", "MUS", "NOR", "STR", "TUM")

# Tile counts of the published downloads. GasHisSDB: Hu et al. 2022 (the three
# sub-databases sum to 245,196 tiles). GCHTID: Lou et al. 2025, 3,887 tiles per class.
# NOTE: the 160 px figures are the ones quoted most widely; the 120 and 80 px splits
# between Normal and Abnormal were not checked against the paper here.
PUBLISHED_COUNTS: dict[tuple[str, int | None], dict[str, int]] = {
    ("gashissdb", 160): {"Normal": 20160, "Abnormal": 13124},
    ("gashissdb", 120): {"Normal": 40460, "Abnormal": 24801},
    ("gashissdb", 80): {"Normal": 81390, "Abnormal": 65261},
    ("gchtid", 224): {name: 3887 for name in TISSUE_CLASSES},
}

# Class maps from other public datasets onto this project's label sets. A value of None
# drops the class. Labels that end outside a model's classes are dropped when training.
CLASS_MAPS: dict[str, dict[str, str | None]] = {
    # NCT-CRC-HE-100K / CRC-VAL-HE-7K (Kather et al. 2018): NORM is normal colon mucosa,
    # the nearest class to GCHTID's normal gastric mucosa; BACK has no GCHTID class.
    "nct-crc-he": {"NORM": "NOR", "BACK": None},
    # Gastrointestinal benign vs cancer tiles for the Normal/Abnormal task: LC25000 colon
    # and NCT-CRC-HE normal mucosa vs tumour epithelium.
    "gi-binary": {
        "colon_n": "Normal",
        "colon_aca": "Abnormal",
        "NORM": "Normal",
        "TUM": "Abnormal",
    },
}

_SIZE_FOLDER = re.compile(r"^(\d{2,4})(?:\s*[xX×]\s*(\d{2,4}))?$")
_GCHTID_FOLDERS = ("HMU-GC-HE-30K", "all_image")


@dataclass(frozen=True)
class TileRecord:
    """One labelled image of a dataset, or one crop of it.

    Attributes:
        path: Absolute path of the image file.
        label: Class name after any class map; None for unlabelled images.
        source_label: Class folder name as found on disk.
        root: Dataset root the path was found under.
        tile_size: Declared tile size in pixels (GasHisSDB size folder), if any.
        crop: ``(left, top, size)`` of a square crop, or None for the whole image.
    """

    path: Path
    label: str | None
    source_label: str
    root: Path
    tile_size: int | None = None
    crop: tuple[int, int, int] | None = None

    @property
    def relative_path(self) -> str:
        try:
            return self.path.relative_to(self.root).as_posix()
        except ValueError:
            return self.path.as_posix()


@dataclass
class Dataset:
    """The tiles found under one root folder.

    Attributes:
        root: The folder the user gave.
        layout: ``gashissdb``, ``gchtid`` or ``class-folders``.
        records: Every image with its label, sorted by path.
        tile_size: Declared tile size of a GasHisSDB size folder, else None.
        sizes_available: GasHisSDB sizes present under the root.
        dropped: Images per source class left out by the class map.
        skipped_links: Symbolic links skipped because they point outside the root.
    """

    root: Path
    layout: str
    records: list[TileRecord]
    tile_size: int | None = None
    sizes_available: tuple[int, ...] = ()
    dropped: dict[str, int] = field(default_factory=dict)
    skipped_links: list[str] = field(default_factory=list)

    @property
    def classes(self) -> tuple[str, ...]:
        labels = {record.label for record in self.records if record.label is not None}
        return tuple(sorted(labels))

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(r.label for r in self.records if r.label).items()))


# --------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class _LayoutMatch:
    layout: str
    class_root: Path
    tile_size: int | None
    sizes_available: tuple[int, ...] = ()


def _subdirs(folder: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DatasetError(f"{folder}: cannot list the folder ({exc.strerror}).") from None
    return [Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")]


def _size_of_folder(name: str) -> int | None:
    match = _SIZE_FOLDER.match(name)
    if not match:
        return None
    width, height = match.group(1), match.group(2) or match.group(1)
    return int(width) if width == height else None


def size_folder_tile_size(folder: str | os.PathLike) -> int | None:
    """Return the tile size of a GasHisSDB size folder (``160`` or ``160x160`` with Normal
    and Abnormal inside), or None for any other folder."""
    folder = Path(folder)
    return _size_of_folder(folder.name) if _has_binary_classes(folder) else None


def _has_binary_classes(folder: Path) -> bool:
    names = {p.name for p in _subdirs(folder)}
    return set(BINARY_CLASSES) <= names


def _gashissdb_sizes(folder: Path) -> dict[int, Path]:
    sizes: dict[int, Path] = {}
    for child in _subdirs(folder):
        size = _size_of_folder(child.name)
        if size is not None and _has_binary_classes(child):
            sizes[size] = child
    return sizes


def _detect_layout(root: Path, size: int | None) -> _LayoutMatch:
    # GasHisSDB: the root holds size folders, possibly one level down (an extracted
    # archive often adds a folder named after it).
    children = _subdirs(root)
    candidates = [root, *children] if len(children) == 1 else [root]
    for folder in candidates:
        sizes = _gashissdb_sizes(folder)
        if sizes:
            available = tuple(sorted(sizes))
            if size is None:
                if len(sizes) > 1:
                    raise DatasetError(
                        f"{root}: GasHisSDB folder with several tile sizes "
                        f"({', '.join(map(str, available))} px); choose one (--size on the command line)."
                    )
                size = available[0]
            if size not in sizes:
                raise DatasetError(
                    f"{root}: no {size} px sub-database here; the sizes present are "
                    f"{', '.join(map(str, available))} px."
                )
            return _LayoutMatch("gashissdb", sizes[size], size, available)

    if _has_binary_classes(root):
        declared = _size_of_folder(root.name)
        if size is not None and declared is not None and size != declared:
            raise DatasetError(f"{root}: this is the {declared} px sub-database, not {size} px; drop --size or choose {declared}.")
        return _LayoutMatch("gashissdb", root, declared, (declared,) if declared else ())

    # GCHTID: HMU-GC-HE-30K/all_image/<CLASS>, entered at any level.
    folder = root
    for part in _GCHTID_FOLDERS:
        if (folder / part).is_dir():
            folder = folder / part
    names = {p.name for p in _subdirs(folder)}
    # Inside all_image one class folder is enough; elsewhere two GCHTID names are needed
    # to tell GCHTID from any other folder of class folders.
    needed = 1 if folder.name == "all_image" else 2
    if names and names <= set(TISSUE_CLASSES) and len(names) >= needed:
        return _LayoutMatch("gchtid", folder, 224)

    if any(_images_in(p, root, []) for p in _subdirs(root)):
        return _LayoutMatch("class-folders", root, None)

    found = ", ".join(p.name for p in _subdirs(root)[:8]) or "no sub-folders"
    raise DatasetError(
        f"{root}: not a dataset folder (found: {found}). Expected GasHisSDB "
        "(<root>/160/Normal, <root>/160/Abnormal), GCHTID (HMU-GC-HE-30K/all_image/<CLASS>) "
        "or one sub-folder of images per class."
    )


def _is_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _images_in(folder: Path, root: Path, skipped_links: list[str]) -> list[Path]:
    """List the image files directly inside ``folder`` that stay inside ``root``."""
    images = []
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        logger.warning("Skipping unreadable folder %s: %s", folder, exc.strerror)
        return []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if Path(entry.name).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        path = Path(entry.path)
        if entry.is_symlink() and not _is_inside(path, root):
            skipped_links.append(str(path))
            logger.warning("Skipping %s: symbolic link that points outside %s", path, root)
            continue
        if entry.is_file():
            images.append(path)
    return images


# --------------------------------------------------------------------------- opening


def parse_class_map(text: str | Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Turn a class map name (``nct-crc-he``), ``A=B,C=`` text or a mapping into a dict.

    An empty target (``BACK=``) drops the class.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return dict(text)
    if text in CLASS_MAPS:
        return dict(CLASS_MAPS[text])

    mapping: dict[str, str | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item in CLASS_MAPS:
            mapping.update(CLASS_MAPS[item])
            continue
        if "=" not in item:
            known = ", ".join(sorted(CLASS_MAPS))
            raise DatasetError(
                f"Invalid class map entry {item!r}: use SOURCE=TARGET pairs separated by "
                f"commas (an empty TARGET drops the class) or one of: {known}."
            )
        source, target = (part.strip() for part in item.split("=", 1))
        mapping[source] = target or None
    return mapping


def open_dataset(
    root: str | os.PathLike,
    *,
    size: int | None = None,
    class_map: str | Mapping[str, str | None] | None = None,
) -> Dataset:
    """Detect the layout of ``root`` and list its labelled images.

    Args:
        root: Dataset folder (see the module docstring for the accepted layouts).
        size: GasHisSDB tile size to read when the folder holds several.
        class_map: Renames or drops classes (see :func:`parse_class_map`).

    Raises:
        DatasetError: The folder does not exist or matches no supported layout.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: folder not found; check the path.")
    if not root.is_dir():
        raise DatasetError(f"{root}: is a file; give the folder that holds the class folders.")

    mapping = parse_class_map(class_map)
    match = _detect_layout(root, size)
    records: list[TileRecord] = []
    dropped: Counter[str] = Counter()
    skipped_links: list[str] = []

    for class_dir in _subdirs(match.class_root):
        if class_dir.is_symlink() and not _is_inside(class_dir, root):
            skipped_links.append(str(class_dir))
            logger.warning("Skipping %s: symbolic link that points outside %s", class_dir, root)
            continue
        images = _images_in(class_dir, root, skipped_links)
        if not images:
            continue
        source_label = class_dir.name
        label = mapping.get(source_label, source_label)
        if label is None:
            dropped[source_label] += len(images)
            continue
        records.extend(
            TileRecord(path, label, source_label, root, match.tile_size) for path in images
        )

    if not records:
        raise DatasetError(
            f"{root}: no images found in the class folders of {match.class_root} "
            f"(supported types: {', '.join(sorted(IMAGE_SUFFIXES))})."
        )

    logger.info(
        "Opened %s as %s: %d images in %d classes%s",
        root,
        match.layout,
        len(records),
        len({r.label for r in records}),
        f", {sum(dropped.values())} dropped by the class map" if dropped else "",
    )
    return Dataset(
        root=root,
        layout=match.layout,
        records=records,
        tile_size=match.tile_size,
        sizes_available=match.sizes_available,
        dropped=dict(dropped),
        skipped_links=skipped_links,
    )


def open_datasets(
    roots: Sequence[str | os.PathLike],
    *,
    size: int | None = None,
    class_map: str | Mapping[str, str | None] | None = None,
    classes: Sequence[str] | None = None,
) -> list[TileRecord]:
    """Open several roots and keep the records whose label is in ``classes``."""
    records: list[TileRecord] = []
    outside: Counter[str] = Counter()
    for root in roots:
        dataset = open_dataset(root, size=size, class_map=class_map)
        for record in dataset.records:
            if classes is not None and record.label not in classes:
                outside[record.label or "?"] += 1
                continue
            records.append(record)
    if outside:
        logger.info(
            "Left out %d images whose class is not one of %s: %s",
            sum(outside.values()),
            ", ".join(classes or ()),
            dict(outside),
        )
    if not records:
        raise DatasetError(
            f"No images of the classes {', '.join(classes or ())} under "
            f"{', '.join(map(str, roots))}; check --data and --class-map."
        )
    return records


# --------------------------------------------------------------------------- splits

SPLIT_NAMES = ("train", "val", "test")


def make_splits(
    records: Sequence[TileRecord],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, list[TileRecord]]:
    """Split records into train, val and test, stratified by label and deterministic.

    Records are sorted by their path relative to their root before shuffling with
    ``seed``, so the same files give the same split on any machine. Every class with at
    least three images has at least one in each split. Unlabelled records go to train.
    """
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) < 0:
        raise DatasetError(f"Invalid split fractions {fractions}: use three values summing to 1.")

    by_label: dict[str | None, list[TileRecord]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)

    splits: dict[str, list[TileRecord]] = {name: [] for name in SPLIT_NAMES}
    for label in sorted(by_label, key=lambda x: (x is None, x or "")):
        group = sorted(by_label[label], key=lambda r: (r.root.name, r.relative_path))
        if label is None:
            splits["train"].extend(group)
            continue
        rng = random.Random(f"{seed}:{label}")
        rng.shuffle(group)
        n_val, n_test = _split_counts(len(group), fractions)
        splits["test"].extend(group[:n_test])
        splits["val"].extend(group[n_test : n_test + n_val])
        splits["train"].extend(group[n_test + n_val :])
    return splits


def _split_counts(total: int, fractions: tuple[float, float, float]) -> tuple[int, int]:
    n_val = round(total * fractions[1])
    n_test = round(total * fractions[2])
    if total >= 3:
        n_val = max(n_val, 1 if fractions[1] > 0 else 0)
        n_test = max(n_test, 1 if fractions[2] > 0 else 0)
    while n_val + n_test >= total and (n_val or n_test):
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def save_splits(
    splits: Mapping[str, Sequence[TileRecord]], path: str | os.PathLike, *, seed: int,
    fractions: tuple[float, float, float],
) -> Path:
    """Write ``root,path,label,split`` rows and a JSON side file with the seed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["root", "path", "label", "split"])
        for split in SPLIT_NAMES:
            for record in splits.get(split, []):
                writer.writerow([str(record.root), record.relative_path, record.label or "", split])
    meta = {
        "seed": seed,
        "fractions": list(fractions),
        "counts": {
            split: dict(Counter(r.label or "" for r in splits.get(split, [])))
            for split in SPLIT_NAMES
        },
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    logger.info("Wrote split of %d records (seed %d) to %s", sum(map(len, splits.values())), seed, path)
    return path


def load_splits(path: str | os.PathLike) -> dict[str, list[TileRecord]]:
    """Read a split CSV written by :func:`save_splits`."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise DatasetError(f"{path}: split file not found.") from None
    splits: dict[str, list[TileRecord]] = {name: [] for name in SPLIT_NAMES}
    for number, row in enumerate(rows, start=2):
        if row.get("split") not in SPLIT_NAMES or not row.get("path"):
            raise DatasetError(
                f"{path}, line {number}: expected columns root,path,label,split with split "
                f"one of {', '.join(SPLIT_NAMES)}."
            )
        root = Path(row["root"])
        splits[row["split"]].append(
            TileRecord(root / row["path"], row["label"] or None, row["label"], root)
        )
    return splits


# --------------------------------------------------------------------------- crops


def grid_offsets(length: int, tile: int) -> list[int]:
    """Return start offsets of tiles of size ``tile`` that cover ``length`` pixels.

    Up to 10 % of a tile may be left out at the borders before another tile is added;
    consecutive tiles overlap evenly when ``length`` is not a multiple of ``tile``. A
    single tile is centred, and a length below ``tile`` gives the offset 0.
    """
    if length <= tile:
        return [0]
    count = max(1, math.ceil(length / tile - 0.1))
    if count == 1:
        return [(length - tile) // 2]
    step = (length - tile) / (count - 1)
    return [round(i * step) for i in range(count)]


def image_size(path: Path) -> tuple[int, int]:
    """Read width and height from the file header without decoding pixels."""
    with Image.open(path) as image:
        return image.size


def expand_crops(records: Iterable[TileRecord], tile_size: int) -> list[TileRecord]:
    """Replace each image at least twice ``tile_size`` wide and high by a grid of crops.

    Crops keep the pixel scale of the source, unlike resizing, so a 768 px LC25000 image
    becomes 16 tiles of 160 px instead of one tile at a fifth of its magnification.
    Smaller images stay whole and are cropped or resized when they are loaded.
    """
    expanded: list[TileRecord] = []
    for record in records:
        try:
            width, height = image_size(record.path)
        except (OSError, ValueError) as exc:
            logger.warning("Skipping %s: cannot read its header (%s)", record.path, exc)
            continue
        if min(width, height) < 2 * tile_size:
            expanded.append(record)
            continue
        for top in grid_offsets(height, tile_size):
            for left in grid_offsets(width, tile_size):
                expanded.append(
                    TileRecord(
                        record.path,
                        record.label,
                        record.source_label,
                        record.root,
                        record.tile_size,
                        (left, top, tile_size),
                    )
                )
    return expanded


# --------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """Per-class counts of a dataset folder against the published totals."""

    root: Path
    layout: str
    tile_size: int | None
    counts: dict[str, int]
    expected: dict[str, int] | None
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[list[str]] = field(default_factory=list)
    skipped_links: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (
            self.expected is not None
            and self.counts == self.expected
            and not self.unreadable
        )

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "layout": self.layout,
            "tile_size": self.tile_size,
            "counts": self.counts,
            "expected": self.expected,
            "complete": self.complete,
            "unreadable": self.unreadable,
            "duplicates": self.duplicates,
            "skipped_links": self.skipped_links,
        }

    def lines(self) -> list[str]:
        size = f", {self.tile_size} px tiles" if self.tile_size else ""
        lines = [f"{self.root}: {self.layout} layout{size}"]
        classes = sorted(set(self.counts) | set(self.expected or {}))
        for name in classes:
            found = self.counts.get(name, 0)
            if self.expected is None:
                lines.append(f"  {name:<10} {found:>7,}")
                continue
            want = self.expected.get(name)
            if want is None:
                status = "not a published class"
            elif found == want:
                status = "ok"
            else:
                status = f"{found - want:+,} vs published"
            lines.append(f"  {name:<10} {found:>7,} of {want or 0:>7,}  {status}")
        total = sum(self.counts.values())
        if self.expected is not None:
            lines.append(f"  {'total':<10} {total:>7,} of {sum(self.expected.values()):>7,}")
            lines.append("  complete" if self.complete else "  INCOMPLETE: counts differ from the published totals")
        else:
            lines.append(f"  {'total':<10} {total:>7,} (no published totals for this layout)")
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} unreadable files, e.g. {self.unreadable[0]}")
        if self.duplicates:
            lines.append(
                f"  {len(self.duplicates)} groups of identical files, e.g. {' = '.join(self.duplicates[0][:2])}"
            )
        if self.skipped_links:
            lines.append(f"  {len(self.skipped_links)} symbolic links outside the folder skipped")
        return lines


def verify_dataset(
    root: str | os.PathLike,
    *,
    size: int | None = None,
    check_files: bool = False,
    progress=None,
) -> VerifyReport:
    """Count images per class and compare with the published totals.

    Args:
        root: Dataset folder.
        size: GasHisSDB tile size when the folder holds several.
        check_files: Also decode every image and hash it to find unreadable files and
            duplicates (slow: reads every file).
        progress: Optional callable taking an iterable and returning it (e.g. ``tqdm``).
    """
    dataset = open_dataset(root, size=size)
    expected = PUBLISHED_COUNTS.get((dataset.layout, dataset.tile_size))
    report = VerifyReport(
        root=dataset.root,
        layout=dataset.layout,
        tile_size=dataset.tile_size,
        counts=dataset.counts(),
        expected=expected,
        skipped_links=dataset.skipped_links,
    )
    if check_files:
        _check_files(dataset.records, report, progress)
    return report


def _check_files(records: Sequence[TileRecord], report: VerifyReport, progress) -> None:
    from .errors import ImageError
    from .imaging import load_image

    by_hash: dict[str, list[str]] = {}
    iterator = progress(records) if progress else records
    for record in iterator:
        try:
            image = load_image(record.path)
        except ImageError as exc:
            report.unreadable.append(str(exc))
            continue
        by_hash.setdefault(image.sha256, []).append(record.relative_path)
    report.duplicates = [paths for paths in by_hash.values() if len(paths) > 1]
