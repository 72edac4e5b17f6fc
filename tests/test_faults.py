"""Fault injection: races, kills, and runs that fail at any stage leave run directories that stay correct."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_RUN, load_bench

from hico.cli import main
from hico.runs import exit_path, list_runs, log_path, run_info
from hico.train.rundir import RunDir, read_status

TINY = [  # seconds per run on conftest's tiny_data: no held-out videos, no k-NN, no epoch snapshots
    *TINY_RUN,
    "train.epochs=1",
    "train.holdout=0",
    "train.epoch_checkpoints=false",
]


def pretrain_args(data: Path, out: Path, *overrides: str) -> list[str]:
    """The arguments of ``hico pretrain`` on ``data`` into ``out`` (TINY settings, then ``overrides``)."""
    args = ["pretrain", "--data", str(data), "--out", str(out), "--no-progress"]
    for item in (*TINY, *overrides):
        args += ["--set", item]
    return args


def pretrain_cli(data: Path, out: Path, *overrides: str, cache: Path) -> subprocess.CompletedProcess:
    """``hico pretrain`` on ``data`` into ``out`` as a separate process (TINY settings, then ``overrides``)."""
    args = [sys.executable, "-m", "hico.cli", *pretrain_args(data, out, *overrides)]
    env = {**os.environ, "HICO_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


# ------------------------------------------------------------------------------------------------ run lock
def test_lock_simultaneous_creates_have_exactly_one_owner(tmp_path):
    """Many processes create the same run at once: exactly one gets it, every time.

    Half the trials pause each process for 50 ms just before and just after it opens the lock file: a lock taken
    in two steps (create the file, then write the process id) is then taken by several processes in most of
    them; bench/lock_race.py measures the unpaused race (62 of 400 trials with two owners before the lock was
    an flock).
    """
    race = load_bench("lock_race")  # its trial(): processes released together race for one run
    for trial in range(24):
        owners = race.trial(tmp_path / f"run-{trial}", procs=4, pause=0.05 if trial % 2 else 0.0)
        assert owners == 1, f"trial {trial}: {owners} owners"


def test_lock_of_a_killed_process_is_free_and_a_held_one_is_not(tmp_path):
    """A lock file left by a process that is gone does not block; one held by a live process does."""
    ctx = mp.get_context("fork")
    root = tmp_path / "run"
    p = ctx.Process(target=RunDir.create, args=(root, {"x": 1}))  # exits holding the lock: never releases it
    p.start()
    p.join()
    assert (root / ".lock").exists()
    run = RunDir(root)
    run.acquire()
    assert (root / ".lock").read_text() == str(os.getpid())
    with pytest.raises(FileExistsError, match=f"in use by process {os.getpid()}"):
        RunDir(root).acquire()
    run.release()
    assert not (root / ".lock").exists()


def test_lock_released_between_open_and_flock_is_not_taken_twice(tmp_path, monkeypatch):
    """B opens .lock; before B locks it, the holder A releases (the file is removed) and C takes a new .lock. B
    then locks the removed file: it must notice that it is not the folder's lock any more, and find C's."""
    import hico.train.rundir as rundir

    root = tmp_path / "run"
    root.mkdir()
    a, b, c = RunDir(root), RunDir(root), RunDir(root)
    a.acquire()
    real_open, calls = os.open, []

    def open_then_interleave(path, *args, **kwargs):
        fd = real_open(path, *args, **kwargs)
        calls.append(path)
        if len(calls) == 1:  # B's first open: A releases and C acquires before B gets to flock
            a.release()
            c.acquire()
        return fd

    monkeypatch.setattr(rundir.os, "open", open_then_interleave)
    with pytest.raises(FileExistsError, match="in use by"):
        b.acquire()
    monkeypatch.undo()
    assert (root / ".lock").exists()
    c.release()


# ------------------------------------------------------------------------------------- stale temporary files
def test_temp_files_of_a_killed_run_are_removed_when_it_resumes(tmp_path):
    """A run killed while it replaced files leaves their temporary halves; resuming removes them (only them)."""
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    (root / "features").mkdir()
    (root / "finetune" / "a").mkdir(parents=True)
    (root / "config.yaml").write_text("name: hico\n")
    kept = [root / "config.yaml", root / "checkpoints" / "last.pt", root / "features" / "epoch_0001.npz"]
    for p in kept[1:]:
        p.write_bytes(b"weights")
    stale = [
        root / "checkpoints" / ".last.pt.k3j2_x.tmp",  # hico.io.atomic_write
        root / "checkpoints" / "epoch_0002.pt.tmp",  # export_backbone
        root / ".status.json.a8d.tmp",
        root / "backbone.pt.tmp",
        root / "features" / ".epoch_0002.npz.q1.tmp",
    ]
    for p in stale:
        p.write_bytes(b"x" * 1000)
    other = root / "finetune" / "a" / ".results.json.z.tmp"  # another program's file in the run: not the run's
    other.write_text("{")
    mine = root / "notes.tmp"  # not a name that a run's atomic writes use
    mine.write_text("keep me")
    run = RunDir.open_existing(root)
    try:
        assert [p for p in stale if p.exists()] == []
        assert all(p.exists() for p in [*kept, other, mine])
    finally:
        run.release()


# ------------------------------------------------------------------------------------------ non-finite loss
def test_non_finite_loss_is_one_line_exit_2_and_says_there_is_no_checkpoint(tiny_data, tmp_path):
    """A learning rate of 1e30 makes the second step's loss NaN (Adam moves every weight by about 1e30), before
    the first checkpoint (the end of epoch 1): one line, exit 2, and no promise of a last.pt that is not there."""
    out = tmp_path / "run"
    done = pretrain_cli(tiny_data, out, "train.lr=1.0e+30", cache=tmp_path / "cache")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith("hico: error: non-finite loss at step 2 (epoch 1): term ")
    assert "Traceback" not in done.stderr
    assert "nothing to resume" in lines[-1] and "last.pt" not in lines[-1]
    assert not (out / "checkpoints" / "last.pt").exists()
    status = read_status(out)
    assert status["state"] == "failed" and "nothing to resume" in status["error"]


# ------------------------------------------------------------------------- runs that fail before training
def write_setup_leftover(run: Path) -> Path:
    """What a run that died during its setup (after its folder was made) leaves: config.yaml, an empty
    checkpoints/, no status.json."""
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: hico\ndata: {path: /d}\ntrain: {epochs: 3}\n")
    return run


def test_setup_errors_that_the_listing_shows_fail_before_the_run_folder_is_made(tiny_data, tmp_path, capsys):
    """A batch larger than the data and a wrong number of classes are known from the folder listing: one line,
    exit 2, and no run folder left to block the same --out."""
    for setting, message in [
        ("train.batch_size=64", "only 36 training pairs per epoch for a batch of 64"),
        ("model.num_classes=4", "model.num_classes is 4 but"),
    ]:
        out = tmp_path / "run"
        assert main(pretrain_args(tiny_data, out, setting)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
        assert not out.exists(), setting


def test_a_run_that_fails_after_its_folder_is_made_says_failed_and_frees_the_folder(tmp_path, capsys):
    """Files that look like videos but do not decode fail only once the run folder exists: status.json then says
    failed with the one-line error (the app shows it), and the same --out can be used again."""
    junk = tmp_path / "junk"
    for name in ("a/v1.mp4", "a/v2.mp4", "b/v1.mp4", "b/v2.mp4", "c/v1.mp4", "c/v2.mp4"):
        (junk / name).parent.mkdir(parents=True, exist_ok=True)
        (junk / name).write_bytes(os.urandom(3000))
    out = tmp_path / "runs" / "run"
    assert main(pretrain_args(junk, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hico: error: no readable video in"), err
    status = read_status(out)
    assert status["state"] == "failed" and "no readable video" in status["error"]
    info = run_info(out)
    assert info.state == "failed" and "no readable video" in info.error
    run = RunDir.create(out, {"name": "again"})  # the folder holds no training output: it is reused
    try:
        assert run.read_config() == {"name": "again"} and not run.status_path.exists()
    finally:
        run.release()


def test_a_run_folder_with_training_output_is_never_reused(tmp_path):
    """Only a folder without metrics, checkpoints or weights is reused; anything else is refused untouched."""
    for extra in ("metrics.jsonl", "checkpoints/last.pt", "checkpoints/epoch_0000.pt", "backbone.pt", "notes.tmp"):
        run = write_setup_leftover(tmp_path / extra.replace("/", "-"))
        (run / extra).write_text("kept")
        with pytest.raises(FileExistsError, match="already exists"):
            RunDir.create(run, {"name": "again"})
        assert (run / extra).read_text() == "kept" and "name: hico" in (run / "config.yaml").read_text()
        assert not (run / ".lock").exists()


def test_runs_that_never_wrote_a_status_are_not_starting_forever(tmp_path):
    """A run folder with config.yaml but no status.json is starting only while its process holds the lock;
    otherwise it failed (with the error line its command recorded) or died."""
    runs = tmp_path / "runs"
    died = write_setup_leftover(runs / "died")
    (died / ".lock").write_text("999999999")  # a process id that is not running
    failed = write_setup_leftover(runs / "failed")
    exit_path(failed).parent.mkdir()
    error = "hico: error: model.num_classes is 3 but /d has 4 classes: pass --set ..."
    exit_path(failed).write_text(json.dumps({"exit_code": 2, "error": error}))  # as hico.cli main() records it
    starting = write_setup_leftover(runs / "starting")
    holder = RunDir(starting)
    holder.acquire()
    try:
        states = {r.name: (r.state, r.error) for r in list_runs(runs)}
    finally:
        holder.release()
    assert states["starting"] == ("starting", "")
    assert states["failed"] == ("failed", "hico: error: model.num_classes is 3 but /d has 4 classes: pass --set ...")
    assert states["died"][0] == "dead" and "before training" in states["died"][1]


def test_train_page_shows_a_run_that_failed_during_setup_as_failed_with_its_error(tmp_path, monkeypatch):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    app = Path(__file__).resolve().parent.parent / "app"
    runs = tmp_path / "runs"
    monkeypatch.setenv("HICO_RUNS", str(runs))
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    failed = write_setup_leftover(runs / "hico-20260101-000000")
    log_path(failed).parent.mkdir()
    log_path(failed).write_text("")
    error = "hico: error: model.num_classes is 3 but /d has 4 classes"
    exit_path(failed).write_text(json.dumps({"exit_code": 2, "error": error}))
    at = AppTest.from_function(_train_page, args=(str(app),), default_timeout=120).run()
    assert not at.exception
    rows = [m.value for m in at.markdown if "hico-20260101-000000" in m.value]
    assert rows and "failed" in rows[0] and "starting" not in rows[0]
    assert any("model.num_classes is 3" in c.value for c in at.caption)


def _train_page(app_dir: str) -> None:  # the source of a one-page app (AppTest.from_function)
    import sys
    from pathlib import Path

    for p in (app_dir, str(Path(app_dir).parent)):
        if p not in sys.path:
            sys.path.insert(0, p)
    import train_page

    train_page.run_table()
