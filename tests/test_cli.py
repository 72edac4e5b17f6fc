"""The ``hico`` command line: scan output, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ramp, write_clip, write_image

from hico.cli import main


@pytest.fixture
def small(tmp_path):
    write_clip(tmp_path / "covid" / "a.mp4", ramp(5))
    write_image(tmp_path / "regular" / "still.png", ramp(1)[0])
    (tmp_path / "regular" / "broken.avi").write_bytes(os.urandom(500))
    return tmp_path


def test_scan_json_schema(small, capsys):
    assert main(["data", "scan", str(small), "--json", "--no-cache", "--size", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {
        "videos": 2,
        "frames": 6,
        "classes": {"covid": 1, "regular": 1},
        "groups": 2,
        "unreadable": [str(small / "regular" / "broken.avi")],
        "refused": [],
    }


def test_scan_refuses_index_rows_outside_the_dataset(escaping_dataset, files_read, capsys):
    root, outside = escaping_dataset
    assert main(["data", "scan", str(root), "--json", "--no-cache", "--size", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["videos"] == 1 and out["unreadable"] == [] and out["refused"] == outside
    assert all(p.resolve().is_relative_to(root.resolve()) for p in files_read)
    assert main(["data", "scan", str(root), "--no-cache", "--size", "16"]) == 0
    table = capsys.readouterr().out
    assert "refused (outside the dataset folder, not read): 4" in table and "line 13: /etc/passwd" in table


def test_scan_table(small, capsys):
    assert main(["data", "scan", str(small), "--no-cache", "--size", "16"]) == 0
    out = capsys.readouterr().out
    assert "covid" in out and "regular" in out and "unreadable: 1" in out and "broken.avi" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split() == ["total", "2", "6", "2"]


@pytest.mark.parametrize("case", ["missing", "empty", "all_unreadable"])
def test_scan_fails_with_one_line_reason(tmp_path, capsys, case):
    root = tmp_path / "ds"
    if case != "missing":
        root.mkdir()
    if case == "all_unreadable":
        (root / "c").mkdir()
        (root / "c" / "x.mp4").write_bytes(b"nope")
    assert main(["data", "scan", str(root), "--json", "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hico: error:") and str(root) in err and len(err.splitlines()) == 1


def test_console_script_is_installed(small):
    exe = os.path.join(os.path.dirname(sys.executable), "hico")
    res = subprocess.run([exe, "data", "scan", str(small), "--json", "--no-cache"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["videos"] == 2


def test_synth_command_writes_a_scannable_set(tmp_path, capsys):
    out = tmp_path / "synth"
    args = ["data", "synth", "--out", str(out), "--videos-per-class", "2", "--frames", "3", "--size", "48"]
    assert main(args) == 0
    assert main(["data", "scan", str(out), "--json", "--no-cache", "--size", "48"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["videos"] == 6 and summary["frames"] == 18 and summary["groups"] == 3
    assert main(args) == 2  # refuses to overwrite without --overwrite
    assert "--overwrite" in capsys.readouterr().err


def test_demo_draws_pairs_from_the_sample_set(tmp_path):
    from conftest import ROOT

    assert main(["demo", "--data", str(ROOT / "data_samples"), "--out", str(tmp_path)]) == 0
    from PIL import Image

    with Image.open(tmp_path / "pairs.png") as im:
        assert im.size[0] > 600 and im.size[1] > 600


def test_set_takes_a_number_in_exponent_notation(capsys):
    # YAML 1.1 reads 3e-4 as text; the key's type makes it a number
    assert main(["model", "summary", "--config", "hico", "--set", "train.lr=3e-4", "--set", "train.max_steps=1e3"]) == 0
    capsys.readouterr()


def test_set_with_a_value_of_the_wrong_type_is_one_line_naming_it(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", "--preset", "demo", "--set", "train.lr=abc", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "hico: error: --set train.lr=abc: expected a number (float), got 'abc'"
    assert not out.exists()


def test_pretrain_without_out_makes_its_run_folder_under_hico_runs(tiny_data, tmp_path, monkeypatch, capsys):
    """The folder the app lists ($HICO_RUNS) is where a run without --out goes, named <method>-<time>."""
    from conftest import TINY_RUN

    monkeypatch.setenv("HICO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    argv = ["pretrain", "--config", "simclr", "--data", str(tiny_data), "--no-progress"]
    for item in (*TINY_RUN, "train.epochs=1", "train.max_steps=1", "train.holdout=0"):
        argv += ["--set", item]
    assert main(argv) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.startswith("simclr-") and (run / "backbone.pt").is_file()
    assert f"finished: {run}" in capsys.readouterr().out
