"""hico.runs: how the app sees runs (reserved names, states, stopping)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hico.runs import (
    checkpoints,
    curves,
    epoch_checkpoints,
    epoch_features,
    exit_path,
    finetune_curve,
    finetune_folder,
    finetune_jobs,
    job_status,
    launch,
    launch_finetune,
    list_runs,
    log_path,
    reserve_run_dir,
    run_info,
    stop,
)


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
    log.with_suffix(".pid").write_text(str(os.getpid()))  # its process (here: this one) is alive
    assert run_info(run).state == "starting"
    exit_path(run).write_text(json.dumps({"exit_code": 2, "error": "hico: error: no readable video in /x"}))
    info = run_info(run)
    assert info.state == "failed" and "no readable video" in info.error
    assert [r.name for r in list_runs(tmp_path)] == [run.name]


def wait(process, seconds=300):
    process.wait(timeout=seconds)


def test_launched_failures_are_read_from_the_exit_record_not_the_log(tmp_path):
    """A pretraining and a fine-tuning that fail at once: their state and one-line error come from what the
    ``hico`` command recorded, and stay when the console log is emptied."""
    run, process = launch("hico", data=tmp_path / "missing", root=tmp_path / "runs")
    wait(process)
    ft, ft_process = launch_finetune("random", tmp_path / "missing", folds=2, epochs=1, size=64, root=tmp_path)
    wait(ft_process)
    for path in (run, ft):
        log_path(path).write_text("hico: error: not this line\n")  # whatever the log says is not read
    info = run_info(run)
    assert info.state == "failed" and info.error.startswith("hico: error: ") and "missing" in info.error
    (job,) = finetune_jobs(finetune_folder("random", tmp_path))
    assert job.path == ft and job.state == "failed" and "missing" in job.error and "not this" not in job.error


def test_a_launched_process_that_dies_without_recording_its_end_is_dead(tmp_path):
    out = reserve_run_dir(tmp_path / "finetune", "finetune")
    log_path(out).parent.mkdir()
    log_path(out).write_text("")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    log_path(out).with_suffix(".pid").write_text(gone.stdout)
    (job,) = finetune_jobs(tmp_path / "finetune")
    assert job.state == "dead" and str(log_path(out)) in job.error
    assert job_status(tmp_path / "finetune" / "nothing") is None


def test_the_app_parses_no_log_text():
    root = Path(__file__).resolve().parent.parent
    sources = [root / "hico" / "runs.py", *sorted((root / "app").glob("*.py"))]
    assert not [p.name for p in sources if "hico: error:" in p.read_text()]


def test_launch_finetune_runs_a_tiny_fine_tuning_and_reports_it_finished(tmp_path):
    from hico.data.synth import write_dataset

    data = write_dataset(tmp_path / "ds", 6, 4, 64, progress=False)
    folder = finetune_folder("random", tmp_path / "runs")
    assert folder == tmp_path / "runs" / "finetune-random"
    out, process = launch_finetune("random", data, folds=2, epochs=1, size=64, options=["--batch-size", "8"],
                                   root=tmp_path / "runs", env={"HICO_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert out.parent == folder and finetune_jobs(folder)[0].state == "running"
    wait(process)
    (job,) = finetune_jobs(folder)
    assert process.returncode == 0 and job.state == "finished" and job.error == "", log_path(out).read_text()[-500:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["folds"] == 2 and results["config"]["epochs"] == 1
    assert job_status(out).state == "finished"  # also from the exit record alone
    assert finetune_curve(folder)["epoch"] == [1]


def test_run_directory_layout_is_read_by_epoch(tmp_path):
    run = tmp_path / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "features").mkdir()
    for f in ("checkpoints/epoch_0000.pt", "checkpoints/epoch_0002.pt", "checkpoints/epoch_0001.pt",
              "checkpoints/last.pt", "features/epoch_0004.npz", "backbone.pt"):  # fmt: skip
        (run / f).write_text("")
    assert epoch_checkpoints(run) == {e: run / f"checkpoints/epoch_000{e}.pt" for e in (0, 1, 2)}
    assert list(epoch_checkpoints(run)) == [0, 1, 2]
    assert epoch_features(run) == {4: run / "features/epoch_0004.npz"}
    assert checkpoints(run) == {"final backbone": run / "backbone.pt", "last": run / "checkpoints/last.pt"}
    assert epoch_checkpoints(tmp_path / "none") == {} and checkpoints(tmp_path / "none") == {}


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


def test_progress_delete_and_resume_of_a_finished_run(tiny_runs, tmp_path):
    import shutil

    from hico import runs

    run = tmp_path / "runs" / "tiny"
    shutil.copytree(tiny_runs / "tiny", run)
    p = runs.progress(run)
    status = json.loads((run / "status.json").read_text())
    assert p["steps"] == status["steps_per_epoch"] * status["epochs"] == p["step"]  # finished: every step done
    assert p["seconds_left"] == 0
    with pytest.raises(ValueError, match="only a stopped run can be resumed"):
        runs.resume(run)
    (run / "status.json").write_text(json.dumps({**status, "state": "running", "pid": os.getpid()}))
    with pytest.raises(ValueError, match="stop it before deleting it"):
        runs.delete(run)
    assert (run / "config.yaml").is_file()  # refused: nothing removed
    (run / "status.json").write_text(json.dumps(status))
    runs.delete(run)
    assert not run.exists()
