"""Shared fixtures: the real tiles in ../shared/data and small weights saved by the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("GASTRICVISION_TEST_DATA", REPO.parent / "shared" / "data")).resolve()


def pytest_configure(config):
    os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real H&E tiles (never copied into the project)."""
    if not (SHARED_DATA / "gashissdb").is_dir():
        pytest.fail(f"real test tiles not found at {SHARED_DATA}; set GASTRICVISION_TEST_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def gashissdb_tile(shared_data) -> Path:
    return shared_data / "gashissdb" / "160" / "Abnormal" / "Abnormal-00051.png"


@pytest.fixture(scope="session")
def normal_tile(shared_data) -> Path:
    return shared_data / "gashissdb" / "160" / "Normal" / "Normal-00003.png"


@pytest.fixture(scope="session")
def gchtid_tile(shared_data) -> Path:
    return shared_data / "gchtid" / "HMU-GC-HE-30K" / "all_image" / "STR" / "STR_458.png"


@pytest.fixture(scope="session")
def jpeg_tile(shared_data) -> Path:
    return sorted((shared_data / "nct-crc-he" / "CRC-VAL-HE-7K" / "TUM").glob("*.jp*g"))[0]


@pytest.fixture(scope="session")
def tiff_tile(shared_data) -> Path:
    return sorted((shared_data / "nct-crc-he" / "CRC-VAL-HE-7K").rglob("*.tif"))[0]


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> Path:
    """A weights folder with randomly initialised models of every registry entry.

    Exercises the whole save and load path without the shipped weights.
    """
    from tests.helpers import save_random_weights

    folder = tmp_path_factory.mktemp("weights")
    save_random_weights(folder)
    return folder
