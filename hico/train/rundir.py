"""The run directory: what a pretraining run leaves on disk, written so that nothing is lost when it is killed.

    RUNDIR/
      config.yaml        the fully resolved configuration (method, data path, train settings)
      metrics.jsonl      one JSON object per logged step ("kind": "step") and per epoch ("kind": "epoch")
      status.json        {"state": "running" | "finished" | "failed" | "interrupted", "error", "epoch", ...}
      labelled_videos.json  {"dataset", "videos": ids whose labels a loss term used, "pretrained_videos": ids
                         trained on} (hico.train.labelled): evaluations keep those videos out of their test folds
      checkpoints/last.pt, checkpoints/best.pt
      checkpoints/       epoch_NNNN.pt: backbone + FPN weights of epochs 0, 1, 2, 4, 8, ... and the last, in
                         backbone.pt's format (train.epoch_checkpoints; about 53 MB each at ResNet-18 + FPN)
      backbone.pt        backbone + FPN weights at the end (hico.models.export_backbone)
      features/          epoch_NNNN.npz: k-NN features of epochs 0, 1, 2, 4, 8, ... and the last

Every file except metrics.jsonl is replaced atomically (written to a temporary file in the same folder, then
renamed), so a reader never sees a half-written file and a crash never corrupts a checkpoint. metrics.jsonl is
appended line by line and flushed; :func:`read_metrics` skips a last line that is still being written.
Other programs (the app, notebooks) read a run while it is being written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from hico.io import atomic_write

RUN_STATES = ("running", "finished", "failed", "interrupted")


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` atomically (a killed run keeps the previous file intact)."""
    import torch  # here, not at the top: the app reads run directories without paying for torch

    atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


class RunDir:
    """A run directory (see the module docstring). Create with :meth:`create` or :meth:`open_existing`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.config_path = self.root / "config.yaml"
        self.metrics_path = self.root / "metrics.jsonl"
        self.status_path = self.root / "status.json"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.best = self.checkpoints / "best.pt"
        self.backbone = self.root / "backbone.pt"
        self.features = self.root / "features"
        self._lock = self.root / ".lock"
        self._metrics_file = None

    @classmethod
    def create(cls, root: str | Path, config: dict) -> RunDir:
        """A new run directory; refuses a folder that already holds anything (never overwrites a run)."""
        root = Path(root).expanduser()
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(
                f"run directory {root} already exists: continue it with --resume {root}, or choose another --out"
            )
        root.mkdir(parents=True, exist_ok=True)
        run = cls(root)
        run.acquire()
        atomic_write(run.config_path, lambda f: yaml.safe_dump(config, f, sort_keys=False))
        run.checkpoints.mkdir(exist_ok=True)
        return run

    @classmethod
    def open_existing(cls, root: str | Path) -> RunDir:
        """An existing run directory, to resume; it must hold config.yaml and checkpoints/last.pt."""
        run = cls(Path(root).expanduser())
        if not run.config_path.is_file():
            raise FileNotFoundError(f"{run.root} has no config.yaml: is it a `hico pretrain` run directory?")
        if not run.last.is_file():
            raise FileNotFoundError(f"{run.last} is missing: the run ended before its first checkpoint; start it anew")
        run.acquire()
        return run

    def epoch_checkpoint(self, epoch: int) -> Path:
        """``checkpoints/epoch_NNNN.pt``: the backbone + FPN weights kept at the end of ``epoch`` (0: before training)."""
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def acquire(self) -> None:
        """Take the run's lock, so that two processes never write the same run directory."""
        try:
            fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pid = _read_pid(self._lock)
            if pid is not None and pid_alive(pid):
                raise FileExistsError(f"run directory {self.root} is in use by process {pid}") from None
            self._lock.unlink(missing_ok=True)  # stale: its process is gone
            fd = os.open(self._lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))

    def release(self) -> None:
        """Drop the lock and close the metrics file."""
        if self._metrics_file is not None:
            self._metrics_file.close()
            self._metrics_file = None
        if _read_pid(self._lock) == os.getpid():
            self._lock.unlink(missing_ok=True)

    def read_config(self) -> dict:
        """The run's resolved configuration."""
        return yaml.safe_load(self.config_path.read_text())

    def log(self, record: dict) -> None:
        """Append one JSON record to metrics.jsonl and flush it."""
        if self._metrics_file is None:
            self._metrics_file = open(self.metrics_path, "a", buffering=1)
        self._metrics_file.write(json.dumps(record) + "\n")
        self._metrics_file.flush()

    def truncate_metrics(self, global_step: int) -> None:
        """Drop records after ``global_step`` (a resumed run redoes those steps and logs them again)."""
        if not self.metrics_path.exists():
            return
        keep = [r for r in read_metrics(self.root) if r.get("step", 0) <= global_step]
        atomic_write(self.metrics_path, lambda f: f.writelines(json.dumps(r) + "\n" for r in keep))

    def set_status(self, state: str, **fields: Any) -> None:
        """Replace status.json: the state, the time, and any extra fields (epoch, step, error)."""
        assert state in RUN_STATES, state
        status = {"state": state, "pid": os.getpid(), "updated": time.time(), **fields}
        atomic_write(self.status_path, lambda f: json.dump(status, f))


def read_metrics(root: str | Path) -> list[dict]:
    """Records of a run's metrics.jsonl, tolerant of a last line still being written."""
    path = Path(root) / "metrics.jsonl"
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def read_status(root: str | Path) -> dict:
    """A run's status.json (``{"state": "unknown"}`` when absent or unreadable)."""
    try:
        return json.loads((Path(root) / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {"state": "unknown"}


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid) -> bool:
    """Whether process ``pid`` is running on this machine (a zombie, exited but not reaped, is not)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][:1] != "Z"
    except (OSError, IndexError):
        return True
    return True
