"""Runs and jobs as other programs see them: list, launch in the background, stop, read their results.

The app and the notebooks use this module; it owns every process they start (``hico pretrain`` by :func:`launch`,
``hico finetune`` by :func:`launch_finetune`) and the layout of the folders those write. A launched job is a
separate process in its own session, so closing the program that launched it never kills it. For a job writing
``<folder>/<name>``, its console output goes to ``<folder>/.logs/<name>.log``, its process id to
``.logs/<name>.pid``, and how it ended to ``.logs/<name>.exit.json`` (``{"exit_code", "error"}``, written by the
``hico`` command itself, see :func:`record_exit`): a job's state is read from those files, never from its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hico.io import write_json
from hico.paths import PROJECT_ROOT
from hico.train.rundir import RunFileError, pid_alive, read_config, read_metrics, read_status

RUNS_ROOT = PROJECT_ROOT / "runs"
STARTUP_S = 300  # a launched job whose process id is unknown after this long has failed to start
STATUS_ENV = "HICO_STATUS_FILE"  # set for a launched process: the file its ``hico`` command records its end in
CHECKPOINTS = {  # the checkpoints of a run directory that load as a backbone, by the name the app shows
    "final backbone": "backbone.pt",
    "best (held-out loss)": "checkpoints/best.pt",
    "last": "checkpoints/last.pt",
}


def runs_root() -> Path:
    """Where runs are kept: ``runs/`` of the project, or the folder named by ``HICO_RUNS``."""
    return Path(os.environ.get("HICO_RUNS", RUNS_ROOT))


@dataclass
class RunInfo:
    """What a run directory says about itself (read from config.yaml and status.json)."""

    path: Path
    method: str
    data: str
    state: str  # running | finished | failed | interrupted | starting | dead | unreadable
    epoch: int
    epochs: int
    error: str
    updated: float

    @property
    def name(self) -> str:
        return self.path.name


def run_info(path: str | os.PathLike[str]) -> RunInfo | None:
    """The :class:`RunInfo` of a run directory, or None when ``path`` is not one (no config.yaml).

    ``state`` is ``starting`` while the process sets the run up (it holds the run's lock and has not written
    status.json yet), and ``dead`` when status.json says running, or was never written, but the process is gone
    (killed without a chance to say so); a run whose launch log ends with an error line is ``failed``. A run whose
    config.yaml or status.json cannot be read (corrupt) is ``unreadable``, with the reason in ``error``: listing it
    never fails.
    """
    path = Path(path)
    try:
        config = read_config(path)
    except OSError:
        return _launched(path)
    except RunFileError as e:
        return _unreadable(path, str(e))
    try:
        status = _read_status(path) if (path / "status.json").exists() else _without_status(path)
        state = status.get("state", "starting")
        if state == "running" and not pid_alive(status.get("pid")):
            state = "dead"
        return RunInfo(
            path=path,
            method=str(config.get("name", "?")),
            data=str((config.get("data") or {}).get("path", "")),
            state=str(state),
            epoch=int(status.get("epoch", 0)),
            epochs=int(status.get("epochs", (config.get("train") or {}).get("epochs", 0))),
            error=str(status.get("error", "")),
            updated=float(status.get("updated", (path / "config.yaml").stat().st_mtime)),
        )
    except (RunFileError, TypeError, ValueError) as e:  # a field of the wrong type: int("x"), float(None) ...
        return _unreadable(path, str(e) if isinstance(e, RunFileError) else f"{path / 'status.json'}: {e}")


def _read_status(path: Path) -> dict:
    """status.json as a dict ({} when there is none yet); RunFileError when it is there but corrupt."""
    file = path / "status.json"
    try:
        status = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:  # written atomically: unreadable means corrupt, not half-written
        raise RunFileError(f"{file} is not valid JSON ({e})") from e
    if not isinstance(status, dict):
        raise RunFileError(f"{file} does not hold a JSON object")
    return status


def _unreadable(path: Path, reason: str) -> RunInfo:
    """The :class:`RunInfo` of a run whose files cannot be read: state ``unreadable``, the reason in ``error``."""
    try:
        updated = max(p.stat().st_mtime for p in (path, *path.iterdir()))
    except (OSError, ValueError):
        updated = 0.0
    return RunInfo(path=path, method="?", data="", state="unreadable", epoch=0, epochs=0, error=reason,
                   updated=updated)  # fmt: skip


def _without_status(path: Path) -> dict:
    """The status of a run that has written config.yaml but not status.json: starting while its process holds the
    run's lock (``.lock`` holds its id), else failed with the error its command recorded, or dead."""
    try:
        pid = int((path / ".lock").read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid_alive(pid):
        return {}
    ended = _exit_record(path)
    if ended and ended["exit_code"] != 0:
        return {"state": "failed", "error": ended["error"]}
    return {"state": "dead", "error": "the process ended before training started, without an error message"}


def _launched(path: Path) -> RunInfo | None:
    """A folder reserved by :func:`launch` whose process has not written config.yaml (yet, or ever)."""
    job = job_status(path)
    if job is None:
        return None
    state = "starting" if job.state == "running" else "failed"
    error = job.error or ("" if state == "starting" else "the process ended without writing config.yaml")
    return RunInfo(path=path, method="?", data="", state=state, epoch=0, epochs=0, error=error,
                   updated=job.updated)  # fmt: skip


@dataclass
class JobStatus:
    """How a launched process stands, from the files :func:`launch` / :func:`launch_finetune` and its command
    write beside its folder (``.logs/``), never from its console output."""

    path: Path
    state: str  # running | finished | failed | dead
    error: str  # the one-line error of a failed or dead job
    updated: float

    @property
    def name(self) -> str:
        return self.path.name


def job_status(path: str | os.PathLike[str]) -> JobStatus | None:
    """The :class:`JobStatus` of the job launched to write ``path``; None when no job was launched there.

    ``finished`` / ``failed``: its command ended and recorded its exit code (and error line); ``running`` while its
    process lives (or, for :data:`STARTUP_S`, while its launcher has not recorded the process id yet); ``dead``
    when the process is gone without recording how it ended (killed, or crashed outside the ``hico`` command).
    """
    path = Path(path)
    log = log_path(path)
    if not log.is_file():
        return None
    ended = _exit_record(path)
    if ended is not None:
        state = "finished" if ended["exit_code"] == 0 else "failed"
        error = ended["error"] or (f"exit code {ended['exit_code']}" if state == "failed" else "")
        return JobStatus(path, state, error, exit_path(path).stat().st_mtime)
    pid_file = log.with_suffix(".pid")
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        pid = None
    updated = log.stat().st_mtime
    if pid_alive(pid) or (pid is None and time.time() - updated < STARTUP_S):
        return JobStatus(path, "running", "", updated)
    why = "it did not start" if pid is None else "it ended without recording an exit code (killed?)"
    return JobStatus(path, "dead", f"{why}; its console output is in {log}", updated)


def _exit_record(path: Path) -> dict | None:
    """``.logs/<name>.exit.json`` as {"exit_code": int, "error": str}, or None when absent or unreadable."""
    try:
        record = json.loads(exit_path(path).read_text(encoding="utf-8"))
        return {"exit_code": int(record["exit_code"]), "error": str(record.get("error", ""))}
    except (OSError, ValueError, TypeError, KeyError):
        return None


def record_exit(code: int, error: str = "") -> int:
    """Record how a ``hico`` command ended, when it was launched by this module; returns ``code``.

    hico.cli ``main()`` calls this as it returns. When the environment names a file in :data:`STATUS_ENV` (set by
    :func:`launch` and :func:`launch_finetune`), ``{"exit_code": code, "error": error}`` is written there
    atomically; otherwise nothing happens.
    """
    file = os.environ.get(STATUS_ENV)
    if file:
        try:
            write_json(file, {"exit_code": int(code), "error": error})
        except OSError:  # a full disk: the job then reads as dead, with its log named
            pass
    return code


def list_runs(root: str | os.PathLike[str] = RUNS_ROOT) -> list[RunInfo]:
    """Every run directory directly under ``root``, the most recently updated first."""
    root = Path(root)
    if not root.is_dir():
        return []
    runs = [info for p in root.iterdir() if p.is_dir() and (info := run_info(p)) is not None]
    return sorted(runs, key=lambda r: r.updated, reverse=True)


def reserve_run_dir(root: str | os.PathLike[str], name: str) -> Path:
    """Create and return a new, empty folder ``root/<name>-<time>`` (``-2``, ``-3``... when taken).

    ``os.mkdir`` fails when the folder exists, so two launches, even at the same second, never get the same one.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1, 1000):
        path = root / (base if i == 1 else f"{base}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run directory name for {base} in {root}")


def launch(
    config: str,
    data: str | os.PathLike[str] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
    root: str | os.PathLike[str] = RUNS_ROOT,
    env: dict[str, str] | None = None,
) -> tuple[Path, subprocess.Popen]:
    """Start ``hico pretrain`` in the background, in its own session; returns (run directory, process).

    The run directory is reserved first (:func:`reserve_run_dir`), so the caller can show it at once.
    """
    root = Path(root)
    out = reserve_run_dir(root, Path(config).stem if config else "run")
    args = ["pretrain", "--config", config, "--out", str(out), "--no-progress"]
    if preset:
        args += ["--preset", preset]
    if data is not None:
        args += ["--data", str(data)]
    for item in overrides:
        args += ["--set", item]
    return out, _start(args, out, env)


def finetune_folder(backbone: str, root: str | os.PathLike[str] = RUNS_ROOT) -> Path:
    """Where the fine-tuning results of ``backbone`` are kept: ``<run>/finetune`` for a run directory,
    ``<root>/finetune-random`` for ``random`` (random init), ``<folder of the file>/finetune`` for a .pt file."""
    if backbone == "random":
        return Path(root) / "finetune-random"
    path = Path(backbone)
    return (path if path.is_dir() else path.parent) / "finetune"


def launch_finetune(
    backbone: str,
    data: str | os.PathLike[str],
    folds: int,
    epochs: int,
    size: int,
    options: list[str] | tuple[str, ...] = (),
    root: str | os.PathLike[str] = RUNS_ROOT,
    env: dict[str, str] | None = None,
) -> tuple[Path, subprocess.Popen]:
    """Start ``hico finetune`` in the background, in its own session; returns (output folder, process).

    The output folder is reserved in :func:`finetune_folder` (``root`` only matters for ``random``); its results
    (``results.json``) are listed by :func:`finetune_jobs`. ``options`` are more ``hico finetune`` flags.
    """
    out = reserve_run_dir(finetune_folder(backbone, root), "finetune")
    args = ["finetune", "--backbone", backbone, "--data", str(data), "--out", str(out), "--folds", str(folds),
            "--epochs", str(epochs), "--size", str(size), "--no-progress", *options]  # fmt: skip
    return out, _start(args, out, env)


def finetune_jobs(folder: str | os.PathLike[str]) -> list[JobStatus]:
    """Every fine-tuning output folder in ``folder`` (as :func:`finetune_folder` names it), oldest first: finished
    when it holds results.json (also when written by ``hico finetune --out`` by hand), else its :func:`job_status`
    (``dead`` for a folder no launched job owns)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    jobs = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if (path / "results.json").is_file():
            jobs.append(JobStatus(path, "finished", "", (path / "results.json").stat().st_mtime))
        else:
            jobs.append(
                job_status(path)
                or JobStatus(path, "dead", "no results.json, and no process was launched here", path.stat().st_mtime)
            )
    return jobs


def resume(run: str | os.PathLike[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    """Continue a stopped run (interrupted, failed or dead) in the background: ``hico pretrain --resume RUN``,
    its console output appended to the run's log.

    Raises:
        ValueError: the run is running, finished, or has no checkpoint to continue from.
    """
    run = Path(run)
    info = run_info(run)
    if info is None or info.state in ("running", "starting", "finished", "unreadable"):
        state = "not a run" if info is None else info.state
        raise ValueError(f"{run.name} is {state}: only a stopped run can be resumed")
    if not (run / "checkpoints" / "last.pt").is_file():
        raise ValueError(f"{run.name} has no checkpoints/last.pt to continue from: launch it anew")
    return _start(["pretrain", "--resume", str(run), "--no-progress"], run, env, append=True)


def delete(run: str | os.PathLike[str]) -> None:
    """Remove a run directory and its launch files (``.logs/<name>.*``); a running run is refused (stop it first).

    Raises:
        ValueError: the run is running or starting.
    """
    import shutil

    run = Path(run)
    info = run_info(run)
    if info is not None and info.state in ("running", "starting"):
        raise ValueError(f"{run.name} is {info.state}: stop it before deleting it")
    shutil.rmtree(run)
    for path in log_path(run).parent.glob(f"{run.name}.*"):
        path.unlink(missing_ok=True)


def progress(run: str | os.PathLike[str]) -> dict | None:
    """How far a run is: ``{"step", "steps", "steps_per_epoch", "seconds_left"}`` from its status.json and its last
    logged step (None before the first one). ``seconds_left`` counts training steps at the last logged speed
    (the per-epoch evaluation comes on top)."""
    run = Path(run)
    try:
        status = read_status(run)
        steps_per_epoch = int(status["steps_per_epoch"])
        epochs = int(status["epochs"])
        last = next(r for r in reversed(read_metrics(run)) if r.get("kind") == "step")
        batch = int((read_config(run).get("train") or {})["batch_size"])
    except (KeyError, StopIteration, TypeError, ValueError, OSError, RunFileError):
        return None
    step, total = int(last["step"]), steps_per_epoch * epochs
    rate = float(last.get("pairs_per_s") or 0.0)
    left = (total - step) * batch / rate if rate > 0 else None
    return {"step": step, "steps": total, "steps_per_epoch": steps_per_epoch, "seconds_left": left}


def studies_root(root: str | os.PathLike[str] | None = None) -> Path:
    """Where the app keeps label-efficiency studies: ``<runs>/studies`` (:func:`runs_root` by default)."""
    return Path(runs_root() if root is None else root) / "studies"


def launch_study(
    name: str,
    options: list[str] | tuple[str, ...],
    root: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Path, subprocess.Popen]:
    """Start ``hico study OPTIONS --out <studies>/<name>-<time>`` in the background; returns (folder, process)."""
    out = reserve_run_dir(studies_root(root), name)
    return out, _start(["study", *options, "--out", str(out), "--no-progress"], out, env)


@dataclass
class StudyInfo:
    """A study folder as the app lists it: how far it is (cells done of cells asked) and how its job stands."""

    path: Path
    state: str  # running | finished | failed | dead | stopped (not launched from here, not complete)
    done: int
    total: int
    error: str
    config: dict

    @property
    def name(self) -> str:
        return self.path.name


def study_info(path: str | os.PathLike[str]) -> StudyInfo | None:
    """The :class:`StudyInfo` of a folder holding ``study.json`` or a launched ``hico study``; None otherwise."""
    path = Path(path)
    job = job_status(path)
    try:
        study = json.loads((path / "study.json").read_text(encoding="utf-8"))
        config = study["config"]
        asked = {(f"{f:g}", p) for f in config["label_fractions"] for p in config["protocols"]}
        done = sum(tuple(key.split("|")[1:]) in asked for key in study["cells"])
        total = len(config["methods"]) * len(asked)
    except (OSError, ValueError, KeyError, TypeError):
        if job is None:
            return None
        config, done, total = {}, 0, 0
    if job is not None:
        state, error = job.state, job.error
    else:
        state, error = ("finished" if total and done >= total else "stopped"), ""
    return StudyInfo(path, state, done, total, error, config)


def list_studies(root: str | os.PathLike[str] | None = None) -> list[StudyInfo]:
    """Every study folder under :func:`studies_root`, the newest first."""
    folder = studies_root(root)
    if not folder.is_dir():
        return []
    found = [info for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and (info := study_info(p))]
    return sorted(found, key=lambda s: s.path.stat().st_mtime, reverse=True)


def finetune_progress(out: str | os.PathLike[str]) -> dict | None:
    """How far a fine-tuning is: its ``progress.json`` (``{"fold", "folds", "epoch", "epochs", "seconds", ...}``,
    written by ``hico finetune`` after every epoch), or None before its first epoch."""
    try:
        record = json.loads((Path(out) / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _start(args: list[str], out: Path, env: dict[str, str] | None, append: bool = False) -> subprocess.Popen:
    """Run ``hico ARGS`` writing ``out`` in the background: console output to :func:`log_path` (appended to it with
    ``append``), its process id beside it, and :data:`STATUS_ENV` naming :func:`exit_path` for the command to
    record its end in."""
    log = log_path(out)
    log.parent.mkdir(exist_ok=True)
    exit_path(out).unlink(missing_ok=True)
    with open(log, "a" if append else "w") as f:
        process = subprocess.Popen(
            [sys.executable, "-m", "hico.cli", *args],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the launcher (a Streamlit session, a notebook kernel)
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {}), STATUS_ENV: str(exit_path(out))},
        )
    log.with_suffix(".pid").write_text(str(process.pid))
    return process


def log_path(run: str | os.PathLike[str]) -> Path:
    """Where :func:`launch` / :func:`launch_finetune` send a job's console output."""
    run = Path(run)
    return run.parent / ".logs" / f"{run.name}.log"


def exit_path(run: str | os.PathLike[str]) -> Path:
    """Where a launched job's command records how it ended (:func:`record_exit`)."""
    run = Path(run)
    return run.parent / ".logs" / f"{run.name}.exit.json"


def checkpoints(run: str | os.PathLike[str]) -> dict[str, Path]:
    """The backbone checkpoints a run directory holds, by the names in :data:`CHECKPOINTS`."""
    run = Path(run)
    return {name: run / file for name, file in CHECKPOINTS.items() if (run / file).is_file()}


def epoch_checkpoints(run: str | os.PathLike[str]) -> dict[int, Path]:
    """``{epoch: checkpoints/epoch_NNNN.pt}``: the weights a run kept at epochs 0, 1, 2, 4, ... and the last."""
    return _by_epoch(Path(run) / "checkpoints", "pt")


def epoch_features(run: str | os.PathLike[str]) -> dict[int, Path]:
    """``{epoch: features/epoch_NNNN.npz}``: the k-NN features a run kept at epochs 0, 1, 2, 4, ... and the last."""
    return _by_epoch(Path(run) / "features", "npz")


def _by_epoch(folder: Path, ext: str) -> dict[int, Path]:
    found = {}
    for p in sorted(folder.glob(f"epoch_*.{ext}")):
        try:
            found[int(p.stem.split("_")[1])] = p
        except ValueError:  # epoch_x.pt: not one the trainer wrote
            continue
    return found


def stop(run: str | os.PathLike[str]) -> bool:
    """Ask a running run to stop (SIGTERM: it finishes its step, saves last.pt, marks itself interrupted).

    Returns False when the run is not running (nothing to stop).
    """
    status = read_status(run) if (Path(run) / "status.json").exists() else {}
    pid = status.get("pid")
    if status.get("state") != "running" or not pid_alive(pid):
        return False
    os.kill(int(pid), signal.SIGTERM)
    return True


def curves(run: str | os.PathLike[str]) -> dict[str, list[dict]]:
    """A run's metrics.jsonl split by kind: ``{"step": [...], "epoch": [...]}`` (tolerates a partial last line).

    Raises:
        RunFileError: a line of metrics.jsonl is not a JSON object (the message names the file and the line).
    """
    records = read_metrics(run)
    return {kind: [r for r in records if r.get("kind") == kind] for kind in ("step", "epoch")}


def finetune_curve(folder: str | os.PathLike[str]) -> dict | None:
    """The newest fine-tuning result in ``folder`` (``<folder>/*/results.json``, as :func:`launch_finetune` and ``hico
    finetune --out`` write them) as a convergence curve: ``{"name", "epoch": [1, 2, ...], "accuracy": [...]}``,
    the test accuracy after each epoch over the test frames of all folds pooled. None when there is none."""
    results = sorted(Path(folder).glob("*/results.json"), key=lambda p: p.parent.name)
    if not results:
        return None
    folds = json.loads(results[-1].read_text())["folds"]
    frames = sum(f["n_test_frames"] for f in folds)
    epochs = [h["epoch"] for h in folds[0]["history"]]
    accuracy = [
        sum(f["n_test_frames"] * f["history"][e]["test_accuracy"] for f in folds) / frames for e in range(len(epochs))
    ]
    return {"name": results[-1].parent.name, "epoch": epochs, "accuracy": accuracy}


def describe(info: RunInfo) -> str:
    """One line: name, method, state, epoch."""
    progress = f"epoch {info.epoch}/{info.epochs}" if info.epochs else ""
    return f"{info.name}  {info.method}  {info.state}  {progress}".rstrip()


__all__ = [
    "CHECKPOINTS",
    "JobStatus",
    "RunFileError",
    "RunInfo",
    "checkpoints",
    "curves",
    "describe",
    "epoch_checkpoints",
    "epoch_features",
    "exit_path",
    "finetune_curve",
    "finetune_folder",
    "finetune_jobs",
    "job_status",
    "launch",
    "launch_finetune",
    "list_runs",
    "log_path",
    "record_exit",
    "reserve_run_dir",
    "run_info",
    "stop",
]
