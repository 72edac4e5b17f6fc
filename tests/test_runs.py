"""hico.runs: how the app sees runs (reserved names, states, stopping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

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
    assert run_info(write_run(tmp_path / "d")).state == "starting"
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
