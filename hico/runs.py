"""Pretraining runs as other programs see them: list, launch in the background, stop, read their curves.

The app and the notebooks use this module. A launched run is a separate
``hico pretrain`` process in its own session, so closing the program that launched it never kills it. Its
console output goes to ``<runs root>/.logs/<run name>.log``.
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

from hico.paths import PROJECT_ROOT
from hico.train.rundir import RunFileError, pid_alive, read_config, read_metrics, read_status

RUNS_ROOT = PROJECT_ROOT / "runs"
STARTUP_S = 300  # a launched run that has not written its config.yaml after this long has failed to start


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
    run's lock (``.lock`` holds its id), else failed with its launch log's error line, or dead."""
    try:
        pid = int((path / ".lock").read_text().strip())
    except (OSError, ValueError):
        pid = None
    if pid_alive(pid):
        return {}
    log = log_path(path)
    last = log.read_text(errors="replace").strip().splitlines()[-1:] if log.is_file() else []
    if last and last[0].startswith("hico: error:"):
        return {"state": "failed", "error": last[0]}
    return {"state": "dead", "error": "the process ended before training started, without an error message"}


def _launched(path: Path) -> RunInfo | None:
    """A folder reserved by :func:`launch` whose process has not written config.yaml (yet, or ever)."""
    log = log_path(path)
    if not log.is_file():
        return None
    lines = log.read_text(errors="replace").strip().splitlines()
    age = time.time() - log.stat().st_mtime
    failed = bool(lines) and lines[-1].startswith("hico: error:") or age > STARTUP_S
    return RunInfo(
        path=path, method="?", data="", state="failed" if failed else "starting", epoch=0, epochs=0,
        error=(lines[-1] if lines else "the process wrote nothing") if failed else "", updated=log.stat().st_mtime,
    )  # fmt: skip


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
    args = [sys.executable, "-m", "hico.cli", "pretrain", "--config", config, "--out", str(out), "--no-progress"]
    if preset:
        args += ["--preset", preset]
    if data is not None:
        args += ["--data", str(data)]
    for item in overrides:
        args += ["--set", item]
    log = root / ".logs" / f"{out.name}.log"
    log.parent.mkdir(exist_ok=True)
    with open(log, "w") as f:
        process = subprocess.Popen(
            args,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # survives the launcher (a Streamlit session, a notebook kernel)
            cwd=PROJECT_ROOT,
            env={**os.environ, **(env or {})},
        )
    return out, process


def log_path(run: str | os.PathLike[str]) -> Path:
    """Where :func:`launch` sends a run's console output."""
    run = Path(run)
    return run.parent / ".logs" / f"{run.name}.log"


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
    """The newest fine-tuning result in ``folder`` (``<folder>/*/results.json``, as the Evaluate page and ``hico
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
    "RunFileError",
    "RunInfo",
    "curves",
    "describe",
    "finetune_curve",
    "launch",
    "list_runs",
    "log_path",
    "reserve_run_dir",
    "run_info",
    "stop",
]
