"""The gastricvision command: JSON output, exit status, bad input handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gastricvision.cli import main


def run_cli(*args, weights=None, check_status=None):
    env = dict(os.environ)
    if weights is not None:
        env["GASTRICVISION_WEIGHTS"] = str(weights)
    completed = subprocess.run(
        [sys.executable, "-m", "gastricvision", *map(str, args)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    if check_status is not None:
        assert completed.returncode == check_status, completed.stderr
    return completed


def test_predict_json_for_real_tiles(random_weights, gashissdb_tile, gchtid_tile, jpeg_tile, tiff_tile):
    completed = run_cli("predict", "--json", gashissdb_tile, gchtid_tile, jpeg_tile, tiff_tile, weights=random_weights, check_status=0)
    lines = completed.stdout.strip().splitlines()
    assert len(lines) == 4
    for line, path in zip(lines, (gashissdb_tile, gchtid_tile, jpeg_tile, tiff_tile)):
        result = json.loads(line)
        assert result["path"] == str(path)
        assert set(result["binary"]["probabilities"]) == {"Normal", "Abnormal"}
        assert result["binary"]["label"] in ("Normal", "Abnormal")
        assert len(result["tissue"]["probabilities"]) == 8
        assert set(result["reconstruction"]) == {"autoencoder", "unet"}
        assert isinstance(result["reconstruction"]["unet"]["error"], float)
        assert isinstance(result["warnings"], list)
    assert "Traceback" not in completed.stderr


def test_predict_names_missing_models(random_weights, gashissdb_tile, tmp_path):
    import shutil

    shutil.copytree(random_weights / "binary", tmp_path / "binary")
    completed = run_cli("predict", "--json", gashissdb_tile, weights=tmp_path, check_status=0)
    result = json.loads(completed.stdout)
    assert result["tissue"] is None
    assert "tissue" in result["unavailable"]
    for name in ("student", "tissue", "autoencoder", "unet"):
        assert f"model {name} not available" in completed.stderr


def test_bad_input_exit_2_others_processed(random_weights, gashissdb_tile, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(gashissdb_tile.read_bytes()[:300])
    text = tmp_path / "readme.png"
    text.write_text("hello")
    completed = run_cli("predict", "--json", broken, gashissdb_tile, text, tmp_path / "missing.png", weights=random_weights)
    assert completed.returncode == 2
    assert len(completed.stdout.strip().splitlines()) == 1
    errors = [line for line in completed.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 3
    assert "broken.png" in errors[0] and "truncated or corrupt" in errors[0]
    assert "readme.png" in errors[1] and "not a recognised image" in errors[1]
    assert "missing.png: file not found" in errors[2]
    assert "Traceback" not in completed.stderr


def test_predict_folder_expands(random_weights, shared_data):
    completed = run_cli("predict", "--json", "--models", "binary", shared_data / "gashissdb", weights=random_weights, check_status=0)
    assert len(completed.stdout.strip().splitlines()) == 16


def test_predict_human_readable(random_weights, gashissdb_tile, capsys, monkeypatch):
    monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(random_weights))
    assert main(["predict", str(gashissdb_tile)]) == 0
    output = capsys.readouterr().out
    assert "P(Abnormal) =" in output
    assert "warning [scale_mismatch]" in output


def test_info_lists_models(random_weights, capsys, monkeypatch):
    monkeypatch.setenv("GASTRICVISION_WEIGHTS", str(random_weights))
    assert main(["info", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == {"binary", "student", "tissue", "autoencoder", "unet"}
    assert report["models"]["binary"]["status"] == "loaded"
    assert report["models"]["binary"]["manifest"]["architecture"] == "resnet18"


def test_data_verify_prints_published_totals(shared_data, capsys):
    assert main(["data", "verify", str(shared_data / "gashissdb")]) == 2
    output = capsys.readouterr().out
    assert "Normal           7 of  20,160" in output
    assert "INCOMPLETE" in output


def test_data_verify_class_folders_exit_0(shared_data, capsys):
    assert main(["data", "verify", str(shared_data / "lc25000")]) == 0
    assert "class-folders layout" in capsys.readouterr().out


def test_data_verify_bad_folder_exit_2(tmp_path, capsys):
    assert main(["data", "verify", str(tmp_path)]) == 2
    assert "not a dataset folder" in capsys.readouterr().err


def test_data_split_writes_csv(shared_data, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["data", "split", str(shared_data / "nct-crc-he" / "CRC-VAL-HE-7K"), "--class-map", "nct-crc-he", "--out", str(out), "--seed", "1"]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "root,path,label,split"
    assert len(rows) == 1 + 87
    assert not any(",BACK," in row or ",NORM," in row for row in rows)


@pytest.mark.parametrize(
    "number, expected",
    [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"), (13, "13th"), (21, "21st"),
     (62.4, "62nd"), (71, "71st"), (100, "100th"), (0, "0th")],
)
def test_ordinal_suffixes(number, expected):
    from gastricvision.modelcards import ordinal

    assert ordinal(number) == expected
