"""Fault injection on the data layer: broken frames inside a frame folder, deep (16-bit) images, stale cache
entries decoded the old way, and the number of classes taken from the data."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import APP, TINY_RUN, app_page, ramp, write_image

from hico.cli import main
from hico.data import scan
from hico.data.cache import FrameCache
from hico.data.decode import read_image
from hico.models.config import ModelConfig


def broken_frame_folder(root: Path, n: int = 6, broken: int = 3) -> Path:
    """``root/covid/v1/{0..n-1}.png`` with frame ``broken`` replaced by bytes that are no image; returns its path."""
    frames = ramp(n)
    for i, f in enumerate(frames):
        write_image(root / "covid" / "v1" / f"{i}.png", f)
    bad = root / "covid" / "v1" / f"{broken}.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))  # a PNG signature, then garbage
    return bad


@pytest.mark.parametrize("cache", ["memory", "disk, cold", "disk, warm"])
def test_a_frame_folder_with_one_broken_frame_keeps_the_others_and_names_the_broken_file(tmp_path, cache):
    bad = broken_frame_folder(tmp_path / "d")
    cache_dir = None if cache == "memory" else tmp_path / "cache"
    if cache == "disk, warm":
        scan(tmp_path / "d", size=16, cache_dir=cache_dir).load_all(progress=False)  # fills the disk cache
    ds = scan(tmp_path / "d", size=16, cache_dir=cache_dir).load_all(progress=False)
    assert [v.video_id for v in ds.videos] == ["covid/v1"]
    means = ds.frames(0).reshape(5, -1).mean(1)
    np.testing.assert_allclose(means, [20 + 15 * i for i in (0, 1, 2, 4, 5)], atol=0.5)  # ramp(): 20 + 15 i
    assert [p for p, _ in ds.unreadable] == [bad]
    assert str(bad) in ds.unreadable[0][1] and "\n" not in ds.unreadable[0][1]


def test_scan_json_names_the_broken_frame_not_the_folders_first(tmp_path, capsys):
    bad = broken_frame_folder(tmp_path / "d")
    write_image(tmp_path / "d" / "regular" / "r1" / "0.png", ramp(1)[0])
    write_image(tmp_path / "d" / "regular" / "r1" / "1.png", ramp(2)[1])
    assert main(["data", "scan", str(tmp_path / "d"), "--json", "--no-cache", "--size", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["unreadable"] == [str(bad)]
    assert out["videos"] == 2 and out["frames"] == 5 + 2


def test_a_frame_folder_without_a_readable_frame_is_unreadable_with_one_line(tmp_path):
    for i in range(3):
        (tmp_path / "c" / "v").mkdir(parents=True, exist_ok=True)
        (tmp_path / "c" / "v" / f"{i}.jpg").write_bytes(b"no jpeg")
    write_image(tmp_path / "c" / "ok.png", ramp(1)[0])
    ds = scan(tmp_path, size=16).load_all(progress=False)
    assert [v.video_id for v in ds.videos] == ["c/ok"]
    ((path, reason),) = ds.unreadable
    assert str(tmp_path / "c" / "v") in reason and "\n" not in reason


def write_png16(path: Path, values: np.ndarray) -> Path:
    """Save (H, W) uint16 values as a 16-bit grey PNG (Pillow mode I;16)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("I;16", (values.shape[1], values.shape[0]))
    im.frombytes(values.astype("<u2").tobytes())
    im.save(path)
    return path


def png16_ramp(side: int) -> np.ndarray:
    """A known 16-bit ramp: 1000 + 60 k over the pixels k = 0 .. side^2 - 1 (row-major)."""
    return (1000 + 60 * np.arange(side * side)).reshape(side, side).astype(np.uint16)


def test_a_16_bit_png_is_scaled_to_8_bits_by_its_range(tmp_path):
    values = png16_ramp(32)  # 1000 .. 62380
    f = write_png16(tmp_path / "deep.png", values)
    from PIL import Image

    assert Image.open(f).mode in ("I;16", "I")
    lo, hi = 1000.0, 1000.0 + 60 * (32 * 32 - 1)
    expected = np.rint((values.astype(np.float64) - lo) / (hi - lo) * 255).astype(np.uint8)
    got = read_image(f, 32)  # the working size is the image's: no resampling
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    assert (got == 255).mean() < 0.01 and got.min() == 0  # not clipped to white


def test_a_16_bit_png_is_area_resampled_after_scaling(tmp_path):
    values = png16_ramp(64)
    f = write_png16(tmp_path / "deep.png", values)
    lo, hi = float(values.min()), float(values.max())
    scaled = (values.astype(np.float64) - lo) / (hi - lo) * 255
    expected = scaled.reshape(32, 2, 32, 2).mean(axis=(1, 3))  # a 2x2 box average
    got = read_image(f, 32).astype(np.float64)
    assert np.abs(got - expected).max() <= 0.5 + 1e-3


