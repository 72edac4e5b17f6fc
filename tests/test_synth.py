"""The synthetic lung-ultrasound generator: determinism, geometry, sliding, class signs, the on-disk set.

The class signs are checked with simple picture statistics written here, independent of the generator's code.
"""

from __future__ import annotations

import csv
import inspect
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hico.data.synth import CLASSES, preview, synth_video, write_dataset


def _video(label: str, i: int, n_frames: int = 8, size: int = 128, seed: int = 0) -> np.ndarray:
    return synth_video(label, n_frames, size, np.random.default_rng([seed, CLASSES.index(label), i]))


# ---------------------------------------------------------------------------------------------------------------
# independent picture statistics


def _highpass(p: np.ndarray, width: int) -> np.ndarray:
    """A 1-D profile minus its moving average."""
    k = np.ones(width) / width
    return p - np.convolve(np.pad(p, width // 2, mode="edge"), k, mode="valid")


def _vertical_energy(v: np.ndarray) -> float:
    """Vertical stripes (B-lines) deep in the picture: high-passed column profile of the lower centre, per mean."""
    v = v.astype(np.float64)
    S = v.shape[1]
    lower = v[:, int(0.55 * S) : int(0.9 * S), int(0.35 * S) : int(0.65 * S)]
    return float(np.mean([_highpass(c, 9).std() for c in lower.mean(axis=1)]) / (lower.mean() + 1))


def _horizontal_energy(v: np.ndarray) -> float:
    """Horizontal bands (A-lines) below the top third: high-passed row profile of the centre, per mean."""
    v = v.astype(np.float64)
    S = v.shape[1]
    mid = v[:, int(0.35 * S) : int(0.95 * S), int(0.4 * S) : int(0.6 * S)]
    return float(np.mean([_highpass(r, 15).std() for r in mid.mean(axis=2)]) / (mid.mean() + 1))


def _subpleural_tissue(v: np.ndarray) -> float:
    """Tissue-like echoes under the pleura (consolidation): brightest windowed median below the brightest upper
    row (the pleura), relative to the chest wall's median."""
    m = v.astype(np.float64).mean(axis=0)
    S = m.shape[0]
    a, b = int(0.12 * S), int(0.5 * S)
    pleura = a + int(np.argmax(m[a:b, int(0.4 * S) : int(0.6 * S)].mean(axis=1)))
    below = m[pleura + int(0.05 * S) : pleura + int(0.2 * S)]
    wall = np.median(m[int(0.3 * pleura) : int(0.8 * pleura), int(0.4 * S) : int(0.6 * S)])
    w = int(0.12 * S)
    medians = [np.median(below[:, x : x + w]) for x in range(int(0.2 * S), int(0.8 * S) - w, max(1, w // 3))]
    return float(max(medians) / (wall + 1))


# ---------------------------------------------------------------------------------------------------------------
# synth_video


@pytest.mark.parametrize("label", CLASSES)
def test_shape_dtype_and_range(label: str) -> None:
    v = _video(label, 0, n_frames=5, size=96)
    assert v.shape == (5, 96, 96)
    assert v.dtype == np.uint8
    assert v.max() > 150  # a bright pleura / B-line / A-line somewhere
    assert 10 < v.mean() < 120


def test_deterministic_per_seed() -> None:
    a = synth_video("covid", 6, 64, np.random.default_rng([3, 0, 1]))
    b = synth_video("covid", 6, 64, np.random.default_rng([3, 0, 1]))
    c = synth_video("covid", 6, 64, np.random.default_rng([4, 0, 1]))
    assert a.tobytes() == b.tobytes()
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_bad_arguments() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown class"):
        synth_video("normal", 4, 64, rng)
    with pytest.raises(ValueError):
        synth_video("covid", 0, 64, rng)
    with pytest.raises(ValueError):
        synth_video("covid", 4, 8, rng)


@pytest.mark.parametrize("label", CLASSES)
def test_sector_fan(label: str) -> None:
    """Black outside the convex sector (all four corners), bright inside; the fan widens with depth."""
    for i in range(3):
        v = _video(label, i, n_frames=4)
        S, c = v.shape[1], 10
        for corner in (v[:, :c, :c], v[:, :c, -c:], v[:, -c:, :c], v[:, -c:, -c:]):
            assert corner.max() <= 8
        assert v[:, S // 3 : 2 * S // 3, S // 3 : 2 * S // 3].mean() > 15
        lit = (v.mean(axis=0) > 4).sum(axis=1)  # lit width of each row
        assert lit[int(0.8 * S)] > lit[int(0.1 * S)] > 0


def test_frames_change_but_stay_similar() -> None:
    """Sliding and fresh speckle change every frame, yet a video is much closer to itself than to another."""
    videos = [_video(label, i, n_frames=6).astype(np.float64) for label in CLASSES for i in range(2)]
    for k, v in enumerate(videos):
        within = np.mean([np.abs(v[t + 1] - v[t]).mean() for t in range(len(v) - 1)])
        other = videos[(k + 1) % len(videos)]
        across = np.mean([np.abs(v[t] - other[t]).mean() for t in range(len(v))])
        assert within > 1.0
        assert within < 0.8 * across


def _lateral_lag(a: np.ndarray, b: np.ndarray, max_lag: int = 6) -> int:
    """The lateral shift in pixels of patch b against patch a that maximises their normalised correlation."""
    n = a.shape[1]
    x = a[:, max_lag : n - max_lag] - a[:, max_lag : n - max_lag].mean()
    scores = []
    for lag in range(-max_lag, max_lag + 1):
        y = b[:, max_lag + lag : n - max_lag + lag]
        y = y - y.mean()
        scores.append((x * y).sum() / np.sqrt((x * x).sum() * (y * y).sum() + 1e-9))
    return int(np.argmax(scores)) - max_lag


def test_lung_slides_under_the_chest_wall() -> None:
    """Lung sliding: the texture just below the pleura moves laterally against the chest wall just above it.

    The pleura is found as the brightest upper row; the lateral motion of each band since frame 0 is tracked by
    correlation; probe drift moves both bands alike, sliding only the lower one.
    """
    relative = []
    for label in CLASSES:
        for i in range(3):
            v = _video(label, i, n_frames=12).astype(np.float64)
            S = v.shape[1]
            a, b = int(0.12 * S), int(0.5 * S)
            pleura = a + int(np.argmax(v.mean(axis=0)[a:b, int(0.4 * S) : int(0.6 * S)].mean(axis=1)))
            cols = slice(int(0.3 * S), int(0.7 * S))
            lung, wall = v[:, pleura + 2 : pleura + 14, cols], v[:, max(2, pleura - 16) : pleura - 4, cols]
            lags = [_lateral_lag(lung[0], lung[t]) - _lateral_lag(wall[0], wall[t]) for t in range(1, len(v))]
            relative.append(np.mean(np.abs(lags)))
    assert np.mean(relative) > 0.75, relative


def test_class_signs_are_measurable() -> None:
    """B-lines (covid) give vertical stripes, A-lines (regular) horizontal bands, consolidation (pneumonia)
    tissue-like echoes under the pleura: on average over videos, with statistics blind to the generator."""
    n = 8
    stats = {
        label: np.array(
            [
                (_vertical_energy(v), _horizontal_energy(v), _subpleural_tissue(v))
                for v in (_video(label, i, n_frames=6, seed=5) for i in range(n))
            ]
        ).mean(axis=0)
        for label in CLASSES
    }
    assert stats["covid"][0] > 1.5 * stats["regular"][0]
    assert stats["regular"][1] > 1.5 * stats["covid"][1]
    assert stats["pneumonia"][2] > 1.15 * stats["regular"][2]


def test_raw_pixel_linear_probe_is_learnable_not_trivial() -> None:
    """A logistic regression on 32x32 raw pixels, split by video, beats chance but not perfectly."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    n_videos, n_frames, size = 12, 4, 64
    X, y, groups = [], [], []
    for ci, label in enumerate(CLASSES):
        for i in range(n_videos):
            v = _video(label, i, n_frames=n_frames, size=size, seed=11).astype(np.float32) / 255
            X.append(v.reshape(n_frames, 32, 2, 32, 2).mean(axis=(2, 4)).reshape(n_frames, -1))
            y += [ci] * n_frames
            groups += [ci * n_videos + i] * n_frames
    X, y, groups = np.concatenate(X), np.array(y), np.array(groups)
    X = X - X.mean(axis=0)
    pred = np.empty_like(y)
    for train, test in GroupKFold(n_splits=4).split(X, y, groups):
        pred[test] = LogisticRegression(C=0.1, max_iter=500).fit(X[train], y[train]).predict(X[test])
    acc = float(np.mean(pred == y))
    assert 0.42 < acc < 0.95, acc


# ---------------------------------------------------------------------------------------------------------------
# write_dataset / preview


SAMPLES = Path(__file__).resolve().parents[1] / "data_samples"


def _read_index(root: Path) -> list[dict[str, str]]:
    with open(root / "index.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["file", "video_id", "class", "split_group"]
        return list(reader)


def test_write_dataset_layout_and_index(tmp_path: Path) -> None:
    out = write_dataset(tmp_path / "set", videos_per_class=3, n_frames=12, size=64, seed=1, progress=False)
    assert out == tmp_path / "set"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no temporary folder left behind
    assert sorted(p.name for p in out.iterdir()) == sorted(["README.md", *CLASSES, "index.csv"])
    assert "CC0" in (out / "README.md").read_text()
    rows = _read_index(out)
    assert len(rows) == len(CLASSES) * 3 * 12
    for row in rows:
        assert (out / row["file"]).is_file()
        label, video_id, n = row["file"].split("/")
        assert label == row["class"] and video_id == row["video_id"] and video_id.startswith(f"{label}_v")
        assert row["split_group"].startswith(f"{label}_p")
    vdir = out / "covid" / "covid_v00"
    assert sorted(p.name for p in vdir.iterdir()) == sorted(f"{n}.jpg" for n in range(12))  # 0.jpg .. 11.jpg
    groups = {r["video_id"]: r["split_group"] for r in rows}
    assert groups["covid_v00"] == groups["covid_v01"] != groups["covid_v02"]  # 2 videos per patient
    assert len(set(groups.values())) == len(CLASSES) * 2
    # the frames are the generator's, through JPEG at quality 90
    frame = np.asarray(Image.open(vdir / "5.jpg"))
    expected = synth_video("covid", 12, 64, np.random.default_rng([1, 0, 0]))[5]
    assert frame.shape == (64, 64) and frame.dtype == np.uint8
    assert np.abs(frame.astype(int) - expected.astype(int)).mean() < 4


def test_write_dataset_is_deterministic(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", videos_per_class=2, n_frames=4, size=64, seed=2, progress=False)
    b = write_dataset(tmp_path / "b", videos_per_class=2, n_frames=4, size=64, seed=2, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == len(CLASSES) * 2 * 4
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "index.csv").read_bytes() == (b / "index.csv").read_bytes()


def test_write_dataset_refuses_non_empty_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "set"
    out.mkdir()
    write_dataset(out, videos_per_class=1, n_frames=2, size=64, progress=False)  # an empty folder is fine
    with pytest.raises(ValueError, match="not empty"):
        write_dataset(out, videos_per_class=1, n_frames=2, size=64, progress=False)
    (out / "stale.txt").write_text("old")
    write_dataset(out, videos_per_class=2, n_frames=3, size=64, progress=False, overwrite=True)
    assert not (out / "stale.txt").exists()
    assert len(_read_index(out)) == len(CLASSES) * 2 * 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]


def test_preview_draws_a_grid(tmp_path: Path) -> None:
    root = write_dataset(tmp_path / "set", videos_per_class=2, n_frames=6, size=64, progress=False)
    png = tmp_path / "docs" / "preview.png"
    preview(root, png, per_class=2, frames=(0, 5))
    im = Image.open(png)
    assert im.size[0] > 4 * 64 and im.size[1] > 3 * 64
    with pytest.raises(ValueError):
        preview(tmp_path / "docs", tmp_path / "x.png")


def test_defaults_are_the_committed_set() -> None:
    params = inspect.signature(write_dataset).parameters
    defaults = {k: params[k].default for k in ("videos_per_class", "n_frames", "size", "seed", "videos_per_patient")}
    assert defaults == {"videos_per_class": 12, "n_frames": 16, "size": 128, "seed": 0, "videos_per_patient": 2}


@pytest.mark.skipif(not (SAMPLES / "index.csv").is_file(), reason="no committed data_samples/")
def test_committed_sample_set_matches_the_generator() -> None:
    """data_samples/ is write_dataset's defaults: 3 x 12 x 16 frames, and its frames are today's generator's."""
    rows = _read_index(SAMPLES)
    assert len(rows) == len(CLASSES) * 12 * 16
    assert {r["class"] for r in rows} == set(CLASSES)
    for ci, label in enumerate(CLASSES):
        expected = synth_video(label, 16, 128, np.random.default_rng([0, ci, 5]))
        for n in (0, 15):
            frame = np.asarray(Image.open(SAMPLES / label / f"{label}_v05" / f"{n}.jpg"))
            assert np.abs(frame.astype(int) - expected[n].astype(int)).mean() < 4
