"""Frozen-feature evaluation: input conversion, frame picking, feature extraction, k-NN, probe, embed/probe CLIs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hico.cli import main
from hico.data import scan
from hico.data.augment import AugmentConfig, frames_to_input
from hico.data.synth import write_dataset
from hico.eval.features import Features, extract_features, frame_indices, pick_frames
from hico.eval.knn import knn_accuracy, knn_predict, level_knn_accuracy
from hico.eval.probe import probe
from hico.models import HiCoNet, ModelConfig, resolve_backbone

# ------------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """3 classes x 4 videos x 4 frames at 64 px, one video per patient (12 groups)."""
    root = tmp_path_factory.mktemp("eval") / "tiny"
    return write_dataset(root, 4, 4, 64, videos_per_patient=1, progress=False)


@pytest.fixture(scope="module")
def tiny(tiny_root):
    return scan(tiny_root, size=64, cache_dir=None).load_all(progress=False)


class _Lengths:
    """Stands in for a VideoDataset where only the number of frames per video matters."""

    def __init__(self, lengths):
        self.lengths = list(lengths)

    def __len__(self):
        return len(self.lengths)

    def n_frames(self, i):
        return self.lengths[i]


def _features(x: np.ndarray, labels_per_video, frames_per_video: int, videos_per_group: int = 2) -> Features:
    """Features with one level per name in x (dict) or "global"; video v has label labels_per_video[v]."""
    n_videos = len(labels_per_video)
    video = np.repeat(np.arange(n_videos), frames_per_video)
    levels = x if isinstance(x, dict) else {"global": x}
    return Features(
        levels={k: np.asarray(v, np.float32) for k, v in levels.items()},
        labels=np.asarray(labels_per_video, np.int64)[video],
        video=video,
        frame=np.tile(np.arange(frames_per_video), n_videos),
        groups=np.array([f"p{v // videos_per_group}" for v in video]),
        classes=[f"c{i}" for i in range(int(max(labels_per_video)) + 1)],
        video_ids=[f"v{v}" for v in range(n_videos)],
    )


# ------------------------------------------------------------------------------------------------------- features


def test_frames_to_input_shape_and_normalisation():
    frames = torch.full((3, 40, 40), 128, dtype=torch.uint8)
    expected = (128 / 255 - 0.5) / 0.25
    for size in (40, 24, 64):  # same, shrink, grow
        x = frames_to_input(frames, AugmentConfig(size=size))
        assert x.shape == (3, 3, size, size) and x.dtype == torch.float32
        assert torch.allclose(x, torch.full_like(x, expected), atol=1e-5)
    ramp = torch.arange(0, 256, 16, dtype=torch.uint8).repeat(2, 16, 1)  # (2, 16, 16)
    x = frames_to_input(ramp, AugmentConfig(size=16, mean=0.4, std=0.2))
    assert torch.equal(x[:, 0], x[:, 2])
    assert torch.allclose(x[:, 1], (ramp.float() / 255 - 0.4) / 0.2, atol=1e-6)
    with pytest.raises(ValueError):
        frames_to_input(ramp[0], AugmentConfig(size=16))


def test_pick_frames_evenly_spaced_deterministic():
    assert frame_indices(16, 8).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert frame_indices(16, 4).tolist() == [2, 6, 10, 14]
    assert frame_indices(10, 3).tolist() == [1, 5, 8]
    assert frame_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    assert frame_indices(5, None).tolist() == [0, 1, 2, 3, 4]
    for n, m in [(100, 7), (9, 8), (1000, 33)]:
        idx = frame_indices(n, m)
        assert len(idx) == m and np.all(np.diff(idx) > 0) and idx[0] >= 0 and idx[-1] < n
        assert np.ptp(np.diff(idx)) <= 1  # as even as integers allow
    videos = _Lengths([16, 1, 3, 20])
    picks = pick_frames(videos, 4)
    assert picks.dtype == np.int64 and picks.shape == (4 + 1 + 3 + 4, 2)
    assert picks[:, 0].tolist() == [0] * 4 + [1] + [2] * 3 + [3] * 4
    assert picks[4].tolist() == [1, 0]  # the one-frame video (a still image)
    assert np.array_equal(picks, pick_frames(videos, 4))
    assert len(pick_frames(videos, None)) == 16 + 1 + 3 + 20


def test_extract_features_shapes_and_roundtrip(tiny, tmp_path):
    torch.manual_seed(0)
    model = HiCoNet(ModelConfig())
    model.train()
    feats = extract_features(model, tiny, size=32, per_video=2, batch_size=7)  # resized from 64 px
    assert model.training  # the caller's mode is restored
    picks = pick_frames(tiny, 2)
    assert len(feats) == len(picks) == 24
    assert {k: v.shape for k, v in feats.levels.items()} == {k: (24, 256) for k in ("local", "medium", "global")}
    assert all(v.dtype == np.float32 and np.isfinite(v).all() for v in feats.levels.values())
    assert np.array_equal(feats.video, picks[:, 0]) and np.array_equal(feats.frame, picks[:, 1])
    assert np.array_equal(feats.labels, tiny.labels[feats.video])
    assert np.array_equal(feats.groups, tiny.groups[feats.video])
    assert feats.classes == ["covid", "pneumonia", "regular"] and len(feats.video_ids) == 12
    assert feats.meta["sources"] == {"local": "p2", "medium": "p4", "global": "p5"}

    # batching changes nothing (eval-mode BatchNorm): same features with one big batch
    again = extract_features(model, tiny, size=32, per_video=2, batch_size=64)
    for k in feats.levels:
        np.testing.assert_allclose(feats.levels[k], again.levels[k], rtol=1e-4, atol=1e-5)

    # the pooled maps are the model's own maps, averaged
    frames = torch.from_numpy(np.stack([tiny.frames(int(v))[f] for v, f in picks[:3]]))
    with torch.no_grad():
        maps = model.eval().forward_maps(frames_to_input(frames, AugmentConfig(size=32)))
    np.testing.assert_allclose(feats.levels["medium"][:3], maps["p4"].mean((2, 3)).numpy(), rtol=1e-4, atol=1e-5)

    feats.extra["thumb"] = np.array([f"t/{i}.png" for i in range(24)])
    path = feats.save(tmp_path / "f.npz")
    with np.load(path, allow_pickle=False) as z:  # no object arrays
        assert z["groups"].dtype.kind == "U" and z["level_local"].shape == (24, 256)
    back = Features.load(path)
    assert back.classes == feats.classes and back.video_ids == feats.video_ids and back.meta == feats.meta
    for name in ("labels", "video", "frame", "groups"):
        assert np.array_equal(getattr(back, name), getattr(feats, name))
    for k in feats.levels:
        assert np.array_equal(back.levels[k], feats.levels[k])
    assert np.array_equal(back.extra["thumb"], feats.extra["thumb"])


def test_extract_features_without_fpn_and_heads(tiny, tmp_path):
    model = HiCoNet(ModelConfig.preset("simclr"))
    feats = extract_features(model, tiny, size=32, per_video=1)
    assert {k: v.shape[1] for k, v in feats.levels.items()} == {"local": 64, "medium": 256, "global": 512}
    heads = extract_features(model, tiny, size=32, per_video=1, source="heads")
    assert list(heads.levels) == ["global"] and heads.levels["global"].shape == (12, 256)
    # an exported backbone file gives back the same features
    model.export_backbone(tmp_path / "backbone.pt")
    again = extract_features(resolve_backbone(tmp_path / "backbone.pt", seed=0), tiny, size=32, per_video=1)
    for k in feats.levels:
        np.testing.assert_allclose(again.levels[k], feats.levels[k], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="source"):
        extract_features(model, tiny, size=32, source="logits")


# ------------------------------------------------------------------------------------------------------------ knn


def _brute_knn(train_x, train_y, test_x, k, num_classes, temperature=0.07):
    preds = []
    for q in test_x:
        sims = []
        for j, t in enumerate(train_x):
            sims.append((float(np.dot(q, t) / (np.linalg.norm(q) * np.linalg.norm(t))), j))
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for sim, j in sims[: min(k, len(train_x))]:
            votes[int(train_y[j])] += math.exp(sim / temperature)
        best = max(votes)
        preds.append(votes.index(best))  # lowest class on ties
    return np.array(preds)


@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_knn_predict_matches_brute_force(k):
    rng = np.random.default_rng(k)
    train_x, test_x = rng.standard_normal((40, 6)), rng.standard_normal((25, 6))
    train_y = rng.integers(0, 4, 40)
    expected = _brute_knn(train_x, train_y, test_x, k, 4, temperature=0.5)
    got = knn_predict(train_x, train_y, test_x, k=k, num_classes=4, temperature=0.5, chunk_size=7)
    assert got.dtype == np.int64 and np.array_equal(got, expected)
    assert np.array_equal(
        knn_predict(train_x, train_y, test_x, k=k, num_classes=4), _brute_knn(train_x, train_y, test_x, k, 4)
    )


def test_knn_clips_k_and_ties():
    train_x = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    # k = 100 is clipped to 3; two weaker votes for class 1 outweigh one strong vote for class 0
    assert knn_predict(train_x, np.array([0, 1, 1]), np.array([[1.0, 0.2]]), k=100, temperature=10).tolist() == [1]
    # exactly tied votes go to the lowest class index
    tied = knn_predict(np.array([[1.0, 0.0], [1.0, 0.0]]), np.array([2, 1]), np.array([[1.0, 0.0]]), k=2)
    assert tied.tolist() == [1]
    with pytest.raises(ValueError):
        knn_predict(np.zeros((0, 2)), np.zeros(0, np.int64), np.ones((1, 2)))


def test_knn_separable_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(5)[:3] * 10
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + rng.standard_normal((90, 5))
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2], k=10) == 1.0


def test_level_knn_accuracy_never_uses_test_videos():
    # training videos: class 0 along e1, class 1 along e2; the test video (class 1) sits along e1, its frames
    # nearly identical: if its own frames were neighbours, they would vote it right
    rng = np.random.default_rng(0)
    e1, e2 = np.eye(4)[0], np.eye(4)[1]
    x = np.concatenate(
        [
            e1 + 0.3 * rng.standard_normal((8, 4)),  # videos 0, 1: class 0
            e2 + 0.3 * rng.standard_normal((8, 4)),  # videos 2, 3: class 1
            e1 + 1e-3 * rng.standard_normal((4, 4)),  # video 4: class 1, looks like class 0
        ]
    )
    feats = _features({"local": x, "global": -x}, [0, 0, 1, 1, 1], 4)
    acc = level_knn_accuracy(feats, np.array([0, 1, 2, 3]), np.array([4]), k=5)
    assert acc == {"local": 0.0, "global": 0.0}
    # the same frames with the test video's own frames allowed as neighbours would score 1: the setup can leak
    own = knn_accuracy(x, feats.labels, x[16:], feats.labels[16:], k=5)
    assert own == 1.0
    assert level_knn_accuracy(feats, np.array([0, 2, 3]), np.array([1]), k=3)["local"] == 1.0
    with pytest.raises(ValueError, match="both"):
        level_knn_accuracy(feats, np.array([0, 1, 4]), np.array([4]))


# ---------------------------------------------------------------------------------------------------------- probe


def _probe_data(separable: bool, seed: int = 0) -> Features:
    """30 videos of 3 classes, 4 frames each, 2 videos per patient: class-separated or pure-noise features."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), 10)
    x = rng.standard_normal((120, 32))
    if separable:
        x += 6 * np.eye(32)[np.repeat(labels, 4)]
    return _features({"local": x, "global": x[:, ::-1].copy()}, labels, 4)