def test_a_16_bit_frame_reaches_the_dataset_and_the_cache_range_scaled(tmp_path):
    values = png16_ramp(32)
    write_png16(tmp_path / "d" / "c" / "v" / "0.png", values)
    write_png16(tmp_path / "d" / "c" / "v" / "1.png", values[::-1])
    ds = scan(tmp_path / "d", size=32, cache_dir=tmp_path / "cache").load_all(progress=False)
    frames = np.asarray(ds.frames(0))
    assert frames.shape == (2, 32, 32) and frames.min() == 0 and frames.max() == 255
    assert abs(frames.mean() - 127.5) < 1  # a linear ramp over the full range: its mean is half way


def test_a_cache_entry_decoded_the_old_way_is_not_served(tmp_path):
    """An entry from before the deep-image fix (clipped to white) sits under the old key: it must not be used."""
    values = png16_ramp(32)
    f = write_png16(tmp_path / "d" / "c" / "deep.png", values)
    cache_dir = tmp_path / "cache"
    st = os.stat(f)  # the key of cache version 1, computed here from its description (hico/data/cache.py)
    old_key = hashlib.sha1(f"v1|32|{f.resolve()}|{st.st_mtime_ns}|{st.st_size}".encode()).hexdigest()
    stale = cache_dir / "frames32" / old_key[:2] / f"{old_key}.npy"
    stale.parent.mkdir(parents=True)
    np.save(stale, np.full((1, 32, 32), 255, np.uint8))
    frames = FrameCache(32, cache_dir).load([f])
    assert frames.min() == 0 and (frames == 255).mean() < 0.01


# ---------------------------------------------------------------------------------- the number of classes


def four_classes(root: Path, videos: int = 2, frames: int = 4) -> Path:
    """A 4-class frame-folder dataset (POCUS has 4 classes; the sample data 3)."""
    rng = np.random.default_rng(0)
    for label in ("a", "b", "c", "d"):
        for v in range(videos):
            for i in range(frames):
                write_image(root / label / f"{label}{v}" / f"{i}.png", rng.integers(0, 255, (32, 32), np.uint8))
    return root


TINY = [*TINY_RUN, "data.working_size=32", "train.epochs=1", "train.batch_size=4", "train.holdout=0", "train.knn_every=0",
        "train.epoch_checkpoints=false", "data.label_rate=0.5"]  # fmt: skip


def pretrain_argv(data: Path, out: Path, config: str, extra: tuple[str, ...] = ()) -> list[str]:
    argv = ["pretrain", "--config", config, "--data", str(data), "--out", str(out), "--no-progress"]
    for item in (*TINY, *extra):
        argv += ["--set", item]
    return argv


@pytest.mark.parametrize("config", ["hico", "uscl"])  # the two methods whose loss reads labels
def test_pretrain_takes_the_number_of_classes_from_the_data(tmp_path, monkeypatch, config):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    data = four_classes(tmp_path / "four")
    out = tmp_path / "run"
    assert main(pretrain_argv(data, out, config)) == 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    assert written["model"]["num_classes"] == 4 and isinstance(written["model"]["num_classes"], int)
    assert ModelConfig.from_dict(written["model"]).num_classes == 4  # what an older reader sees: an int
    state = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert state["model"]["classifier.weight"].shape[0] == 4


