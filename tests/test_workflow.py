"""The workflow a newcomer runs, on the bundled data_samples/: ``hico pretrain --preset demo``, then fine-tune,
probe and embed its backbone. About two minutes on a 2-core CPU (the demo preset itself is most of it)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import scratch

from hico.cli import SAMPLES, main
from hico.train.rundir import read_metrics, read_status

pytestmark = pytest.mark.slow  # minutes: the demo preset in full, then one epoch of every method


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Iterator[Path]:
    with scratch(tmp_path_factory, "demo") as tmp, pytest.MonkeyPatch.context() as mp:
        out = tmp / "run"
        mp.setenv("HICO_CACHE", str(tmp / "cache"))
        assert main(["pretrain", "--preset", "demo", "--out", str(out), "--no-progress"]) == 0
        mp.undo()
        yield out


# What the demo preset guarantees, measured, not one machine's trajectory: a run is deterministic on one CPU, but
# another CPU (AVX2 / AVX-512 kernels round differently) gives another trajectory, as another seed does. Measured
# with `hico pretrain --preset demo --set train.seed=S` (the test runs S = 0) on a 2-core AVX-512 x86-64 CPU:
#   seed  train_total ep1 -> ep10 (drop)   holdout_con ep0 -> ep10 (drop)   k-NN ep0 -> ep10 local / medium / global
#   0     12.615 -> 12.180 (0.435)         14.741 -> 11.970 (2.771)         .531->.938  .406->.844  .542->.708
#   1     12.513 ->  9.912 (2.601)         14.435 ->  9.759 (4.676)         .469->.729  .479->.740  .583->.750
#   (seed 0 on the first CPU it was written on: a train_total drop of more than 1.0). Only two seeds so far: rerun
#   `python bench/demo_margins.py --seeds 0 1 2 3` on a free machine to widen the sample.
# Each margin below is about half the worst figure measured.
TRAIN_DROP = 0.2  # train_total: epoch 1 -> last epoch; worst measured 0.435 (seed 0)
HOLDOUT_DROP = 1.3  # holdout_con: before training -> last epoch; worst measured 2.771 (seed 0)
KNN_RISE = 0.1  # k-NN accuracy on held-out videos, mean rise of the three levels; worst measured 0.229 (seed 1)
# Chance level of the held-out loss: con = lam * 3 peer terms + (1 - lam) * 2 cross terms of 2 InfoNCE each, and
# an InfoNCE over N = batch_size pairs that tells nothing apart is ln(2N - 1); random init starts above it.
HOLDOUT_CHANCE = (0.5 * 3 + 0.5 * 4) * math.log(2 * 16 - 1)


def test_demo_preset_pretrains_and_learns(demo_run):
    assert read_status(demo_run)["state"] == "finished"
    for name in ("config.yaml", "metrics.jsonl", "backbone.pt", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (demo_run / name).is_file(), name
    epochs = [r for r in read_metrics(demo_run) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == list(range(31))  # before training, then 30 epochs
    assert all(math.isfinite(v) for r in epochs for v in r.values() if isinstance(v, float))
    before, first, last = epochs[0], epochs[1], epochs[-1]
    # The promise of the preset: the loss falls and k-NN accuracy on held-out videos rises.
    assert before["holdout_con"] > HOLDOUT_CHANCE  # random init: worse than chance (the margin below is real)
    assert last["holdout_con"] < before["holdout_con"] - HOLDOUT_DROP
    assert last["train_total"] < first["train_total"] - TRAIN_DROP
    levels = ("local", "medium", "global")
    rise = sum(last[f"knn_{level}"] - before[f"knn_{level}"] for level in levels) / len(levels)
    assert rise > KNN_RISE, {level: (before[f"knn_{level}"], last[f"knn_{level}"]) for level in levels}


def test_finetune_probe_and_embed_the_demo_backbone(demo_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    ft = tmp_path / "ft"
    argv = ["finetune", "--backbone", str(demo_run), "--data", str(SAMPLES), "--folds", "3", "--epochs", "2"]
    argv += ["--size", "64", "--frames-per-video", "4", "--test-frames-per-video", "4", "--out", str(ft)]
    assert main([*argv, "--no-progress"]) == 0
    results = json.loads((ft / "results.json").read_text())
    assert results["n_videos"] == 36 and len(results["folds"]) == 3
    # the videos whose labels the demo run's soft_ce used (and their patients' others) are never tested
    labelled = set(json.loads((demo_run / "labelled_videos.json").read_text())["videos"])
    tested = [v for f in results["folds"] for v in f["test_videos"]]
    assert labelled and results["label_overlap"] == len(labelled) and not set(tested) & labelled
    assert len(tested) == len(set(tested)) == 36 - len(results["kept_in_training"])
    assert sum(np.sum(f["protocols"]["honest_final"]["confusion"]) for f in results["folds"]) == len(tested) * 4

    probe_json = tmp_path / "probe.json"
    argv = ["probe", "--backbone", str(demo_run / "backbone.pt"), "--data", str(SAMPLES), "--size", "64"]
    assert main([*argv, "--folds", "3", "--frames-per-video", "4", "--out", str(probe_json)]) == 0
    probe = json.loads(probe_json.read_text())
    assert set(probe["levels"]) == {"local", "medium", "global"} and probe["n_frames"] == 36 * 4

    npz = tmp_path / "emb.npz"
    argv = ["embed", "--backbone", str(demo_run), "--data", str(SAMPLES), "--size", "64", "--frames-per-video", "2"]
    assert main([*argv, "--out", str(npz)]) == 0
    with np.load(npz, allow_pickle=False) as z:
        assert z["level_global"].shape[0] == 72 and len(z["thumb"]) == 72
    assert (tmp_path / "emb_thumbs" / "000071.png").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("method", ["simclr", "uscl", "ivpp", "mocov2", "ucl"])
def test_demo_preset_runs_for_every_method(method, tmp_path, monkeypatch):
    """Every method trains through the same preset on data_samples/ (1 short epoch here; the full preset for
    hico above)."""
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    extra = ["--set", "train.epochs=1", "--set", "train.pairs_per_video=2"]
    if method == "uscl":
        extra += ["--set", "model.num_classes=3", "--set", "data.label_rate=0.5"]  # data_samples has 3 classes
    if method in ("mocov2", "ucl"):
        extra += ["--set", "loss.queue_size=256"]  # a queue smaller than the data set's frames per epoch x 2
    argv = ["pretrain", "--preset", "demo", "--config", method, "--out", str(out), "--no-progress", *extra]
    assert main(argv) == 0
    epochs = [r for r in read_metrics(out) if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(np.isfinite(r["train_total"]) for r in epochs[1:])
    assert (out / "backbone.pt").is_file() and 0 <= epochs[-1]["knn_global"] <= 1
