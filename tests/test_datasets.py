"""Dataset layouts, class maps, splits and verification."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gastricvision.datasets import (
    expand_crops,
    grid_offsets,
    load_splits,
    make_splits,
    open_dataset,
    open_datasets,
    save_splits,
    verify_dataset,
)
from gastricvision.errors import DatasetError


def write_tiles(folder: Path, count: int, size: int = 32, prefix: str = "tile") -> list[Path]:
    """Write ``count`` small noise PNGs (synthetic, not copies of real tiles)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(folder)))
    paths = []
    for index in range(count):
        path = folder / f"{prefix}-{index:05d}.png"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------- real layouts


def test_gashissdb_from_download_root(shared_data):
    dataset = open_dataset(shared_data / "gashissdb")
    assert dataset.layout == "gashissdb"
    assert dataset.tile_size == 160
    assert dataset.counts() == {"Abnormal": 9, "Normal": 7}


def test_gashissdb_from_size_folder(shared_data):
    dataset = open_dataset(shared_data / "gashissdb" / "160")
    assert dataset.layout == "gashissdb"
    assert dataset.tile_size == 160


def test_gchtid_at_every_level(shared_data):
    for folder in ("gchtid", "gchtid/HMU-GC-HE-30K", "gchtid/HMU-GC-HE-30K/all_image"):
        dataset = open_dataset(shared_data / folder)
        assert dataset.layout == "gchtid", folder
        assert dataset.counts() == {"STR": 1}, folder


def test_nct_class_folders_with_class_map(shared_data):
    dataset = open_dataset(shared_data / "nct-crc-he" / "CRC-VAL-HE-7K", class_map="nct-crc-he")
    assert dataset.layout == "class-folders"
    assert "NOR" in dataset.classes
    assert "NORM" not in dataset.classes
    assert "BACK" not in dataset.classes
    assert dataset.dropped == {"BACK": 1}


def test_parent_of_several_datasets_rejected(shared_data):
    with pytest.raises(DatasetError, match=r"not a dataset folder .*Expected GasHisSDB"):
        open_dataset(shared_data)


def test_binary_class_map_merges_sources(shared_data):
    records = open_datasets(
        [shared_data / "gashissdb", shared_data / "lc25000", shared_data / "nct-crc-he" / "CRC-VAL-HE-7K"],
        class_map="gi-binary",
        classes=("Normal", "Abnormal"),
    )
    labels = {r.label for r in records}
    assert labels == {"Normal", "Abnormal"}
    sources = {r.source_label for r in records}
    assert {"colon_n", "colon_aca", "NORM", "TUM", "Normal", "Abnormal"} == sources


# --------------------------------------------------------------------------- synthetic layouts


def test_gashissdb_size_names_with_x(tmp_path):
    for size in ("80x80", "120x120"):
        write_tiles(tmp_path / "GasHisSDB" / size / "Normal", 3)
        write_tiles(tmp_path / "GasHisSDB" / size / "Abnormal", 2)
    with pytest.raises(DatasetError, match=r"several tile sizes \(80, 120 px\); choose one \(--size on the command line\)"):
        open_dataset(tmp_path)
    dataset = open_dataset(tmp_path, size=120)
    assert dataset.tile_size == 120
    assert dataset.sizes_available == (80, 120)
    assert dataset.counts() == {"Abnormal": 2, "Normal": 3}


def test_missing_size_named(tmp_path):
    write_tiles(tmp_path / "160" / "Normal", 1)
    write_tiles(tmp_path / "160" / "Abnormal", 1)
    with pytest.raises(DatasetError, match=r"no 80 px sub-database here; the sizes present are 160 px"):
        open_dataset(tmp_path, size=80)


def test_empty_folder_rejected(tmp_path):
    with pytest.raises(DatasetError, match=r"not a dataset folder \(found: no sub-folders\)"):
        open_dataset(tmp_path)


def test_missing_folder_rejected(tmp_path):
    with pytest.raises(DatasetError, match=r"folder not found"):
        open_dataset(tmp_path / "nowhere")


def test_symlink_outside_root_skipped(tmp_path, gashissdb_tile):
    write_tiles(tmp_path / "data" / "A", 2)
    write_tiles(tmp_path / "data" / "B", 2)
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(outside)
    os.symlink(outside, tmp_path / "data" / "A" / "link.png")
    os.symlink(tmp_path, tmp_path / "data" / "C")
    dataset = open_dataset(tmp_path / "data")
    paths = {r.path.name for r in dataset.records}
    assert "link.png" not in paths
    assert dataset.counts() == {"A": 2, "B": 2}
    assert len(dataset.skipped_links) == 2


