"""hico.eval.maps: the readouts and neighbours the app shows, on hand-made features."""

from __future__ import annotations

import numpy as np
import pytest

from hico.eval.features import Features
from hico.eval.maps import align_map, leave_one_video_out_knn, level_maps, nearest, silhouettes


def feats(levels: dict, labels, video) -> Features:
    n = len(labels)
    return Features(
        levels={k: np.asarray(v, np.float32) for k, v in levels.items()}, labels=np.asarray(labels),
        video=np.asarray(video), frame=np.zeros(n, np.int64), groups=np.asarray(video).astype(str),
        classes=["a", "b"], video_ids=[f"v{i}" for i in range(max(video) + 1)],
    )  # fmt: skip


def test_leave_one_video_out_never_lets_a_video_vote_for_itself():
    # Each video's two frames are identical to each other and far from everything else, but videos of one class
    # sit close together: with its own video excluded, every frame is still classified by its class mates.
    x = [[1, 0.1], [1, 0.1], [1, -0.1], [1, -0.1], [-1, 0.1], [-1, 0.1], [-1, -0.1], [-1, -0.1]]
    f = feats({"global": x}, labels=[0, 0, 0, 0, 1, 1, 1, 1], video=[0, 0, 1, 1, 2, 2, 3, 3])
    assert leave_one_video_out_knn(f, k=2) == {"global": 1.0}
    # Frames that only resemble their own video (and sit among the other class) are all wrong once it is left out.
    x = [[1, 0], [1, 0], [0, 1], [0, 1]]
    f = feats({"global": x}, labels=[0, 0, 1, 1], video=[0, 0, 1, 1])
    assert leave_one_video_out_knn(f, k=1) == {"global": 0.0}


def test_silhouette_of_perfect_and_mixed_clusters():
    x = [[1, 0], [1, 0.01], [0, 1], [0.01, 1]]
    assert silhouettes(feats({"l": x}, [0, 0, 1, 1], [0, 1, 2, 3]))["l"] == pytest.approx(1.0, abs=1e-3)
    assert silhouettes(feats({"l": x}, [0, 1, 0, 1], [0, 1, 2, 3]))["l"] < 0
    assert np.isnan(silhouettes(feats({"l": x}, [0, 0, 0, 0], [0, 1, 2, 3]))["l"])


def test_nearest_by_cosine_excludes_the_row_itself():
    x = np.array([[1, 0], [2, 0.1], [0, 1], [1, 1], [-1, 0]], np.float32)
    assert nearest(x, 0, n=3).tolist() == [1, 3, 2]
    assert nearest(x, 0, n=10).tolist() == [1, 3, 2, 4]


def test_level_maps_gives_every_level_a_map_and_caches_it_on_disk(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 12)
    video = np.repeat(np.arange(6), 4)
    centres = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0]])
    levels = {name: centres[labels] + rng.normal(size=(24, 4)) for name in ("local", "medium", "global")}
    maps = level_maps(feats(levels, labels, video), cache_dir=tmp_path)
    assert set(maps["umap"]) == set(maps["knn"]) == set(maps["silhouette"]) == set(levels)
    assert all(m.shape == (24, 2) and np.isfinite(m).all() for m in maps["umap"].values())
    assert len(list(tmp_path.glob("*.npy"))) == 3
    again = level_maps(feats(levels, labels, video), cache_dir=tmp_path)  # from the cache: identical coordinates
    assert all(np.array_equal(again["umap"][k], maps["umap"][k]) for k in levels)
    assert maps["knn"]["global"] > 0.9  # two well separated classes


def test_cosine_distances_by_hand():
    from sklearn.metrics.pairwise import cosine_distances  # what umap_2d hands umap-learn

    x = np.array([[1, 0], [0, 2], [3, 3], [-1, 0], [0, 0]], np.float32)
    d = cosine_distances(x.astype(np.float64))  # as umap_2d calls it
    s = 1 / np.sqrt(2)
    expected = [
        [0, 1, 1 - s, 2, 1],
        [1, 0, 1 - s, 1, 1],
        [1 - s, 1 - s, 0, 1 + s, 1],
        [2, 1, 1 + s, 0, 1],
        [1, 1, 1, 1, 0],  # a zero row: distance 1 from everything, 0 from itself
    ]
    np.testing.assert_allclose(d, expected, atol=1e-7)


