"""Pretraining: the run directory, resume after Ctrl-C and after a kill, non-finite losses, the sampler."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_RUN

from hico.cli import main
from hico.config import load_method
from hico.train.rundir import read_metrics, read_status
from hico.train.sampler import EpochBatchSampler
from hico.train.trainer import NonFiniteLossError, Trainer, _constant_then_cosine, pretrain

TINY = [  # a few seconds per run on a 2-core CPU, on conftest's tiny_data
    *TINY_RUN,
    "train.epochs=4",
    "train.lr=0.001",
    "train.constant_epochs=1",
    "train.holdout=0.25",
    "train.knn_frames_per_video=2",
    "train.knn_k=3",
]


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))


def cli(args: list[str], env_cache: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "HICO_CACHE": str(env_cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hico.cli", *args], env=env, **kw)


def pretrain_args(data: Path, out: Path, extra: tuple[str, ...] = (), config: str = "hico") -> list[str]:
    args = ["pretrain", "--config", config, "--data", str(data), "--out", str(out), "--no-progress"]
    for item in (*TINY, *extra):
        args += ["--set", item]
    return args


def epoch_records(run: Path) -> list[dict]:
    return [r for r in read_metrics(run) if r["kind"] == "epoch"]


def same_numbers(a: dict, b: dict, keys=None) -> None:
    for k in keys or [k for k in a if k.startswith(("train_", "holdout_", "knn_"))]:
        assert math.isclose(a[k], b[k], rel_tol=1e-4, abs_tol=1e-5), (k, a[k], b[k])


def test_run_directory_holds_everything(tiny_data, tmp_path):
    run = pretrain(load_method("hico", [*TINY, f"data.path={tiny_data}"]), out=tmp_path / "run", progress=False)
    root = run.root
    assert {p.name for p in root.iterdir()} >= {
        "config.yaml",
        "metrics.jsonl",
        "status.json",
        "checkpoints",
        "backbone.pt",
    }
    snapshots = {f"epoch_000{e}.pt" for e in (0, 1, 2, 4)}  # train.epoch_checkpoints: on by default
    assert {p.name for p in (root / "checkpoints").iterdir()} == {"last.pt", "best.pt", *snapshots}
    config = yaml.safe_load((root / "config.yaml").read_text())
    assert config["train"]["epochs"] == 4 and config["data"]["path"] == str(tiny_data.resolve())
    assert config["model"]["levels"] == ["p2", "p4", "p5"]  # fully resolved, not just the overrides
    assert read_status(root)["state"] == "finished"
    records = read_metrics(root)
    steps = [r for r in records if r["kind"] == "step"]
    epochs = epoch_records(root)
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3, 4]  # epoch 0: before training
    for r in steps:
        assert {
            "total",
            "local",
            "medium",
            "global",
            "global_local",
            "global_medium",
            "soft_ce",
            "lr",
            "pairs_per_s",
        } <= set(r)
    for r in epochs[1:]:
        assert {"train_total", "holdout_con", "knn_local", "knn_medium", "knn_global", "pairs_per_s"} <= set(r)
        assert -1 <= r["holdout_neg_sim"] <= 1 and -1 <= r["holdout_pos_sim"] <= 1
        assert 0 <= r["knn_global"] <= 1
    assert [r["step"] for r in steps] == list(range(1, len(steps) + 1))
    # the lr is constant for one epoch, then decays
    per_epoch = len(steps) // 4
    assert steps[0]["lr"] == steps[per_epoch - 1]["lr"] == pytest.approx(1e-3)
    assert steps[-1]["lr"] < steps[per_epoch]["lr"] < 1e-3
    ckpt = torch.load(root / "checkpoints" / "last.pt", weights_only=True)  # loads safely
    assert ckpt["epoch"] == 4 and ckpt["global_step"] == len(steps)
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    from hico.models import resolve_backbone

    resolve_backbone(root)  # backbone.pt loads back into a model
    assert not list(root.rglob("*.tmp")) and not (root / ".lock").exists()
    # k-NN features of epochs 0, 1, 2, 4 (powers of two and the last) stay for the app's maps
    assert sorted(p.name for p in (root / "features").iterdir()) == [f"epoch_000{e}.npz" for e in (0, 1, 2, 4)]
    from hico.eval.features import Features

    snap = Features.load(root / "features" / "epoch_0004.npz")
    assert snap.meta["epoch"] == 4 and len(snap) == 18 * 2 and set(snap.levels) == {"local", "medium", "global"}


def test_epoch_checkpoints_kept_at_snapshot_epochs_without_knn_or_holdout(tiny_data, tmp_path):
    """epoch_NNNN.pt of epochs 0 (before training), 1, 2 and 3 (the last), even when evaluate() returns early."""
    from hico.models import resolve_backbone

    extra = ["train.epochs=3", "train.holdout=0", "train.knn_every=0", f"data.path={tiny_data}"]
    root = pretrain(load_method("hico", [*TINY, *extra]), out=tmp_path / "run", progress=False).root
    assert not (root / "features").exists()  # no k-NN features without held-out videos, yet checkpoints:
    names = sorted(p.name for p in (root / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt", "last.pt"]
    weights = {}
    for e in range(4):
        model = resolve_backbone(root / "checkpoints" / f"epoch_{e:04d}.pt", seed=0)  # backbone.pt's format
        weights[e] = {k: v.clone() for k, v in model.backbone_state_dict().items()}
    assert any(k.startswith("fpn.") for k in weights[0])
    final = resolve_backbone(root, seed=0)  # backbone.pt: the weights of the last epoch
    for k, v in final.backbone_state_dict().items():
        torch.testing.assert_close(weights[3][k], v, rtol=0, atol=0)
    conv = "backbone.conv1.weight"
    assert not torch.equal(weights[0][conv], weights[3][conv])  # trained in between
    assert not torch.equal(weights[1][conv], weights[2][conv])  # one per epoch, not one file copied
    assert not list(root.rglob("*.tmp"))


def test_epoch_checkpoints_can_be_turned_off(tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"--set train.epoch_checkpoints=maybe: expected true or false"):
        load_method("hico", [*TINY, "train.epoch_checkpoints=maybe"])
    cfg = load_method("hico", [*TINY, "train.epochs=1", "train.epoch_checkpoints=false", f"data.path={tiny_data}"])
    root = pretrain(cfg, out=tmp_path / "run", progress=False).root
    assert sorted(p.name for p in (root / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert sorted(p.name for p in (root / "features").iterdir()) == ["epoch_0000.npz", "epoch_0001.npz"]


def test_run_records_the_videos_whose_labels_the_loss_used(tiny_data, tmp_path, monkeypatch):
    """labelled_videos.json names exactly the videos whose labels reached the loss, and the videos trained on;
    an old run without it gets the same record back from its config.yaml, with a warning."""
    from hico.eval.features import Features

    fed: set[tuple[int, int]] = set()  # (video index in the training set, label) of every pair the loss saw
    step = Trainer.step

    def spy(self, batch):
        fed.update(zip(batch["video"].tolist(), batch["label"].tolist(), strict=True))
        return step(self, batch)

    monkeypatch.setattr(Trainer, "step", spy)
    extra = ["train.epochs=1", "train.pairs_per_video=4", "data.label_rate=0.5", f"data.path={tiny_data}"]
    root = pretrain(load_method("hico", [*TINY, *extra]), out=tmp_path / "run", progress=False).root
    record = json.loads((root / "labelled_videos.json").read_text())
    assert record["dataset"] == str(tiny_data.resolve())
    snap = Features.load(root / "features" / "epoch_0001.npz")
    holdout = {snap.video_ids[i] for i in snap.meta["holdout"]}
    assert set(record["pretrained_videos"]) == set(snap.video_ids) - holdout
    train_ids = [v for v in snap.video_ids if v not in holdout]  # in the order of the training set
    assert {train_ids[v] for v, label in fed if label >= 0} == set(record["videos"])
    for c in ("covid", "pneumonia", "regular"):  # half of each class's training videos (at least one)
        n = sum(v.startswith(c) for v in train_ids)
        assert sum(v.startswith(c) for v in record["videos"]) == max(1, round(0.5 * n))
    assert not set(record["videos"]) & holdout

    from hico.train.labelled import read_record

    (root / "labelled_videos.json").unlink()  # a run made before the file existed
    with pytest.warns(UserWarning, match="recomputed from its config.yaml"):
        old = read_record(root)
    assert old.labelled == set(record["videos"]) and old.pretrained == set(record["pretrained_videos"])

    fed.clear()
    extra += ["train.knn_every=0", "train.epoch_checkpoints=false"]
    root = pretrain(load_method("simclr", [*TINY, *extra]), out=tmp_path / "simclr", progress=False).root
    record = json.loads((root / "labelled_videos.json").read_text())
    assert record["videos"] == [] and not any(label >= 0 for _, label in fed) and record["pretrained_videos"]


def test_refuses_an_existing_run_directory(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    assert main(pretrain_args(tiny_data, out)) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--resume" in err and len(err.strip().splitlines()) == 1
    assert (out / "something").read_text() == "x" and len(list(out.iterdir())) == 1


def test_a_live_lock_keeps_a_second_process_out(tiny_data, tmp_path):
    from hico.train.rundir import RunDir

    first = RunDir.create(tmp_path / "run", {"x": 1})
    with pytest.raises(FileExistsError, match="in use by process"):
        RunDir(tmp_path / "run").acquire()
    first.release()
    RunDir(tmp_path / "run").acquire()  # free again


def _interrupted_then_resumed(tiny_data, tmp_path, sig: int) -> Path:
    out = tmp_path / f"run-{sig}"
    proc = cli(pretrain_args(tiny_data, out), tmp_path / "cache", stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for step 4: the signal lands in the middle of epoch 2 (3 steps each)
        steps = [r for r in read_metrics(out) if r["kind"] == "step"]
        if steps and steps[-1]["step"] >= 4:
            break
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert read_status(out)["state"] == "interrupted"
        assert "--resume" in err
        ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
        assert ckpt["global_step"] >= 4  # saved where it stopped, not at the previous epoch's end
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = cli(
        ["pretrain", "--resume", str(out), "--no-progress"], tmp_path / "cache", stderr=subprocess.PIPE, text=True
    )
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resumed from" in err
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill"])
def test_killed_and_resumed_run_ends_like_an_uninterrupted_one(tiny_data, tmp_path, sig):
    whole = tmp_path / "whole"
    proc = cli(pretrain_args(tiny_data, whole), tmp_path / "cache", stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    resumed = _interrupted_then_resumed(tiny_data, tmp_path, sig)
    a, b = epoch_records(whole), epoch_records(resumed)
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [0, 1, 2, 3, 4]  # no duplicated records
    for ra, rb in zip(a, b, strict=True):
        same_numbers(ra, rb)
    sa = [r["step"] for r in read_metrics(resumed) if r["kind"] == "step"]
    assert sa == sorted(set(sa))  # steps logged once each
    wa = torch.load(whole / "backbone.pt", weights_only=True)["state_dict"]
    wb = torch.load(resumed / "backbone.pt", weights_only=True)["state_dict"]
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    kept = [f"epoch_000{e}.pt" for e in (0, 1, 2, 4)]
    assert sorted(p.name for p in (resumed / "checkpoints").glob("epoch_*")) == kept
    for name in kept:  # those written before the interruption and those written after it
        wa = torch.load(whole / "checkpoints" / name, weights_only=True)["state_dict"]
        wb = torch.load(resumed / "checkpoints" / name, weights_only=True)["state_dict"]
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    assert read_status(resumed)["state"] == "finished"


def test_non_finite_loss_stops_naming_step_and_term(tiny_data, tmp_path, monkeypatch):
    cfg = load_method("hico", [*TINY, f"data.path={tiny_data}"])
    calls = {"n": 0}
    real_init = Trainer.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        real_forward = self.method.loss.forward

        def poisoned(*args):
            terms = real_forward(*args)
            calls["n"] += 1
            if calls["n"] == 5:  # the second step of epoch 2 (3 steps per epoch; holdout calls excluded below)
                terms["medium"] = terms["medium"] * float("nan")
                terms["total"] = terms["total"] + terms["medium"]
            return terms

        self.method.loss.forward = poisoned
        self._holdout = lambda model: {"holdout_con": 0.0}  # keep the counter on training steps

    monkeypatch.setattr(Trainer, "__init__", init)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match=r"step 5 \(epoch 2\): term 'medium' is nan"):
        pretrain(cfg, out=out, progress=False)
    status = read_status(out)
    assert status["state"] == "failed" and "term 'medium'" in status["error"]
    ckpt = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 3  # the last good checkpoint, untouched
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (out / "backbone.pt").exists()


def test_hico_code_finishes_when_every_batch_holds_one_labelled_video(tmp_path):
    """The authors' smoothing alpha / (N - 1) has no value at N = 1: such a batch skips soft_ce and is counted.

    One class of data_samples/, 4 videos, label rate 0.25: exactly one video is labelled (at least one per
    class is), and with one pair per video and a batch of 4 every step holds it and no other labelled one.
    """
    import shutil

    from hico.cli import SAMPLES

    data = tmp_path / "one_class"
    for video in sorted((SAMPLES / "covid").iterdir())[:4]:
        shutil.copytree(video, data / "covid" / video.name)
    over = ["model.init=random", "model.image_size=64", "augment.size=64", "data.working_size=64"]
    over += ["model.num_classes=1", "data.label_rate=0.25", "train.batch_size=4", "train.pairs_per_video=1"]
    over += ["train.epochs=2", "train.log_every=1", "train.epoch_checkpoints=false", f"data.path={data}"]
    run = pretrain(load_method("hico-code", over), out=tmp_path / "run", progress=False)
    assert read_status(run.root)["state"] == "finished"
    steps = [r for r in read_metrics(run.root) if r["kind"] == "step"]
    assert len(steps) == 2
    for r in steps:
        assert r["soft_ce_skipped"] == 1.0 and r["soft_ce"] == 0.0
        assert math.isfinite(r["total"]) and r["total"] == pytest.approx(r["con"], rel=1e-6)
    assert [r["train_soft_ce_skipped"] for r in epoch_records(run.root)[1:]] == [1.0, 1.0]  # fraction of steps


def test_sampler_slices_a_global_batch_across_ranks_and_skips_on_resume():
    n, b = 50, 8
    single = EpochBatchSampler(n, b, seed=3)
    ranks = [EpochBatchSampler(n, b, seed=3, rank=r, world=2) for r in range(2)]
    for s in (single, *ranks):
        s.set_epoch(2)
    whole = list(single)
    parts = [list(s) for s in ranks]
    assert len(whole) == n // b
    for step, batch in enumerate(whole):
        assert parts[0][step] + parts[1][step] == batch
    single.set_epoch(2, start=4)
    assert list(single) == whole[4:]
    single.set_epoch(3)
    assert list(single) != whole
    flat = [i for batch in whole for i in batch]
    assert len(set(flat)) == len(flat)
    with pytest.raises(ValueError, match="divisible"):
        EpochBatchSampler(n, 7, world=2)
    with pytest.raises(ValueError, match="pairs_per_video"):
        EpochBatchSampler(5, 8)


def test_lr_schedule_is_constant_then_cosine():
    assert [_constant_then_cosine(s, 10, 110) for s in (0, 9, 10)] == [1.0, 1.0, 1.0]
    assert _constant_then_cosine(60, 10, 110) == pytest.approx(0.5)
    assert _constant_then_cosine(110, 10, 110) == pytest.approx(0.0)


def test_bad_settings_fail_before_anything_is_written(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(pretrain_args(tiny_data, out, ("train.batch_sise=4",))) == 2
    assert "train.batch_sise" in capsys.readouterr().err and not out.exists()
    assert main(["pretrain", "--data", str(tmp_path / "nowhere"), "--out", str(out), "--set", "model.init=random"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_metrics_reader_tolerates_a_line_being_written(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 1}) + '\n{"kind": "st')
    assert read_metrics(tmp_path) == [{"kind": "step", "step": 1}]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["hico", "byol"])  # byol: a method with its own trained parameters
def test_torchrun_two_processes_train_one_run(tiny_data, tmp_path, config):
    """DDP on CPU (gloo) end to end: rank 0 writes the run, both ranks train on halves of the global batch."""
    import shutil

    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    out = tmp_path / "ddp"
    args = pretrain_args(tiny_data, out, ("train.epochs=2",), config)
    env = {**os.environ, "HICO_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "hico.cli", *args],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("finished:") == 1  # only rank 0 reports
    assert read_status(out)["state"] == "finished"
    steps = [r["step"] for r in read_metrics(out) if r["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) == 6  # 3 global batches of 8 per epoch
    assert [r["epoch"] for r in epoch_records(out)] == [0, 1, 2]
    assert (out / "backbone.pt").exists() and not (out / ".lock").exists()
    assert sorted(p.name for p in (out / "checkpoints").glob("epoch_*")) == [f"epoch_000{e}.pt" for e in (0, 1, 2)]


def test_ivpp_weights_each_pair_by_its_frame_distance(tiny_data, tmp_path, monkeypatch):
    from hico.losses import HiCoLoss

    cfg = load_method(
        "ivpp", [*TINY, "train.epochs=1", "data.pair_seconds=0.1", "data.fps=20", f"data.path={tiny_data}"]
    )
    assert cfg.data.sampler().max_distance == 2  # D = round(0.1 s x 20 fps)
    seen: list[torch.Tensor] = []
    forward = HiCoLoss.forward

    def spy(self, out1, out2, labels=None, weights=None):
        seen.append(weights)
        return forward(self, out1, out2, labels, weights)

    monkeypatch.setattr(HiCoLoss, "forward", spy)
    pretrain(cfg, out=tmp_path / "run", progress=False)
    assert seen and all(w is not None for w in seen)  # training steps and held-out loss both weigh the pairs
    values = {round(v, 5) for w in seen for v in w.tolist()}
    assert values <= {round(2 / 3, 5), round(1 / 3, 5)}  # (D - |d| + 1) / (D + 1) for d = 1, 2
    assert math.isfinite(epoch_records(tmp_path / "run")[-1]["train_total"])


def test_auto_workers_share_the_cores_not_the_thread_count(monkeypatch):
    """train.workers=-1 on CUDA under torchrun: the node's cores shared among its ranks, at most 8; torchrun's
    OMP_NUM_THREADS=1 (one torch thread) used to leave one worker per rank. None on CPU."""
    from hico.train.trainer import _auto_workers

    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)  # as under torchrun
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert _auto_workers(torch.device("cuda")) == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert _auto_workers(torch.device("cuda")) == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert _auto_workers(torch.device("cuda")) == 1
    assert _auto_workers(torch.device("cpu")) == 0
