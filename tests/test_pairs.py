"""Pair samplers: frame choice, seeding across workers and epochs, one-frame videos, SPG mixing."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import write_image

from hico.data import scan
from hico.data.pairs import (
    HiCoPairs,
    IVPPPairs,
    PairDataset,
    UCLFrames,
    USCLPairs,
    intra_video_negatives,
    make_sampler,
)


@pytest.fixture
def videos(tmp_path):
    """4 frame-folder videos of 8 frames; pixel value = 10 * video + frame, so a frame names itself."""
    for v in range(4):
        for f in range(8):
            write_image(tmp_path / f"c{v % 2}" / f"v{v}" / f"{f}.png", np.full((8, 8), 10 * v + f, np.uint8))
    write_image(tmp_path / "c9" / "still.png", np.full((8, 8), 200, np.uint8))
    return scan(tmp_path, size=8).load_all(progress=False)


def decode(frames: torch.Tensor) -> list[int]:
    return [int(f[0, 0]) for f in frames]


def test_hico_pairs_are_two_distinct_frames_of_the_same_video(videos):
    with pytest.warns(UserWarning, match="1 of 5 videos have a single frame"):
        ds = PairDataset(videos, HiCoPairs())
    for i in range(len(ds)):
        a, b = decode(ds[i]["frames"])
        if ds.videos.n_frames(i) == 1:
            assert a == b == 200
        else:
            assert a != b and a // 10 == b // 10
            assert [x % 10 for x in (a, b)] == ds[i]["index"].tolist()  # the frame numbers the sample reports


def test_single_frame_warning_is_counted_once_per_dataset(videos):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = PairDataset(videos, HiCoPairs())
        for i in range(len(ds)):
            ds[i]
        ds.set_epoch(1)
        for i in range(len(ds)):
            ds[i]
    assert len(caught) == 1 and ds.single_frame_videos == 1


def test_samples_differ_across_epochs_and_repeat_within_one(videos):
    ds = PairDataset(videos.subset(range(4)), HiCoPairs(), samples_per_video=16)
    e0 = [tuple(decode(ds[i]["frames"])) for i in range(len(ds))]
    assert e0 == [tuple(decode(ds[i]["frames"])) for i in range(len(ds))]  # reproducible (resume)
    ds.set_epoch(1)
    e1 = [tuple(decode(ds[i]["frames"])) for i in range(len(ds))]
    assert e0 != e1


def _loader_draws(ds, workers: int) -> list[float]:
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers, shuffle=False)
    return torch.cat([b["weight"] for b in loader]).tolist()


def test_workers_do_not_repeat_randomness_and_match_a_single_process(videos):
    ds = PairDataset(videos.subset(range(4)), USCLPairs(), samples_per_video=8)
    w0 = _loader_draws(ds, 0)
    w2 = _loader_draws(ds, 2)
    assert w0 == w2  # the draw belongs to the sample, not to the worker
    assert len(set(w2)) == len(w2)  # the authors' bug: workers repeating the same Beta draws


def test_persistent_workers_draw_each_epochs_own_pairs(videos):
    """Workers forked once (persistent_workers) never see set_epoch in the main process: the epoch comes with
    every index (EpochBatchSampler(with_epoch=True)), so they draw what one process draws, epoch by epoch."""
    from hico.train.sampler import EpochBatchSampler

    ds = PairDataset(videos.subset(range(4)), USCLPairs(), samples_per_video=8)
    batches = EpochBatchSampler(len(ds), 4, seed=3, with_epoch=True)
    loader = torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=2, persistent_workers=True)
    reference = EpochBatchSampler(len(ds), 4, seed=3)
    for epoch in range(3):
        batches.set_epoch(epoch)
        reference.set_epoch(epoch)
        ds.set_epoch(epoch)  # reaches this process's copy only, which the workers do not use
        got = torch.cat([b["weight"] for b in loader]).tolist()
        expected = [ds[i]["weight"].item() for batch in reference for i in batch]
        assert got == pytest.approx(expected, abs=0), epoch


def test_uscl_draws_three_distinct_frames_and_beta_weights(videos):
    ds = PairDataset(videos.subset(range(4)), USCLPairs(), samples_per_video=200)
    weights = []
    for i in range(len(ds)):
        item = ds[i]
        f = decode(item["frames"])
        assert len(set(f)) == 3 and len({x // 10 for x in f}) == 1
        weights.append(float(item["weight"]))
    w = np.array(weights)
    # Beta(0.5, 0.5): mean 1/2, variance 1/8, U-shaped (more mass near the ends than the middle)
    assert abs(w.mean() - 0.5) < 0.05 and abs(w.var() - 0.125) < 0.02
    assert ((w < 0.1) | (w > 0.9)).mean() > ((w > 0.4) & (w < 0.6)).mean()


def test_uscl_combine_mixes_with_shared_middle_frame():
    views = torch.stack([torch.full((2, 1, 2, 2), v) for v in (1.0, 2.0, 4.0)], 1)  # (B=2, 3, 1, 2, 2)
    w = torch.tensor([0.25, 1.0])
    v1, v2 = USCLPairs().combine(views, w)
    assert torch.allclose(v1[:, 0, 0, 0], torch.tensor([0.25 * 1 + 0.75 * 2, 1.0]))
    assert torch.allclose(v2[:, 0, 0, 0], torch.tensor([0.25 * 4 + 0.75 * 2, 4.0]))


def test_labels_are_carried_and_default_to_unlabelled(videos):
    ds = PairDataset(videos, HiCoPairs(), labels=np.array([0, 1, -1, 2, 1]))
    assert [int(ds[i]["label"]) for i in range(5)] == [0, 1, -1, 2, 1]
    assert int(PairDataset(videos, HiCoPairs())[0]["label"]) == -1
    with pytest.raises(ValueError, match="labels has 2 entries for 5 videos"):
        PairDataset(videos, HiCoPairs(), labels=np.array([0, 1]))


def test_intra_video_negatives_lie_in_the_window():
    rng = np.random.default_rng(0)
    for anchor in (0, 50, 99):
        neg = intra_video_negatives(100, anchor, 3, rng)
        d = np.abs(neg - anchor)
        assert len(neg) == 3 and np.all((d >= 20) & (d <= 40))
    assert np.all(intra_video_negatives(2, 0, 3, rng) == 1)  # too short: the farthest frame


def test_unknown_sampler_is_named():
    with pytest.raises(ValueError, match="unknown pair sampler 'simsiam'"):
        make_sampler("simsiam")


@pytest.mark.parametrize("d_max", [1, 3, 30])
def test_ivpp_pairs_are_at_most_d_apart_and_weighted_by_distance(d_max):
    sampler, n = IVPPPairs(max_distance=d_max), 12
    seen = set()
    for i in range(2000):
        idx, w = sampler.sample(n, np.random.default_rng([0, i]))
        d = abs(int(idx[1]) - int(idx[0]))
        assert 0 <= idx.min() and idx.max() < n
        assert 1 <= d <= d_max  # never the same frame, never farther than D
        assert w == pytest.approx((d_max - d + 1) / (d_max + 1))  # 1 - 1/(D+1) for neighbours ... 1/(D+1) at D
        seen.add(d)
    assert seen == set(range(1, min(d_max, n - 1) + 1))  # every allowed distance occurs


def test_ivpp_one_frame_video_and_bad_distance():
    idx, w = IVPPPairs(max_distance=5).sample(1, np.random.default_rng(0))
    assert idx.tolist() == [0, 0] and w == 1.0
    with pytest.raises(ValueError, match="max_distance"):
        IVPPPairs(max_distance=0)
    assert make_sampler("ivpp", max_distance=7).max_distance == 7


def test_ivpp_dataset_items_carry_the_loss_weight(videos):
    ds = PairDataset(videos.subset([0, 1, 2, 3]), IVPPPairs(max_distance=2), seed=0, samples_per_video=8)
    for i in range(len(ds)):
        item = ds[i]
        f0, f1 = decode(item["frames"])
        assert f0 // 10 == f1 // 10 and 1 <= abs(f0 - f1) <= 2  # same video, 1 or 2 frames apart
        assert float(item["weight"]) == pytest.approx((2 - abs(f0 - f1) + 1) / 3)


def test_ucl_positive_within_3_frames_and_negatives_in_the_window_outside_it():
    sampler, n = UCLFrames(), 100
    for i in range(500):
        idx, w = sampler.sample(n, np.random.default_rng([1, i]))
        anchor, positive, negs = int(idx[0]), int(idx[1]), idx[2:]
        assert len(idx) == sampler.frames_per_sample == 5 and w == 1.0
        assert 1 <= abs(positive - anchor) <= 3
        d = np.abs(negs - anchor)
        assert len(negs) == 3 and np.all((d >= 20) & (d <= 40))  # 0.2 N .. 0.4 N


def test_ucl_window_shrinks_after_the_configured_epoch_but_never_into_the_positives():
    sampler = UCLFrames(shrink_epoch=30, shrink_epochs=30)
    assert sampler.at_epoch(0).current_window() == (0.2, 0.4)
    assert sampler.at_epoch(29).current_window() == (0.2, 0.4)
    lo, hi = sampler.at_epoch(45).current_window()  # halfway: 1/2 (1 + cos(pi / 2)) = 1/2
    assert (lo, hi) == pytest.approx((0.1, 0.2))
    assert sampler.at_epoch(60).current_window() == pytest.approx((0.0, 0.0))
    late = sampler.at_epoch(80)
    for i in range(200):  # a collapsed window: the nearest frames that are not positives, 4 frames away
        idx, _ = late.sample(100, np.random.default_rng([2, i]))
        assert np.all(np.abs(idx[2:] - idx[0]) == 4)
    assert late.sample(100, np.random.default_rng(0))[0].shape == (5,)


def test_pair_dataset_gives_the_sampler_its_epoch(videos):
    ds = PairDataset(videos.subset([0, 1, 2, 3]), UCLFrames(negatives=2, positive_window=1), seed=0)
    ds.set_epoch(45)
    assert ds.sampler.current_window() == pytest.approx((0.1, 0.2))
    item = ds[0]
    f = decode(item["frames"])
    assert len(f) == 4 and abs(f[1] - f[0]) == 1 and all(abs(x - f[0]) >= 2 for x in f[2:])


def test_pair_images_draws_each_video_its_own_pair(videos):
    from hico.demo import pair_images

    pairs = [pair_images(videos, v, "uscl", size=8, seed=0) for v in range(4)]
    for v, p in enumerate(pairs):  # the frames shown are the frames of that video, at the indices shown
        number = int(videos.videos[v].video_id.rsplit("/v", 1)[1])
        assert [int(f[0, 0]) for f in p["frames"]] == [10 * number + i for i in p["indices"]]
    assert len({tuple(p["indices"]) + (p["weight"],) for p in pairs}) == 4  # not one draw repeated for all