def test_precomputed_distances_give_umap_the_graph_of_its_cosine_metric():
    # umap_2d hands umap-learn the cosine distance matrix (metric="precomputed") instead of the cosine metric:
    # the fuzzy neighbour graph the layout is optimised from must be the same.
    import umap
    from sklearn.metrics.pairwise import cosine_distances

    from hico.eval.embed import UMAP_DEFAULTS

    x = np.random.default_rng(0).normal(size=(120, 8)).astype(np.float32)
    params = {**UMAP_DEFAULTS, "n_epochs": 5}
    cosine = umap.UMAP(**params).fit(x).graph_
    precomputed = umap.UMAP(**{**params, "metric": "precomputed"}).fit(cosine_distances(x.astype(np.float64))).graph_
    assert (cosine != 0).sum() == (precomputed != 0).sum() > 120 * 10
    assert abs(cosine - precomputed).max() < 1e-5


def test_align_map_undoes_a_turn_a_mirror_a_scale_and_a_shift():
    reference = np.random.default_rng(0).normal(size=(30, 2))
    t = np.deg2rad(30)
    turn_and_mirror = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]]) @ np.diag([1.0, -1.0])
    moved = 3.0 * reference @ turn_and_mirror + np.array([5.0, -2.0])
    np.testing.assert_allclose(align_map(moved, reference), reference, atol=1e-5)
    # a different map keeps its shape: all its distances scale by one factor
    other = np.random.default_rng(1).normal(size=(30, 2))
    aligned = align_map(other, reference)

    def dist(x):
        return np.linalg.norm(x[:, None] - x[None], axis=-1)[np.triu_indices(30, 1)]

    ratio = dist(aligned) / dist(other)
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)
    assert np.linalg.norm(aligned - aligned.mean(0)) == pytest.approx(np.linalg.norm(reference - reference.mean(0)))


def test_features_key_changes_when_the_checkpoint_does(tmp_path):
    import os

    from hico.eval.maps import features_key

    ckpt = tmp_path / "backbone.pt"
    ckpt.write_text("a")
    os.utime(ckpt, (1_000_000, 1_000_000))
    before = features_key(str(ckpt), 8)
    assert features_key(str(ckpt), 8) == before and features_key(str(ckpt), 4) != before
    os.utime(ckpt, (2_000_000, 2_000_000))  # rewritten: a new modification time
    assert features_key(str(ckpt), 8) != before
    assert features_key("random", 8) == features_key("random", 8)


# ------------------------------------------------------------------------------------- signs of learning


def test_held_out_accuracy_fits_on_the_other_videos_only():
    from hico.eval.learned import held_out_accuracy

    # Six videos of two frames, two classes far apart; videos 4 and 5 (one per class) are held out.
    x = [[1, 0.1], [1, 0.2], [1, -0.1], [1, -0.2], [-1, 0.1], [-1, 0.2], [-1, -0.1], [-1, -0.2], [1, 0], [1, 0.1],
         [-1, 0], [-1, 0.1]]  # fmt: skip
    labels = [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1]
    video = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    f = feats({"global": x}, labels, video)
    f.meta["holdout"] = [4, 5]
    got = held_out_accuracy(f, k=3)["global"]
    assert (got["knn"], got["linear"]) == (1.0, 1.0)
    # Wrong labels on the held-out videos change the score, never the fit: every prediction is now wrong.
    f.labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])
    got = held_out_accuracy(f, k=3)["global"]
    assert (got["knn"], got["linear"]) == (0.0, 0.0)
    f.meta["holdout"] = []
    with pytest.raises(ValueError, match="no held-out videos"):
        held_out_accuracy(f)


def test_pretrain_ends_by_printing_the_four_signs(tmp_path, monkeypatch, capsys):
    from conftest import DEMO_TINY

    from hico.cli import main
    from hico.eval.learned import signs_of_learning

    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    argv = ["pretrain", "--preset", "demo", "--out", str(tmp_path / "run"), "--no-progress"]
    for item in DEMO_TINY:
        argv += ["--set", item]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    signs = signs_of_learning(tmp_path / "run")
    assert signs["chance"] == pytest.approx(3.5 * np.log(2 * 8 - 1))  # 0.5 x 3 peer + 0.5 x 2 x 2 cross, batch 8
    assert signs["epochs"] == (0, 2) and signs["feature_epochs"] == (0, 2)
    for when in ("before", "after"):
        assert set(signs["held_out"][when]) == {"local", "medium", "global"}
    lines = printed.split("did it learn?\n", 1)[1].splitlines()
    assert [line.split(":")[0].strip() for line in lines] == [
        "loss (con)",
        "held-out pairs, cosine similarity",
        "held-out videos, k-NN (epoch 0, random init -> epoch 2)",
        "held-out videos, linear probe (epoch 0, random init -> epoch 2)",
    ]
    assert f"chance level {signs['chance']:.2f}" in lines[0]
