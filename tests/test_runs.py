"""hico.runs: how the app sees runs (reserved names, states, stopping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from hico.runs import curves, list_runs, log_path, reserve_run_dir, run_info, stop


def test_reserved_run_directories_are_distinct_even_within_one_second(tmp_path):
    paths = [reserve_run_dir(tmp_path, "hico") for _ in range(5)]
    assert len(set(paths)) == 5 and all(p.is_dir() and not any(p.iterdir()) for p in paths)


def write_run(path, status=None, metrics=()):
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(
        yaml.safe_dump({"name": "simclr", "data": {"path": "/d"}, "train": {"epochs": 3}})
    )
    if status is not None:
        (path / "status.json").write_text(json.dumps(status))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    return path


def test_states_from_status_and_process(tmp_path):
    finished = write_run(tmp_path / "a", {"state": "finished", "pid": os.getpid(), "epoch": 3, "epochs": 3})
    assert run_info(finished).state == "finished" and run_info(finished).method == "simclr"
    alive = write_run(tmp_path / "b", {"state": "running", "pid": os.getpid(), "epoch": 1, "epochs": 3})
    assert run_info(alive).state == "running"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = write_run(tmp_path / "c", {"state": "running", "pid": int(gone.stdout), "epoch": 1, "epochs": 3})
    assert run_info(dead).state == "dead"  # killed without a chance to write its status
    setting_up = write_run(tmp_path / "d")
    (setting_up / ".lock").write_text(str(os.getpid()))  # no status.json yet, and its process holds the lock
    assert run_info(setting_up).state == "starting"
    assert run_info(tmp_path / "nothing") is None
    assert not stop(finished) and not stop(dead)


def test_a_launch_that_fails_before_its_config_is_reported_with_its_error(tmp_path):
    run = reserve_run_dir(tmp_path, "hico")
    assert run_info(run) is None  # reserved by someone else: no log, not a run
    log = log_path(run)
    log.parent.mkdir()
    log.write_text("")
    assert run_info(run).state == "starting"
    log.write_text("hico: error: no readable video in /x\n")
    info = run_info(run)
    assert info.state == "failed" and "no readable video" in info.error
    assert [r.name for r in list_runs(tmp_path)] == [run.name]


def test_curves_split_steps_and_epochs_and_tolerate_a_partial_line(tmp_path):
    run = write_run(tmp_path / "r", {"state": "running", "pid": os.getpid()}, [
        {"kind": "epoch", "epoch": 0, "knn_global": 0.5}, {"kind": "step", "step": 1, "total": 3.0},
    ])  # fmt: skip
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "st')
    c = curves(run)
    assert [r["step"] for r in c["step"]] == [1] and [r["epoch"] for r in c["epoch"]] == [0]


def test_list_runs_newest_first(tmp_path):
    old = write_run(tmp_path / "old", {"state": "finished", "updated": time.time() - 100})
    new = write_run(tmp_path / "new", {"state": "finished", "updated": time.time()})
    assert [r.path for r in list_runs(tmp_path)] == [new, old]


def test_finetune_curve_pools_the_folds_test_frames(tmp_path):
    from hico.runs import finetune_curve

    assert finetune_curve(tmp_path / "none") is None

    def history(*acc):
        return [{"epoch": e + 1, "test_accuracy": a} for e, a in enumerate(acc)]

    folds = [  # 30 test frames at 0.5 then 0.9; 10 test frames at 0.1 then 0.3
        {"n_test_frames": 30, "history": history(0.5, 0.9)},
        {"n_test_frames": 10, "history": history(0.1, 0.3)},
    ]
    for name, scale in (("finetune-20260101-000000", 0.0), ("finetune-20260102-000000", 1.0)):
        (tmp_path / name).mkdir()
        old_or_new = [{**f, "history": [{**h, "test_accuracy": h["test_accuracy"] * scale} for h in f["history"]]}
                      for f in folds]  # fmt: skip
        (tmp_path / name / "results.json").write_text(json.dumps({"folds": old_or_new}))
    curve = finetune_curve(tmp_path)
    assert curve["name"] == "finetune-20260102-000000"  # the newest
    assert curve["epoch"] == [1, 2]
    assert curve["accuracy"] == pytest.approx([(30 * 0.5 + 10 * 0.1) / 40, (30 * 0.9 + 10 * 0.3) / 40])