def test_probe_grouped_folds_and_accuracy():
    feats = _probe_data(separable=True)
    res = probe(feats, folds=5, seed=0)
    group_of = dict(zip(feats.frame_video_ids, feats.groups, strict=True))
    tested = []
    for split in res["splits"]:
        train_groups = {group_of[v] for v in split["train_videos"]}
        test_groups = {group_of[v] for v in split["test_videos"]}
        assert not train_groups & test_groups
        assert not set(split["train_videos"]) & set(split["test_videos"])
        tested += split["test_videos"]
    assert sorted(tested) == sorted(feats.video_ids)  # every video tested exactly once
    assert sum(s["test_frames"] for s in res["splits"]) == len(feats)
    for name in ("local", "global"):
        r = res["levels"][name]
        assert r["linear_mean"] > 0.9 and r["knn_mean"] > 0.9 and r["linear_video_acc"] > 0.9
        assert len(r["linear_folds"]) == 5 and r["linear_std"] >= 0
        assert np.trace(r["linear_confusion"]) / np.sum(r["linear_confusion"]) == pytest.approx(r["linear_frame_acc"])
    noise = _probe_data(separable=False)
    del noise.levels["global"]
    chance = probe(noise, folds=5, seed=0)
    for r in chance["levels"].values():
        assert r["linear_mean"] < 0.6 and r["knn_mean"] < 0.6


