"""Fault injection on run directories: corrupt run files, truncated checkpoints, a full disk, broken configs.

Each test reproduces a failure of issue 15 and checks the promise: one line naming the file (exit 2 from the CLI),
the other runs and the previous checkpoints untouched, status.json telling the truth.
"""

from __future__ import annotations

import errno
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TINY_RUN, scratch

from hico.cli import main
from hico.config import ConfigError, load_method
from hico.io import DiskFullError, atomic_write
from hico.runs import RunFileError, curves, list_runs, run_info
from hico.train.rundir import read_status
from hico.train.trainer import Trainer, pretrain

TINY = [  # a few seconds per run on conftest's tiny_data
    *TINY_RUN,
    "train.epochs=2",
    "train.holdout=0.25",
    "train.knn_frames_per_video=2",
    "train.knn_k=3",
]
GARBAGE = bytes(range(128, 256)) * 2  # not UTF-8, not YAML, not JSON


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))


def pretrain_args(data: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    args = ["pretrain", "--config", "hico", "--data", str(data), "--out", str(out), "--no-progress"]
    for item in (*TINY, *extra):
        args += ["--set", item]
    return args


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("hico: error: "), err
    assert not any("Traceback" in line for line in err), err
    return err[-1]


# ------------------------------------------------------------------------------------------ corrupt run files
def write_run(path: Path, metrics: list | None = None, updated: float | None = None) -> Path:
    """A finished run as the app sees it: config.yaml, status.json, metrics.jsonl."""
    path.mkdir(parents=True)
    config = {"name": "hico", "data": {"path": "/nowhere"}, "train": {"epochs": 2}, "augment": {"size": 32}}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    status = {"state": "finished", "pid": 1, "epoch": 2, "epochs": 2, "updated": updated or time.time()}
    (path / "status.json").write_text(json.dumps(status))
    metrics = metrics or [
        {"kind": "epoch", "epoch": 0, "step": 0, "knn_global": 0.4},
        {"kind": "step", "epoch": 1, "step": 1, "total": 3.0, "lr": 1e-3},
        {"kind": "epoch", "epoch": 1, "step": 1, "train_total": 3.0, "knn_global": 0.5, "pairs_per_s": 9.0},
    ]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (path / "checkpoints").mkdir()
    return path


def corrupt_runs(root: Path) -> dict[str, Path]:
    """One good run beside runs with a corrupt config.yaml, status.json or metrics.jsonl line."""
    runs = {name: write_run(root / name, updated=time.time() - i) for i, name in enumerate(
        ("good", "bytes-config", "list-config", "bad-status", "bad-metrics"))}  # fmt: skip
    (runs["bytes-config"] / "config.yaml").write_bytes(GARBAGE)
    (runs["list-config"] / "config.yaml").write_text("- 1\n- 2\n")
    (runs["bad-status"] / "status.json").write_text('{"state": "fini')
    with open(runs["bad-metrics"] / "metrics.jsonl", "a") as f:
        f.write("42\n")
        f.write(json.dumps({"kind": "step", "epoch": 2, "step": 2, "total": 2.0, "lr": 1e-3}) + "\n")
    return runs


def test_a_corrupt_run_file_marks_that_run_unreadable_and_the_others_list(tmp_path):
    runs = corrupt_runs(tmp_path)
    listed = {info.name: info for info in list_runs(tmp_path)}
    assert set(listed) == set(runs)
    assert listed["good"].state == "finished" and listed["bad-metrics"].state == "finished"
    for name, file in (("bytes-config", "config.yaml"), ("list-config", "config.yaml"), ("bad-status", "status.json")):
        assert listed[name].state == "unreadable", listed[name]
        assert str(runs[name] / file) in listed[name].error
    assert [r["step"] for r in curves(runs["good"])["step"]] == [1]
    with pytest.raises(RunFileError, match=r"metrics\.jsonl line 4 is not a JSON object"):
        curves(runs["bad-metrics"])


def test_a_line_being_written_is_still_tolerated_but_a_broken_line_before_it_is_not(tmp_path):
    run = write_run(tmp_path / "r")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"kind": "st')  # the writer is in the middle of this line
    assert len(curves(run)["step"]) == 1
    with open(run / "metrics.jsonl", "a") as f:
        f.write("\n" + json.dumps({"kind": "step", "step": 2}) + "\n")  # ... and the line stayed broken
    with pytest.raises(RunFileError, match="line 4"):
        curves(run)


def test_run_info_of_a_status_with_fields_of_the_wrong_type_is_unreadable(tmp_path):
    run = write_run(tmp_path / "r")
    (run / "status.json").write_text(json.dumps({"state": "finished", "epoch": "two"}))
    info = run_info(run)
    assert info.state == "unreadable" and "status.json" in info.error


# --------------------------------------------------------------------------------------------------- the app
APP = Path(__file__).resolve().parent.parent / "app"


def _page(app_dir: str, module: str) -> None:  # the source of a one-page app (AppTest.from_function)
    import importlib
    import sys
    from pathlib import Path

    for p in (app_dir, str(Path(app_dir).parent)):
        if p not in sys.path:
            sys.path.insert(0, p)
    importlib.import_module(module).page()


@pytest.mark.parametrize("module", ["train_page", "curves_page", "embeddings_page", "evaluate_page"])
def test_every_page_that_lists_runs_shows_a_corrupt_run_as_unreadable_and_the_others(tmp_path, monkeypatch, module):
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "runs"
    runs = corrupt_runs(root)
    torch.save({}, runs["good"] / "backbone.pt")  # the Evaluate page offers runs with a backbone
    monkeypatch.setenv("HICO_RUNS", str(root))
    at = AppTest.from_function(_page, args=(str(APP), module), default_timeout=120).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(e.value for e in [*at.warning, *at.error, *at.caption, *at.markdown])
    for name in ("bytes-config", "list-config", "bad-status"):
        assert name in shown and "unreadable" in shown, shown
    assert str(runs["bytes-config"] / "config.yaml") in shown
    if module == "train_page":
        assert "**good**" in shown
    elif module == "curves_page":
        at.multiselect[0].set_value(["good", "bad-metrics"]).run()
        assert not at.exception
        assert any("bad-metrics is unreadable" in e.value and "line 4" in e.value for e in at.error)
        assert len(at.get("plotly_chart")) == 5  # the good run is drawn
    elif module == "embeddings_page":
        assert at.selectbox[0].value.name == "good"  # the page goes on with the good run (its data is elsewhere)
        assert "good" in [o.split(" ")[0] for o in at.selectbox[0].options]
    else:
        assert "good" in at.selectbox[0].options


# ------------------------------------------------------------------------------------------------ --resume
@pytest.fixture(scope="module")
def finished_run(tiny_data, tmp_path_factory) -> Iterator[Path]:
    """A finished 2-epoch run (last.pt, best.pt), copied by each test that breaks it."""
    with scratch(tmp_path_factory, "resume") as tmp, pytest.MonkeyPatch.context() as mp:
        out = tmp / "run"
        mp.setenv("HICO_CACHE", str(tmp / "cache"))
        assert main(pretrain_args(tiny_data, out, ("train.epoch_checkpoints=false",))) == 0
        mp.undo()
        yield out


@pytest.fixture
def broken_copy(finished_run, tmp_path) -> Path:
    out = tmp_path / "run"
    subprocess.run(["cp", "-r", str(finished_run), str(out)], check=True)
    return out


def test_resume_from_a_truncated_last_pt_names_it_and_offers_best(broken_copy, capsys):
    last, best = broken_copy / "checkpoints" / "last.pt", broken_copy / "checkpoints" / "best.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    epochs_before = len([r for r in (broken_copy / "metrics.jsonl").read_text().splitlines() if '"epoch"' in r])
    assert main(["pretrain", "--resume", str(broken_copy), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert str(last) in line and "not a readable checkpoint" in line
    assert "best.pt" in line and f"--resume {broken_copy} --from best" in line
    assert not (broken_copy / ".lock").exists()
    # the offer works: it continues from best.pt and finishes, writing a good last.pt
    assert main(["pretrain", "--resume", str(broken_copy), "--from", "best", "--no-progress"]) == 0
    assert f"resumed from {best}" in capsys.readouterr().err
    assert read_status(broken_copy)["state"] == "finished"
    assert torch.load(last, weights_only=True)["epoch"] == 2
    assert len([r for r in (broken_copy / "metrics.jsonl").read_text().splitlines() if '"epoch"' in r]) == (
        epochs_before
    )


def test_resume_with_no_readable_checkpoint_says_so_without_an_offer(broken_copy, capsys):
    for name in ("last.pt", "best.pt"):
        (broken_copy / "checkpoints" / name).write_bytes(GARBAGE)
    assert main(["pretrain", "--resume", str(broken_copy), "--no-progress"]) == 2
    line = one_error_line(capsys)
    assert "last.pt" in line and "--from" not in line and "start the run anew" in line
    assert main(["pretrain", "--resume", str(broken_copy), "--from", "best", "--no-progress"]) == 2
    assert "best.pt is not a readable checkpoint" in one_error_line(capsys)


def test_resume_with_a_corrupt_config_names_the_file(broken_copy, capsys):
    config = broken_copy / "config.yaml"
    config.write_bytes(GARBAGE)
    assert main(["pretrain", "--resume", str(broken_copy), "--no-progress"]) == 2
    assert f"{config} is not text" in one_error_line(capsys)
    config.write_text("model:\n  fpn: true\n loss: [\n")
    assert main(["pretrain", "--resume", str(broken_copy), "--no-progress"]) == 2
    assert f"{config} is not valid YAML (line 3, column 2" in one_error_line(capsys)


def test_from_without_resume_is_refused(tiny_data, tmp_path, capsys):
    assert main([*pretrain_args(tiny_data, tmp_path / "run"), "--from", "best"]) == 2
    assert "--resume" in one_error_line(capsys) and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ full disk
@pytest.fixture
def small_disk(tmp_path, request):
    """A real tmpfs of ``request.param`` (default 30m) as the run folder (needs root and mount; skipped otherwise),
    unmounted after the test."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    size = getattr(request, "param", "30m")
    try:
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True)
    except OSError as e:  # no mount command
        pytest.skip(f"cannot mount a tmpfs here: {e}")
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_says_so_in_one_line_and_marks_the_run_failed(tiny_data, small_disk, capsys):
    out = small_disk / "run"  # the first 53 MB epoch checkpoint cannot fit in 30 MB
    assert main(pretrain_args(tiny_data, out)) == 2
    line = one_error_line(capsys)
    assert line == f"hico: error: no space left on device ({out / 'checkpoints' / 'epoch_0000.pt'})"
    status = read_status(out)
    assert status["state"] == "failed" and status["error"].startswith("no space left on device (")
    assert not list(out.rglob("*.tmp")) and not (out / ".lock").exists()


def fill(disk: Path) -> None:
    """Take every free byte of ``disk``."""
    with open(disk / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to flush at the end
        chunk = b"\0" * (1 << 20)
        with pytest.raises(OSError) as full:
            while True:
                f.write(chunk)
        assert full.value.errno == errno.ENOSPC


@pytest.mark.parametrize("small_disk", ["200m"], indirect=True)  # one last.pt of SimCLR (138 MB) fits
def test_a_disk_that_fills_up_keeps_the_previous_checkpoint_and_says_failed(tiny_data, small_disk, monkeypatch):
    """The disk fills up completely after the first last.pt: the next writes fail, status.json says failed (there
    is no room for a new file, so it is rewritten in place), last.pt is the one of before."""
    overrides = [*TINY, "train.epoch_checkpoints=false", "train.checkpoint_every=1", "train.holdout=0",
                 f"data.path={tiny_data}"]  # fmt: skip
    real_save = Trainer.save

    def save_then_fill(self, best=False):
        real_save(self, best)
        if not (small_disk / "filler").exists():
            fill(small_disk)

    monkeypatch.setattr(Trainer, "save", save_then_fill)
    out = small_disk / "run"
    cfg = load_method("simclr", overrides)
    with pytest.raises(DiskFullError, match="no space left on device") as caught:
        pretrain(cfg, out=out, progress=False)
    assert str(out) in str(caught.value)
    status = read_status(out)
    assert status["state"] == "failed" and status["error"] == str(caught.value)
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 1
    assert not list(out.rglob("*.tmp"))


def test_a_full_disk_injected_in_the_writer(tiny_data, tmp_path, monkeypatch, capsys):
    """The same without a tmpfs (always runs): after the first last.pt no new file can be created."""
    import hico.io

    full = {"now": False}
    real_mkstemp, real_save = hico.io.tempfile.mkstemp, Trainer.save

    def mkstemp(*args, **kw):
        if full["now"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_mkstemp(*args, **kw)

    def save_then_fill(self, best=False):
        real_save(self, best)
        full["now"] = True

    monkeypatch.setattr(hico.io.tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(Trainer, "save", save_then_fill)
    out = tmp_path / "run"
    assert main(pretrain_args(tiny_data, out, ("train.checkpoint_every=1", "train.epoch_checkpoints=false"))) == 2
    line = one_error_line(capsys)
    assert line.startswith("hico: error: no space left on device (" + str(out))
    status = read_status(out)
    assert status["state"] == "failed" and line.endswith(status["error"])
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=True)["global_step"] == 1


def test_atomic_write_names_the_file_on_a_full_disk_and_leaves_nothing(tmp_path):
    def torch_like(f):  # torch.save reports a failed write as a RuntimeError raised while handling the OSError
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None

    for write in (torch_like, lambda f: f.write(1 / 0)):
        target = tmp_path / "x.pt"
        with pytest.raises((DiskFullError, ZeroDivisionError)) as caught:
            atomic_write(target, write, mode="wb")
        if caught.type is DiskFullError:
            assert str(caught.value) == f"no space left on device ({target})"
            assert isinstance(caught.value, OSError) and caught.value.errno == errno.ENOSPC
        assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- config files
def test_a_yaml_syntax_error_gives_its_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: hico\nloss:\n  lam: 0.3\n temperature: [\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML \(line 4, column 2: "):
        load_method(str(bad))


def test_a_missing_extends_names_the_file_that_extends(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nloss:\n  lam: 0.3\n")
    with pytest.raises(ConfigError) as caught:
        load_method(str(child))
    assert str(caught.value).startswith(f"{child}: extends 'base.yaml', which is not a YAML file nor a method")
