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

One process at a time writes a run: it holds ``.lock`` (an ``flock``; the file holds its process id) from
:meth:`RunDir.create` or :meth:`RunDir.open_existing` to :meth:`RunDir.release`. The kernel drops the lock of a
killed process, so a lock file left behind is free. Temporary files that a killed run left (``*.tmp``, the
halves of atomic replacements) are removed when it is resumed.
A full disk raises :class:`hico.io.DiskFullError` naming the file that could not be written; status.json still
says ``failed`` then (rewritten in place when no new file fits), and the previous checkpoints stay intact.
A file that cannot be read (a truncated checkpoint, a config.yaml that is not YAML, a metrics line that is not
a JSON object) raises :class:`RunFileError`, one line naming the file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from hico.io import DiskFullError, atomic_write, yaml_error

RUN_STATES = ("running", "finished", "failed", "interrupted")
RESUMABLE = ("last", "best")  # the checkpoints --resume can start from (epoch_NNNN.pt hold weights only)


class RunFileError(ValueError):
    """A file of a run directory cannot be read (corrupt, truncated, not what it should hold); names the file."""


def save_checkpoint(obj: dict, path: Path) -> None:
    """``torch.save`` atomically (a killed run keeps the previous file intact)."""
    import torch  # here, not at the top: the app reads run directories without paying for torch

    atomic_write(path, lambda f: torch.save(obj, f), mode="wb")


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint` (tensors and plain containers only).

    Raises:
        RunFileError: the file is truncated, corrupt, or holds anything but plain data (one line naming it).
    """
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # a truncated zip, random bytes, a pickle that weights_only refuses ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RunFileError(f"{path} is not a readable checkpoint ({reason[:200]})") from e
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "epoch", "global_step"} <= ckpt.keys():
        raise RunFileError(f"{path} is not a training checkpoint (no model, optimizer and position)")
    return ckpt


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
        self.start = self.last  # the checkpoint a resumed run starts from (open_existing's ``start``)
        self.backbone = self.root / "backbone.pt"
        self.features = self.root / "features"
        self._lock = self.root / ".lock"
        self._lock_fd: int | None = None
        self._metrics_file = None

    @classmethod
    def create(cls, root: str | Path, config: dict) -> RunDir:
        """A new run directory; refuses a folder that already holds anything (never overwrites a run).

        A folder that holds only what a run that failed before training leaves behind (config.yaml, status.json,
        an empty checkpoints/, no metrics, no checkpoint) is reused, so that the same ``--out`` can be tried again.
        """
        root = Path(root).expanduser()
        run = cls(root)
        run._refuse_a_run()  # before touching the folder
        root.mkdir(parents=True, exist_ok=True)
        run.acquire()
        try:
            run._refuse_a_run()  # again, now that no other process can write it
            run.remove_temp_files()
            run.status_path.unlink(missing_ok=True)  # a failed attempt's status: this one is starting
            run.checkpoints.mkdir(exist_ok=True)
            atomic_write(run.config_path, lambda f: yaml.safe_dump(config, f, sort_keys=False))
        except BaseException:
            run.release()
            raise
        return run

    @classmethod
    def open_existing(cls, root: str | Path, start: str = "last") -> RunDir:
        """An existing run directory, to resume from ``checkpoints/<start>.pt`` (``last`` or ``best``); it must
        hold config.yaml and that checkpoint.

        Temporary files left by a run killed while it replaced a file are removed.
        """
        if start not in RESUMABLE:
            raise ValueError(f"a run resumes from one of {', '.join(RESUMABLE)}, not {start!r}")
        run = cls(Path(root).expanduser())
        run.start = run.checkpoints / f"{start}.pt"
        if not run.config_path.is_file():
            raise FileNotFoundError(f"{run.root} has no config.yaml: is it a `hico pretrain` run directory?")
        if not run.start.is_file():
            if start == "last":
                raise FileNotFoundError(
                    f"{run.last} is missing: the run ended before its first checkpoint; start it anew"
                )
            raise FileNotFoundError(f"{run.start} is missing: resume from last.pt (leave out --from)")
        run.acquire()
        run.remove_temp_files()
        return run

    def _refuse_a_run(self) -> None:
        """Raise FileExistsError when the folder holds anything but a run that failed before training."""
        if not self.root.exists():
            return
        setup = {"config.yaml", "status.json", "checkpoints", "features"}
        names = {p.name for p in self.root.iterdir() if not _is_temp(p)} - {".lock"}
        left = [
            p for p in (self.checkpoints, self.features) if p.is_dir() and any(not _is_temp(q) for q in p.iterdir())
        ]
        reusable = not names or (names <= setup and self.checkpoints.is_dir() and not left)
        if not reusable:
            raise FileExistsError(
                f"run directory {self.root} already exists: continue it with --resume {self.root}, or choose "
                "another --out"
            )

    def remove_temp_files(self) -> list[Path]:
        """Remove the temporary files (``*.tmp``) that a killed run left in the folder, checkpoints/ and
        features/; returns them. Call it holding the lock: then no process is writing them."""
        stale = [
            p for d in (self.root, self.checkpoints, self.features) if d.is_dir() for p in d.iterdir() if _is_temp(p)
        ]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def resume_hint(self) -> str:
        """What to do when the checkpoint to resume from is unreadable: start from best.pt when that one loads
        (``--from best``), else start the run anew."""
        if self.start != self.best and self.best.is_file():
            try:
                ckpt = load_checkpoint(self.best)
            except RunFileError:
                pass
            else:
                return (
                    f"resume from {self.best.name} (epoch {ckpt['epoch']}, step {ckpt['global_step']}) with: "
                    f"hico pretrain --resume {self.root} --from best"
                )
        return "no other resumable checkpoint is readable: start the run anew"

    def epoch_checkpoint(self, epoch: int) -> Path:
        """``checkpoints/epoch_NNNN.pt``: the backbone + FPN weights kept at the end of ``epoch`` (0: before training)."""
        return self.checkpoints / f"epoch_{epoch:04d}.pt"

    def acquire(self) -> None:
        """Take the run's lock, so that two processes never write the same run directory.

        ``flock`` on ``.lock`` decides atomically which process gets it; the kernel drops it when the process ends,
        however it ends. The file is removed at :meth:`release`, so a process that opened it just before checks,
        once it holds the lock, that the file is still the one in the folder, and tries again otherwise.
        """
        while True:
            fd = os.open(self._lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                pid = _read_pid(self._lock)
                holder = f"process {pid}" if pid_alive(pid) else "another process"
                raise FileExistsError(f"run directory {self.root} is in use by {holder}") from None
            try:
                held = os.fstat(fd)
                current = os.stat(self._lock)
                if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)  # released and removed between this open and this flock: take the new file
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def release(self) -> None:
        """Drop the lock and close the metrics file."""
        if self._metrics_file is not None:
            try:
                self._metrics_file.close()
            except OSError:  # a full disk: a line that could not be flushed (the error was reported when logged)
                pass
            self._metrics_file = None
        if self._lock_fd is not None:
            self._lock.unlink(missing_ok=True)  # still holding it: no other process has this file locked
            os.close(self._lock_fd)
            self._lock_fd = None

    def read_config(self) -> dict:
        """The run's resolved configuration (:class:`RunFileError` naming config.yaml when it is unreadable)."""
        return read_config(self.root)

    def log(self, record: dict) -> None:
        """Append one JSON record to metrics.jsonl and flush it."""
        try:
            if self._metrics_file is None:
                self._metrics_file = open(self.metrics_path, "a", buffering=1)
            self._metrics_file.write(json.dumps(record) + "\n")
            self._metrics_file.flush()
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DiskFullError(self.metrics_path) from e
            raise

    def truncate_metrics(self, global_step: int) -> None:
        """Drop records after ``global_step`` (a resumed run redoes those steps and logs them again)."""
        if not self.metrics_path.exists():
            return
        keep = [r for r in read_metrics(self.root) if r.get("step", 0) <= global_step]
        atomic_write(self.metrics_path, lambda f: f.writelines(json.dumps(r) + "\n" for r in keep))

    def set_status(self, state: str, **fields: Any) -> None:
        """Replace status.json: the state, the time, and any extra fields (epoch, step, error).

        On a full disk, where not even a small new file fits, status.json is rewritten in place: its own block
        on disk holds the new text (a few hundred bytes), so a run that fails for want of space still says so.
        """
        assert state in RUN_STATES, state
        status = {"state": state, "pid": os.getpid(), "updated": time.time(), **fields}
        try:
            atomic_write(self.status_path, lambda f: json.dump(status, f))
        except DiskFullError:
            if not self.status_path.is_file():
                raise
            with open(self.status_path, "r+", encoding="utf-8") as f:
                f.write(json.dumps(status))
                f.truncate()


def read_config(root: str | Path) -> dict:
    """A run's config.yaml as a dict.

    Raises:
        FileNotFoundError: there is none.
        RunFileError: it is not UTF-8 YAML holding a mapping (one line naming the file and, for YAML, the line).
    """
    path = Path(root) / "config.yaml"
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise RunFileError(f"{path} is not text (byte {e.start} is not UTF-8): the file is corrupt") from e
    except yaml.YAMLError as e:
        raise RunFileError(f"{path} is not valid YAML ({yaml_error(e)})") from e
    if not isinstance(config, dict) or not all(isinstance(config.get(k) or {}, dict) for k in ("data", "train")):
        raise RunFileError(f"{path} does not hold a run configuration (a mapping of sections)")
    return config


def read_metrics(root: str | Path) -> list[dict]:
    """Records of a run's metrics.jsonl, tolerant of a last line still being written (no final newline yet).

    Raises:
        RunFileError: a complete line is not a JSON object (names the file and the line).
    """
    path = Path(root) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")  # the last item is "" after a final newline, else a line still being written
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
            if number == len(lines):  # being written
                continue
        if not isinstance(record, dict):
            raise RunFileError(f"{path} line {number} is not a JSON object: {line[:60]!r}")
        records.append(record)
    return records


def read_status(root: str | Path) -> dict:
    """A run's status.json (``{"state": "unknown"}`` when absent or unreadable)."""
    try:
        status = json.loads((Path(root) / "status.json").read_text())
    except (OSError, ValueError):
        return {"state": "unknown"}
    return status if isinstance(status, dict) else {"state": "unknown"}


def _is_temp(path: Path) -> bool:
    """A temporary file of an atomic replacement: ``.NAME.XXXX.tmp`` (:func:`hico.io.atomic_write`) or
    ``NAME.pt.tmp`` (:func:`hico.models.checkpoint.export_backbone`)."""
    name = path.name
    return name.endswith(".tmp") and (name.startswith(".") or name.endswith(".pt.tmp")) and path.is_file()


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
