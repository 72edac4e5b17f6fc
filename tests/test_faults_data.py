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
from conftest import ramp, write_image

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


TINY = ["model.init=random", "augment.size=32", "data.working_size=32", "train.epochs=1", "train.batch_size=4",
        "train.holdout=0", "train.knn_every=0", "train.epoch_checkpoints=false", "data.label_rate=0.5"]  # fmt: skip


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
