"""``hico study``: the label subsets, the folds, and a tiny study on data_samples/ from start to resume."""

from __future__ import annotations

import csv
import json
import math
import os

import numpy as np
import pytest

from hico.cli import SAMPLES, main
from hico.eval.probe import C_GRID
from hico.study import COLUMNS, label_subsets, study_folds

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


def test_label_subsets_are_nested_stratified_and_seeded():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=60)
    train = np.sort(rng.choice(60, size=45, replace=False))
    subsets = label_subsets(train, labels, FRACTIONS, seed=7)
    again = label_subsets(train, labels, FRACTIONS, seed=7)
    other = label_subsets(train, labels, FRACTIONS, seed=8)
    for small, large in zip(FRACTIONS, FRACTIONS[1:], strict=False):
        assert set(subsets[small]) <= set(subsets[large])  # the 5 % videos are inside the 10 % ones
    for f in FRACTIONS:
        assert set(subsets[f]) <= set(train)
        assert np.array_equal(subsets[f], again[f])
        for c in range(3):
            n = int(np.sum(labels[train] == c))
            got = int(np.sum(labels[subsets[f]] == c))
            assert got == max(1, math.ceil(f * n - 1e-9))  # per class: at least one, else the fraction rounded up
    assert np.array_equal(subsets[1.0], train)
    assert any(not np.array_equal(subsets[f], other[f]) for f in FRACTIONS[:-1])  # the seed chooses the videos


def test_study_folds_never_test_a_kept_video_nor_its_patient():
    labels = np.repeat([0, 1, 2], 8)
    groups = np.array([f"p{i // 2}" for i in range(24)])  # two videos per patient
    keep = np.zeros(24, dtype=bool)
    keep[[0, 9, 17]] = True
    splits = study_folds(labels, groups, keep, folds=4, seed=0)
    kept_groups = set(groups[keep])
    tested = np.concatenate([te for _, te in splits])
    assert len(tested) == len(set(tested.tolist()))  # a video is tested at most once
    assert not kept_groups & set(groups[tested])
    for tr, te in splits:
        assert not set(groups[tr]) & set(groups[te])  # grouped
        assert set(np.flatnonzero(keep)) <= set(tr)


def _study(out, *extra):
    args = ["study", "--methods", "simclr", "uscl", "random", "--pretrain-data", str(SAMPLES), "--eval-data",
            str(SAMPLES), "--label-fractions", "0.25", "1", "--protocols", "knn", "probe", "finetune", "--folds", "3",
            "--out", str(out), "--size", "32", "--epochs", "1", "--pairs-per-video", "2", "--batch-size", "8",
            "--finetune-epochs", "1", "--frames-per-video", "2", "--finetune-frames-per-video", "2",
            "--bootstrap", "50", "--no-progress", *extra]  # fmt: skip
    return main(args)