def test_hidden_and_non_image_files_ignored(tmp_path):
    write_tiles(tmp_path / "A", 2)
    (tmp_path / "A" / "._tile-00000.png").write_bytes(b"mac resource fork")
    (tmp_path / "A" / "notes.txt").write_text("x")
    assert open_dataset(tmp_path).counts() == {"A": 2}


# --------------------------------------------------------------------------- splits


def test_split_is_stratified_and_deterministic(tmp_path):
    write_tiles(tmp_path / "A", 20)
    write_tiles(tmp_path / "B", 10)
    records = open_dataset(tmp_path).records
    first = make_splits(records, seed=3)
    second = make_splits(list(reversed(records)), seed=3)
    assert [r.path for r in first["test"]] == [r.path for r in second["test"]]
    assert {split: len(items) for split, items in first.items()} == {"train": 20, "val": 5, "test": 5}
    labels_in_test = sorted(r.label for r in first["test"])
    assert labels_in_test == ["A", "A", "A", "B", "B"]
    other_seed = make_splits(records, seed=4)
    assert [r.path for r in other_seed["test"]] != [r.path for r in first["test"]]


def test_small_class_still_in_every_split(tmp_path):
    write_tiles(tmp_path / "A", 3)
    write_tiles(tmp_path / "B", 30)
    splits = make_splits(open_dataset(tmp_path).records, seed=0)
    for split in ("train", "val", "test"):
        assert "A" in {r.label for r in splits[split]}, split


def test_split_csv_round_trip(tmp_path):
    write_tiles(tmp_path / "data" / "A", 6)
    write_tiles(tmp_path / "data" / "B", 6)
    splits = make_splits(open_dataset(tmp_path / "data").records, seed=7)
    path = save_splits(splits, tmp_path / "splits.csv", seed=7, fractions=(0.7, 0.15, 0.15))
    with path.open() as handle:
        header = next(csv.reader(handle))
    assert header == ["root", "path", "label", "split"]
    assert '"seed": 7' in path.with_suffix(".json").read_text()
    loaded = load_splits(path)
    assert sorted(r.path for r in loaded["test"]) == sorted(r.path for r in splits["test"])


# --------------------------------------------------------------------------- crops


def test_grid_offsets_cover_length():
    assert grid_offsets(160, 160) == [0]
    assert grid_offsets(120, 160) == [0]
    assert grid_offsets(170, 160) == [5]
    assert grid_offsets(224, 160) == [0, 64]
    assert grid_offsets(768, 160) == [0, 152, 304, 456, 608]


def test_large_images_expand_to_crops(shared_data):
    records = open_dataset(shared_data / "lc25000").records[:2]
    crops = expand_crops(records, 160)
    assert len(crops) == 2 * 25
    assert crops[0].crop == (0, 0, 160)
    assert crops[-1].crop == (608, 608, 160)


# --------------------------------------------------------------------------- verify


def test_verify_compares_with_published_totals(shared_data):
    report = verify_dataset(shared_data / "gashissdb")
    assert report.expected == {"Normal": 20160, "Abnormal": 13124}
    assert report.counts == {"Abnormal": 9, "Normal": 7}
    assert not report.complete
    text = "\n".join(report.lines())
    assert "9 of  13,124" in text
    assert "INCOMPLETE" in text


def test_verify_complete_when_counts_match(tmp_path, monkeypatch):
    import gastricvision.datasets as datasets

    write_tiles(tmp_path / "160" / "Normal", 2)
    write_tiles(tmp_path / "160" / "Abnormal", 1)
    monkeypatch.setitem(datasets.PUBLISHED_COUNTS, ("gashissdb", 160), {"Normal": 2, "Abnormal": 1})
    report = verify_dataset(tmp_path, check_files=True)
    assert report.complete
    assert report.unreadable == []


def test_verify_finds_unreadable_and_duplicates(tmp_path):
    paths = write_tiles(tmp_path / "A", 3)
    (tmp_path / "A" / "copy.png").write_bytes(paths[0].read_bytes())
    (tmp_path / "A" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    report = verify_dataset(tmp_path, check_files=True)
    assert len(report.unreadable) == 1
    assert "broken.png" in report.unreadable[0]
    assert report.duplicates == [["A/copy.png", "A/tile-00000.png"]]