def test_an_explicit_number_of_classes_that_disagrees_is_one_line_before_the_run_folder(tmp_path, capsys):
    data = four_classes(tmp_path / "four")
    out = tmp_path / "run"
    assert main(pretrain_argv(data, out, "hico", ("model.num_classes=3",))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "model.num_classes is 3" in err and "4 classes" in err
    assert "model.num_classes=4" in err and not out.exists()  # nothing left behind to block --out


def test_resolve_classes_fills_auto_and_keeps_explicit_values():
    from hico.config import ConfigError, load_method, resolve_classes

    auto = load_method("hico")
    assert auto.model.num_classes is None and load_method("hico", ["model.num_classes=auto"]).model.num_classes is None
    assert resolve_classes(auto, ["a", "b", "c", "d"]).model.num_classes == 4
    four = load_method("hico", ["model.num_classes=4"])
    assert resolve_classes(four, ["a", "b", "c", "d"]).model.num_classes == 4
    with pytest.raises(ConfigError, match="model.num_classes is 4 but .* has 2 classes"):
        resolve_classes(four, ["a", "b"])
    unlabelled = load_method("hico", ["model.num_classes=4", "data.label_rate=0"])  # the labels are not used
    assert resolve_classes(unlabelled, ["a", "b"]).model.num_classes == 4
    assert resolve_classes(load_method("simclr"), ["a", "b"]).model.num_classes == 0


# ------------------------------------------------------------------------------------------------- the app

SAMPLES = APP.parent / "data_samples"


def main_app():
    from streamlit.testing.v1 import AppTest

    return AppTest.from_file(str(APP / "main.py"), default_timeout=120)


def two_classes(root: Path) -> Path:
    for label in ("x", "y"):
        for v in range(2):
            for i in range(3):
                write_image(root / label / f"{label}{v}" / f"{i}.png", ramp(3)[i])
    return root


def classes_shown(at) -> str:
    return {m.label: m.value for m in at.metric}["classes"]


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """The app on its own cache and runs folder; two datasets, A (2 classes) and B (4), under an allowed root."""
    pytest.importorskip("streamlit")
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HICO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("HOME", str(tmp_path))  # the home folder is an allowed root
    return two_classes(tmp_path / "A"), four_classes(tmp_path / "B")


def test_data_page_box_and_dataset_follow_every_edit(app_env):
    a, b = app_env
    at = app_page("data_page").run()
    assert not at.exception and classes_shown(at) == "3"  # data_samples/
    for path, classes in ((a, "2"), (b, "4"), (a, "2")):  # folder A + Enter, then B + Enter, then A again
        at.text_input[0].set_value(str(path)).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert at.text_input[0].value == str(path) and classes_shown(at) == classes
        assert at.session_state["dataset"] == str(path)


def test_a_reload_opens_the_dataset_named_in_the_url(app_env):
    a, b = app_env
    at = main_app()
    at.query_params["dataset"] = str(b)  # what the URL of the page said before the reload
    at.run()
    assert not at.exception and classes_shown(at) == "4" and at.text_input[0].value == str(b)
    at.text_input[0].set_value(str(a)).run()
    assert classes_shown(at) == "2" and at.query_params["dataset"] == str(a)  # the URL follows the choice

    refused = main_app()
    refused.query_params["dataset"] = "/etc"  # a URL naming a folder the app may not read: the default
    refused.run()
    assert not refused.exception and classes_shown(refused) == "3"


def test_the_app_started_on_a_folder_opens_on_it(app_env, monkeypatch):
    _, b = app_env
    monkeypatch.setattr("sys.argv", [str(APP / "main.py"), str(b)])  # streamlit run app/main.py -- B
    at = main_app().run()
    assert not at.exception and classes_shown(at) == "4" and at.text_input[0].value == str(b)


def test_train_page_trains_hico_on_a_4_class_dataset(app_env, tmp_path):
    import time

    from hico import runs
    from hico.runs import list_runs

    _, b = app_env
    at = app_page("train_page")
    at.session_state["dataset"] = str(b)  # chosen on the Data page
    at.run()
    assert not at.exception and str(b) in at.caption[0].value
    at.number_input[0].set_value(1)  # epochs
    at.number_input[1].set_value(4)  # batch
    at.number_input[2].set_value(32)  # size
    at.text_area[0].set_value("train.holdout=0\ntrain.epoch_checkpoints=false")  # 2 videos a class: no held-out
    at.button[0].click().run()
    assert not at.exception and at.success, [e.value for e in at.error]
    (run,) = list_runs(tmp_path / "runs")
    deadline = time.time() + 240
    while list_runs(tmp_path / "runs")[0].state in ("starting", "running") and time.time() < deadline:
        time.sleep(0.5)
    info = list_runs(tmp_path / "runs")[0]
    assert info.state == "finished", (info.error, runs.log_path(run.path).read_text()[-300:])
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert config["model"]["num_classes"] == 4 and config["train"]["holdout"] == 0  # the extra settings were used


def test_train_page_refuses_a_number_of_classes_the_data_has_not(app_env, tmp_path):
    _, b = app_env
    at = app_page("train_page")
    at.session_state["dataset"] = str(b)
    at.run()
    at.text_area[0].set_value("model.num_classes=3")
    at.button[0].click().run()
    assert not at.success and len(at.error) == 1 and "has 4 classes" in at.error[0].value
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def garbage_run(root: Path) -> Path:
    """A finished run on data_samples/ whose epoch checkpoints and backbone.pt are random bytes (seeded: the
    epoch files are refused by torch.load's unpickler, backbone.pt is not even a zip or pickle)."""
    run = root / "garbage"
    (run / "checkpoints").mkdir(parents=True)
    config = load_method_dict(SAMPLES)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(0)
    for name in ("checkpoints/epoch_0000.pt", "checkpoints/epoch_0001.pt"):
        (run / name).write_bytes(b"\x80\x02" + rng.bytes(3000))  # a pickle protocol header, then garbage
    (run / "backbone.pt").write_bytes(b"\x94" + rng.bytes(3000))
    (run / "status.json").write_text(json.dumps({"state": "finished", "epoch": 1, "epochs": 1, "updated": 1.0}))
    return run


def load_method_dict(data: Path) -> dict:
    from hico.config import load_method

    return load_method("hico", ["model.num_classes=3", "augment.size=32", f"data.path={data}"]).to_dict()


@pytest.mark.parametrize("features", ["epochs during training", "final backbone"])
def test_embeddings_page_says_one_line_for_a_checkpoint_that_is_not_one(app_env, tmp_path, features):
    run = garbage_run(tmp_path / "runs")
    at = app_page("embeddings_page", timeout=180).run()
    if features != at.selectbox[1].value:
        at.selectbox[1].set_value(features).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value and "cannot read checkpoint" in at.error[0].value
    assert str(run) in at.error[0].value

    evaluate = app_page("evaluate_page", timeout=180).run()  # the Evaluate page on the same file: one line too
    evaluate.button[0].click().run()
    assert not evaluate.exception and len(evaluate.error) == 1 and "\n" not in evaluate.error[0].value