@pytest.mark.slow
def test_tiny_study_on_the_samples_writes_resumes_and_never_tests_labelled_videos(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "study"
    assert _study(out) == 0
    printed = capsys.readouterr().out
    assert "knn" in printed and "wrote" in printed and "difference from random" in printed

    with open(out / "study.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == COLUMNS
        rows = list(reader)
    assert [(r["method"], r["label_fraction"], r["protocol"]) for r in rows] == [
        (m, f, p) for m in ("simclr", "uscl", "random") for f in ("0.25", "1.0") for p in ("knn", "probe", "finetune")
    ]
    for r in rows:
        acc = float(r["accuracy"])
        if not math.isnan(acc):
            assert 0 <= float(r["ci_low"]) <= acc <= float(r["ci_high"]) <= 1
    assert {r["pretrain_steps"] for r in rows if r["method"] == "random"} == {""}  # no pretraining
    steps = {r["pretrain_steps"] for r in rows if r["method"] != "random"}
    assert len(steps) == 1 and int(steps.pop()) > 0  # the same budget for every pretrained method
    for method in ("simclr", "uscl"):  # seconds of training, from the run's own records (resumes count right)
        run = out / "runs" / method
        status = json.loads((run / "status.json").read_text())
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        pairs = status["steps_per_epoch"] * 8  # --batch-size 8
        expected = sum(pairs / r["pairs_per_s"] for r in epochs if r["kind"] == "epoch" and r.get("pairs_per_s"))
        seconds = [float(r["pretrain_seconds"]) for r in rows if r["method"] == method]
        assert seconds == [pytest.approx(round(expected, 1))] * 6

    study = json.loads((out / "study.json").read_text())
    labelled = set(json.loads((out / "runs" / "uscl" / "labelled_videos.json").read_text())["videos"])
    assert labelled  # USCL pretrains with some labels of these very videos ...
    tested = [v for fold in study["folds"] for v in fold["test_videos"]]
    assert not labelled & set(tested)  # ... which no method is tested on
    assert study["methods"]["uscl"]["leakage"]["label_overlap"] == len(labelled)
    for cell in study["cells"].values():  # the probe's C, chosen per fold inside its labelled videos
        assert cell["protocol"] != "probe" or (len(cell["C"]) == 3 and set(cell["C"]) <= set(C_GRID))
    # Every pretrained method against random on the same test videos: the gap of the two accuracies, paired.
    accuracy = {(r["method"], r["label_fraction"], r["protocol"]): float(r["accuracy"]) for r in rows}
    frozen = {
        (r["method"], str(r["label_fraction"]), r["protocol"]) for r in study["paired"] if r["protocol"] != "finetune"
    }
    assert frozen == {(m, f, p) for m in ("simclr", "uscl") for f in ("0.25", "1.0") for p in ("knn", "probe")}
    for r in study["paired"]:
        key = (r["method"], str(r["label_fraction"]), r["protocol"])
        assert r["difference"] == pytest.approx(accuracy[key] - accuracy[("random", *key[1:])])
        assert -1 <= r["ci_low"] <= r["ci_high"] <= 1
    n_train = {r["label_fraction"]: int(r["n_train_videos"]) for r in rows}
    assert n_train["0.25"] < n_train["1.0"]
    for fold in study["folds"]:
        assert set(fold["labelled"]["0.25"]) <= set(fold["labelled"]["1.0"]) == set(fold["train_videos"])

    # Run again with one more label fraction: the pretraining and the finished cells are reused.
    backbone = out / "runs" / "simclr" / "backbone.pt"
    mtime = os.stat(backbone).st_mtime_ns
    before = study["cells"]
    assert _study(out, "--label-fractions", "0.25", "0.5", "1") == 0
    after = json.loads((out / "study.json").read_text())["cells"]
    assert os.stat(backbone).st_mtime_ns == mtime
    assert {k: after[k] for k in before} == before
    assert {k for k in after if k not in before} == {f"{m}|0.5|{p}" for m in ("simclr", "uscl", "random")
                                                     for p in ("knn", "probe", "finetune")}  # fmt: skip

    # Other settings in the same folder are refused in one line, leaving it as it was.
    assert _study(out, "--folds", "4") == 2
    assert "other settings (folds" in capsys.readouterr().err
    assert json.loads((out / "study.json").read_text())["cells"] == after


def test_study_refuses_an_unknown_method_in_one_line(tmp_path, capsys):
    assert main(["study", "--methods", "nosuch", "--eval-data", str(SAMPLES), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--methods nosuch" in err
    assert not (tmp_path / "s" / "study.json").exists()


def test_a_method_name_wins_over_a_folder_of_that_name(tmp_path, monkeypatch):
    """``hico`` names the method even where a folder ``hico`` exists (the project's own package, in its root)."""
    from hico.study import Study, StudyConfig

    monkeypatch.chdir(tmp_path)
    (tmp_path / "hico").mkdir()
    run = tmp_path / "runs" / "mine"
    run.mkdir(parents=True)
    study = Study(StudyConfig(methods=["hico"], eval_data=str(SAMPLES), out=str(tmp_path / "s")), progress=False)
    assert study.spec_of("hico") == ("hico", "hico")
    assert study.spec_of("random") == ("random", None)
    assert study.spec_of(str(run)) == ("mine", None)
