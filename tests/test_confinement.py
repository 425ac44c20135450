"""Dataset browsing stays inside the configured roots (GASTRICVISION_DATA_ROOTS).

A temporary allowed root contains real tiles and every kind of symbolic link that could
lead out of it. A second folder beside it plays the part of the rest of the server.
Hostile folder names go through :func:`gastricvision.browsing.resolve_inside`, through
the app's sidebar text field and through query parameters, and no file of the outside
folder may be listed, shown or scored.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from gastricvision.browsing import configured_roots, paths_outside, resolve_inside, subfolders
from gastricvision.datasets import open_dataset
from gastricvision.errors import DatasetError
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(900)

DOTDOT = r"'\.\.' is not allowed; give a folder inside "
ABSOLUTE = r"give a folder relative to .+, not an absolute or home path\."
LINK_OUT = r"a symbolic link leads outside .+; only folders inside it can be opened\."
NOT_FOUND = r"folder not found in .+; check the name\."

# Folder names a user or a hostile client may type, with the message they must get.
HOSTILE_NAMES = [
    ("..", DOTDOT),
    ("../", DOTDOT),
    ("../outside", DOTDOT),
    ("gashissdb/../..", DOTDOT),
    ("./gashissdb/../../outside/160", DOTDOT),
    ("  ../outside  ", DOTDOT),
    ("gashissdb\\..\\..\\outside", DOTDOT),
    ("/", ABSOLUTE),
    ("/etc", ABSOLUTE),
    ("//etc/passwd", ABSOLUTE),
    ("~", ABSOLUTE),
    ("~/", ABSOLUTE),
    ("~root", ABSOLUTE),
    ("C:\\Windows", ABSOLUTE),
    ("C:/Windows", ABSOLUTE),
    ("\\\\server\\share", ABSOLUTE),
    ("\\etc", ABSOLUTE),
    ("gash\x00issdb", r"Invalid folder name: it contains a NUL character\."),
    ("link-out", LINK_OUT),
    ("link-out/160", LINK_OUT),
    ("link-chain", LINK_OUT),
    ("absolute-link-out", LINK_OUT),
    ("%2e%2e/outside", NOT_FOUND),
    ("\uff0e\uff0e/outside", NOT_FOUND),
    ("link-loop", NOT_FOUND),
    ("a" * 5000, r"a{80}\.\.\. \(5,000 characters\): cannot open this folder in .+ \(File name too long\); check the name\."),
    ("tile.png", r"is a file, not a folder; give the folder that contains the class folders\."),
]
HOSTILE_IDS = [f"{index:02d}" for index in range(len(HOSTILE_NAMES))]


@pytest.fixture(scope="module")
def tree(tmp_path_factory, shared_data) -> dict[str, Path]:
    """An allowed root with real tiles and links out of it, and an outside folder of real tiles.

    ``root/gashissdb`` is a real GasHisSDB layout with links in it: a class folder, a
    tile and a whole size folder (``mixed/160``) that lead outside.
    """
    base = tmp_path_factory.mktemp("confinement")
    root, outside = base / "root", base / "outside"
    tiles = sorted((shared_data / "gashissdb" / "160").rglob("*.png"))
    for tile in tiles[:4] + tiles[-4:]:
        for folder in (root / "gashissdb" / "160", outside / "160"):
            target = folder / tile.parent.name / tile.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(tile, target)
    gchtid = outside / "gchtid" / "HMU-GC-HE-30K" / "all_image" / "STR"
    gchtid.mkdir(parents=True)
    for tile in tiles[:4]:
        shutil.copy(tile, gchtid / tile.name)
    (outside / "secret.png").write_bytes(tiles[0].read_bytes())

    (root / "link-out").symlink_to(outside)
    (root / "link-chain").symlink_to(root / "link-out")
    (root / "absolute-link-out").symlink_to(outside.resolve())
    (root / "link-loop").symlink_to(root / "link-loop")
    (root / "link-in").symlink_to(root / "gashissdb")
    (root / "tile.png").write_bytes(tiles[0].read_bytes())

    # A dataset whose class folder and one tile link out: open_dataset skips both itself.
    linked = root / "linked" / "160"
    shutil.copytree(root / "gashissdb" / "160" / "Normal", linked / "Normal")
    (linked / "Abnormal").symlink_to(outside / "160" / "Abnormal")
    (linked / "Normal" / "Normal-99999.png").symlink_to(outside / "secret.png")
    # Datasets whose size or GCHTID folder is a link: only the app's check catches these.
    (root / "mixed").mkdir()
    (root / "mixed" / "160").symlink_to(outside / "160")
    (root / "gchtid").mkdir()
    (root / "gchtid" / "HMU-GC-HE-30K").symlink_to(outside / "gchtid" / "HMU-GC-HE-30K")
    return {"root": root, "outside": outside}


def outside_files(tree) -> set[Path]:
    return {path.resolve() for path in tree["outside"].rglob("*.png")}


# --------------------------------------------------------------------------- library


@pytest.mark.parametrize("name, message", HOSTILE_NAMES, ids=HOSTILE_IDS)
def test_resolve_inside_rejects(name, message, tree):
    with pytest.raises(DatasetError, match=message):
        resolve_inside(tree["root"], name)


@pytest.mark.parametrize("name", ["gashissdb", "gashissdb/160", " gashissdb/160/ ", "./gashissdb", "link-in", "link-in/160/Normal"])
def test_resolve_inside_accepts(name, tree):
    folder = resolve_inside(tree["root"], name)
    assert folder.is_dir()
    assert folder.is_relative_to(tree["root"].resolve())


def test_subfolders_hide_links_out(tree):
    names = subfolders(tree["root"], tree["root"])
    assert names == ["gashissdb", "gchtid", "link-in", "linked", "mixed"]


def test_configured_roots_resolve_and_deduplicate(tree, tmp_path):
    alias = tmp_path / "alias"
    alias.symlink_to(tree["root"])
    value = os.pathsep.join([str(tree["root"]), str(alias), str(tmp_path / "missing"), "", str(tree["root"] / "tile.png")])
    assert configured_roots({"GASTRICVISION_DATA_ROOTS": value}) == [tree["root"].resolve()]


def test_open_dataset_skips_links_out(tree):
    dataset = open_dataset(resolve_inside(tree["root"], "linked"))
    assert {record.label for record in dataset.records} == {"Normal"}
    assert len(dataset.skipped_links) == 2
    assert not {record.path.resolve() for record in dataset.records} & outside_files(tree)


@pytest.mark.parametrize("name", ["mixed", "gchtid"])
def test_paths_outside_finds_linked_folders(name, tree):
    dataset = open_dataset(resolve_inside(tree["root"], name))
    outside = paths_outside([record.path for record in dataset.records], dataset.root)
    assert sorted(outside) == sorted(record.path for record in dataset.records)
    assert {path.resolve() for path in outside} <= outside_files(tree)


def test_paths_outside_keeps_inside(tree):
    dataset = open_dataset(resolve_inside(tree["root"], "link-in"))
    assert len(dataset.records) == 8
    assert paths_outside([record.path for record in dataset.records], dataset.root) == []


# --------------------------------------------------------------------------- app


@pytest.fixture()
def app(tree, monkeypatch, tmp_path):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    from tests.helpers import save_random_weights

    weights = tmp_path / "weights"
    save_random_weights(weights, ["binary"])
    monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(weights))
    monkeypatch.setenv("GASTRICVISION_DATA_ROOTS", str(tree["root"]))
    monkeypatch.setenv("GASTRICVISION_CACHE", str(tmp_path / "cache"))
    return AppTest.from_file(str(REPO / "app" / "Home.py"), default_timeout=600)


def opened_dataset(at):
    return at.session_state["gv_dataset"] if "gv_dataset" in at.session_state else None


def assert_nothing_outside_listed(at, tree) -> None:
    """No text of the page names a file or folder of the outside tree."""
    outside = str(tree["outside"])
    for kind in ("markdown", "caption", "text", "error", "warning", "info", "success"):
        for element in getattr(at, kind):
            assert outside not in element.value, element.value
            assert "secret.png" not in element.value, element.value


def test_sidebar_rejects_hostile_names(app, tree):
    at = app.run()
    for name, message in HOSTILE_NAMES:
        at.text_input(key="gv_relative").set_value(name).run()
        assert not at.exception, (name, [e.value for e in at.exception])
        errors = [e.value for e in at.error]
        assert len(errors) == 1, (name, errors)
        assert re.search(message, errors[0]), (name, errors[0])
        assert opened_dataset(at) is None, name
        assert_nothing_outside_listed(at, tree)

    # The page still works with a good folder afterwards.
    at.text_input(key="gv_relative").set_value("gashissdb").run()
    assert not at.error
    assert at.success[0].value.startswith("gashissdb layout, 160 px: 8 tiles")


@pytest.mark.parametrize("name", ["linked", "mixed", "gchtid"])
def test_sidebar_dataset_never_reaches_outside(name, app, tree):
    at = app.run()
    at.text_input(key="gv_relative").set_value(name).run()
    assert not at.exception
    choice = opened_dataset(at)
    if name == "linked":
        records = {record.path.resolve() for record in choice.dataset.records}
        assert records and not records & outside_files(tree)
        assert any("2 files or folders behind symbolic links" in c.value for c in at.caption)
        at.switch_page("views/batch.py").run()
        at.button(key="batch_run_dataset").click().run()
        rows = at.dataframe[0].value.to_dict("records")
        assert len(rows) == len(records)
        assert not any("secret" in row["file"] or "Abnormal" in row["file"] for row in rows)
    else:
        assert choice is None
        errors = [e.value for e in at.error]
        assert len(errors) == 1, errors
        assert "every image is behind a symbolic link that leads outside the folder" in errors[0]
    assert_nothing_outside_listed(at, tree)


def test_query_parameters_open_nothing(app, tree):
    app.query_params.update(
        {
            "gv_relative": "../outside",
            "dataset": "/etc",
            "folder": "link-out",
            "path": str(tree["outside"]),
            "root": str(tree["outside"]),
            "gv_root": "0",
            "page": "../../etc/passwd",
        }
    )
    at = app.run()
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.text_input(key="gv_relative").value == ""
    assert opened_dataset(at) is None
    assert_nothing_outside_listed(at, tree)

    at.switch_page("views/review.py").run()
    at.radio(key="review_source").set_value("Dataset folder").run()
    assert not at.exception
    assert any("Choose a dataset folder in the sidebar" in i.value for i in at.info)
    assert_nothing_outside_listed(at, tree)


def test_app_never_reads_query_parameters():
    """Check the premise of the query parameter test: no page reads st.query_params."""
    for path in (REPO / "app").rglob("*.py"):
        text = path.read_text()
        assert "query_params" not in text, path
        assert "experimental_get_query_params" not in text, path