# ------------------------------------------------------------------------------------------------------------ CLI


def _inner_scores_by_hand(x, y, groups, grid):
    """Each C's mean accuracy over GroupKFold(3) of the rows, fitted with scikit-learn directly."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.preprocessing import StandardScaler

    scores = []
    for c in grid:
        accs = []
        for tr, te in GroupKFold(n_splits=3).split(x, y, groups):
            scaler = StandardScaler().fit(x[tr])
            clf = LogisticRegression(C=c, max_iter=2000).fit(scaler.transform(x[tr]), y[tr])
            accs.append(np.mean(clf.predict(scaler.transform(x[te])) == y[te]))
        scores.append(np.mean(accs))
    return scores


def test_choose_C_takes_the_best_inner_score_and_prefers_strong_regularisation():
    from hico.eval.probe import C_GRID, choose_C, fit_linear

    # 18 "videos" of 8 frames, 3 classes, 40 dimensions: two signal dimensions under noise that the frames of a
    # video share (as frames of one video do).
    rng = np.random.default_rng(0)
    video = np.repeat(np.arange(18), 8)
    y = rng.permutation(np.repeat([0, 1, 2], 6))[video]
    x = rng.normal(size=(144, 40)) + rng.normal(size=(18, 40))[video]
    x[:, 0] += y
    x[:, 1] += y == 1
    scores = _inner_scores_by_hand(x, y, video, C_GRID)
    best = C_GRID[int(np.argmax(scores))]  # the first of equal scores
    assert best != min(C_GRID) and max(scores) > min(scores)  # a choice to make
    assert choose_C(x, y, video) == best
    model, _ = fit_linear(x, y, C=None, groups=video)
    assert model[-1].C == best
    # C = 0.1, 1 and 10 all separate a clean problem: the tie goes to the strongest regularisation.
    clean = np.eye(3)[y] + 0.01 * rng.normal(size=(144, 3))
    assert choose_C(clean, y, video, grid=(10.0, 1.0, 0.1)) == 0.1
    # One group: nothing to cross-validate, the usual C = 1; and auto needs groups.
    assert choose_C(x, y, np.zeros(144)) == 1.0
    with pytest.raises(ValueError, match="needs groups"):
        fit_linear(x, y, C=None)


def test_probe_reports_the_C_each_fold_used():
    from hico.eval.probe import C_GRID, format_table

    feats = _probe_data(separable=False, seed=1)
    for x in feats.levels.values():  # a weak class signal under noise: how much to regularise matters
        x += 0.7 * np.eye(32, dtype=np.float32)[feats.labels]
    fixed = probe(feats, folds=3, seed=0)
    assert all(r["linear_C"] == [1.0, 1.0, 1.0] for r in fixed["levels"].values())
    assert "chosen per fold" not in format_table(fixed)
    auto = probe(feats, folds=3, seed=0, C=None)
    ids = np.asarray(feats.video_ids)[feats.video]
    chosen = set()
    for name, x in feats.levels.items():
        for split, used in zip(auto["splits"], auto["levels"][name]["linear_C"], strict=True):
            rows = np.isin(ids, split["train_videos"])
            scores = _inner_scores_by_hand(x[rows], feats.labels[rows], feats.groups[rows], C_GRID)
            assert used == C_GRID[int(np.argmax(scores))]
            chosen.add(used)
    assert chosen != {1.0}  # the check above had something to find
    table = format_table(auto)
    assert "chosen per fold" in table
    assert ", ".join(f"{c:g}" for c in auto["levels"]["global"]["linear_C"]) in table


def test_probe_cli(tiny_root, tmp_path, capsys):
    out = tmp_path / "probe.json"
    args = ["probe", "--backbone", "random", "--data", str(tiny_root), "--size", "32", "--frames-per-video", "2"]
    assert main([*args, "--folds", "3", "--no-cache", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("local", "medium", "global", "linear", "k-NN"):
        assert name in printed
    res = json.loads(out.read_text())
    assert res["n_frames"] == 24 and res["folds"] == 3 and set(res["levels"]) == {"local", "medium", "global"}

    args[2] = str(tmp_path / "nope.pt")
    assert main([*args, "--no-cache"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hico: error:") and "nope.pt" in err[0]


def test_embed_cli_with_umap_and_cache(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "emb" / "e.npz"
    args = ["embed", "--backbone", "random", "--data", str(tiny_root), "--out", str(out), "--umap"]
    args += ["--size", "32", "--frames-per-video", "2"]
    assert main(args) == 0
    with np.load(out, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for key in ("level_local", "level_medium", "level_global", "labels", "video", "frame", "class_name", "video_id"):
        assert len(data[key]) == 24, key
    assert data["class_name"][0] == "covid" and data["video_id"][0] == "covid_v00"
    for rel in data["thumb"]:
        png = out.parent / rel
        assert png.is_file() and png.parent.name == "e_thumbs"
    from PIL import Image

    assert Image.open(out.parent / data["thumb"][0]).size == (64, 64)
    for level in ("local", "medium", "global"):
        assert data[f"umap_{level}"].shape == (24, 2) and np.isfinite(data[f"umap_{level}"]).all()
    assert len(list((tmp_path / "cache" / "umap").glob("*.npy"))) == 3

    import umap

    def refuse(*a, **k):
        raise AssertionError("UMAP recomputed instead of read from the cache")

    monkeypatch.setattr(umap, "UMAP", refuse)
    assert main(args) == 0
    with np.load(out, allow_pickle=False) as z:
        assert np.array_equal(z["umap_global"], data["umap_global"])
    assert "wrote" in capsys.readouterr().out


def test_probe_never_tests_a_video_whose_labels_pretraining_used(tiny_root, tmp_path, capsys):
    from conftest import fake_run

    ids = [f"{c}_v{i:02d}" for c in ("covid", "pneumonia", "regular") for i in range(4)]
    pretrained = set(ids[:9])
    run = fake_run(tmp_path / "run", tiny_root, {"covid_v01", "regular_v02"}, pretrained)
    out = tmp_path / "probe.json"
    args = ["probe", "--backbone", str(run), "--data", str(tiny_root), "--size", "32", "--frames-per-video", "2"]
    assert main([*args, "--folds", "3", "--no-cache", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    tested = [v for split in res["splits"] for v in split["test_videos"]]
    assert sorted(tested) == sorted(set(ids) - {"covid_v01", "regular_v02"})  # one video per patient here
    for split in res["splits"]:
        assert {"covid_v01", "regular_v02"} <= set(split["train_videos"])
    assert res["label_overlap"] == 2 and res["pretrained_on_test_videos"] == len(set(tested) & pretrained)
    assert sorted(res["kept_in_training"]) == ["covid_v01", "regular_v02"]
    assert "label_overlap 2 " in capsys.readouterr().out

    everything = fake_run(tmp_path / "all", tiny_root, ids[:10], ids)
    args[2] = str(everything / "backbone.pt")
    assert main([*args, "--folds", "3", "--no-cache"]) == 2  # 2 testable videos cannot fill 3 folds
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # (after progress bars)
    assert len(err) == 1 and err[0].startswith("hico: error:") and "no test video left" in err[0]
    assert "lower the number of folds" in err[0]


def test_extract_features_reports_its_progress_after_every_batch(tiny):
    from hico.eval.features import extract_features
    from hico.models import HiCoNet, ModelConfig

    seen = []
    feats = extract_features(
        HiCoNet(ModelConfig()), tiny, size=32, per_video=2, batch_size=5, on_batch=lambda d, t: seen.append((d, t))
    )
    assert seen == [(5, 24), (10, 24), (15, 24), (20, 24), (24, 24)] and len(feats) == 24  # 12 videos x 2 frames
