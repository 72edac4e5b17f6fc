"""Fine-tuning: metrics against hand-computed values, trainable modes, and the ``hico finetune`` command end to end."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import fake_run

from hico.cli import main
from hico.dist import resolve_device
from hico.eval.features import frame_indices
from hico.eval.finetune import (
    PROTOCOLS,
    EvalSet,
    FinetuneConfig,
    FinetuneNet,
    accuracy_interval,
    make_augment,
    train_epoch,
)
from hico.eval.metrics import (
    bootstrap_ci,
    classification_report,
    confusion,
    paired_difference,
    per_video_correct,
    video_vote,
)
from hico.io import write_json
from hico.models.backbone import ResNetTrunk

CLASSES = ["covid", "pneumonia", "regular"]

# ------------------------------------------------------------------------------------------------- metrics

# true 0: predicted 0, 0, 0, 1; true 1: 0, 1, 2; true 2: 1, 1, 2, 2, 2
Y_TRUE = [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2]
Y_PRED = [0, 0, 0, 1, 0, 1, 2, 1, 1, 2, 2, 2]
CM = [
    [3, 1, 0],
    [1, 1, 1],
    [0, 2, 3],
]


def test_confusion_literal():
    cm = confusion(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)
    np.testing.assert_array_equal(confusion([], [], 2), [[0, 0], [0, 0]])


def test_confusion_rejects_bad_input():
    with pytest.raises(ValueError, match="length"):
        confusion([0, 1], [0], 2)
    with pytest.raises(ValueError, match="outside"):
        confusion([0, 3], [0, 1], 3)


def test_report_hand_computed():
    rep = classification_report(np.array(CM), CLASSES)
    assert rep["total"] == 12 and rep["correct"] == 7
    assert rep["accuracy"] == pytest.approx(7 / 12)
    # precision = diagonal / column sum (columns: 4, 4, 4); recall = diagonal / row sum (rows: 4, 3, 5)
    expected = {
        "covid": (3 / 4, 3 / 4, 0.75, 4),  # F1 = 2 * .75 * .75 / 1.5
        "pneumonia": (1 / 4, 1 / 3, 2 / 7, 3),  # F1 = 2 * (1/12) / (7/12)
        "regular": (3 / 4, 3 / 5, 2 / 3, 5),  # F1 = 2 * (9/20) / (27/20)
    }
    for name, (p, r, f1, support) in expected.items():
        row = rep["per_class"][name]
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
    assert rep["macro_f1"] == pytest.approx((0.75 + 2 / 7 + 2 / 3) / 3)
    json.dumps(rep)  # plain Python types


def test_report_zero_division_is_zero_and_silent():
    cm = np.array([[2, 0, 0], [1, 0, 0], [0, 0, 0]])  # class 1 never predicted, class 2 absent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = classification_report(cm, CLASSES)
        empty = classification_report(np.zeros((3, 3), np.int64), CLASSES)
    assert rep["per_class"]["covid"] == {"precision": 2 / 3, "recall": 1.0, "f1": pytest.approx(0.8), "support": 2}
    assert rep["per_class"]["pneumonia"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert rep["per_class"]["regular"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert rep["macro_f1"] == pytest.approx(0.8 / 3)
    assert rep["accuracy"] == pytest.approx(2 / 3)
    assert empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0


def test_video_vote_majority_and_ties():
    pred = [0, 1, 1, 2, 2, 0, 0, 1]
    ids = ["a", "a", "a", "b", "b", "b", "c", "c"]
    labels = [1, 1, 1, 2, 2, 2, 0, 0]
    vt, vp = video_vote(pred, ids, labels)
    np.testing.assert_array_equal(vt, [1, 2, 0])
    np.testing.assert_array_equal(vp, [1, 2, 0])  # c: one vote each for 0 and 1 -> the lowest index
    # Soft vote: video c leans to class 1 by mean probability.
    probs = np.full((8, 3), 1 / 3)
    probs[6] = [0.5, 0.4, 0.1]
    probs[7] = [0.1, 0.8, 0.1]
    _, vp = video_vote(pred, ids, labels, probs=probs)
    assert vp[2] == 1
    with pytest.raises(ValueError, match="different true labels"):
        video_vote([0, 0], ["a", "a"], [0, 1])


def test_bootstrap_contains_estimate_and_narrows():
    rng = np.random.default_rng(1)
    n_videos, per = 30, 10
    video_correct = rng.random(n_videos) < 0.7  # each video all right or all wrong: perfectly correlated frames
    y_true = np.zeros(n_videos * per, np.int64)
    y_pred = np.repeat(np.where(video_correct, 0, 1), per)
    groups = np.repeat(np.arange(n_videos), per)
    acc = (y_true == y_pred).mean()
    lo, hi = bootstrap_ci(y_true, y_pred, groups=groups)
    assert lo <= acc <= hi
    # Resampling videos is much wider than resampling (correlated) frames.
    flo, fhi = bootstrap_ci(y_true, y_pred)
    assert flo <= acc <= fhi and (hi - lo) > 2 * (fhi - flo)
    # Ten times the videos (same accuracy): narrower.
    big_groups = np.concatenate([groups + k * n_videos for k in range(10)])
    blo, bhi = bootstrap_ci(np.tile(y_true, 10), np.tile(y_pred, 10), groups=big_groups)
    assert blo <= acc <= bhi and (bhi - blo) < 0.5 * (hi - lo)
    # Seeded: the same interval twice; a single group has no spread.
    assert bootstrap_ci(y_true, y_pred, groups=groups) == (lo, hi)
    assert bootstrap_ci(y_true, y_pred, groups=np.zeros(len(y_true))) == pytest.approx((acc, acc))


def test_bootstrap_frames_matches_index_resampling():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 400)
    y_pred = np.where(rng.random(400) < 0.8, y_true, (y_true + 1) % 3)
    lo, hi = bootstrap_ci(y_true, y_pred, n=4000)
    correct = (y_true == y_pred).astype(float)
    naive = correct[rng.integers(0, 400, (4000, 400))].mean(1)
    assert lo == pytest.approx(np.quantile(naive, 0.025), abs=0.01)
    assert hi == pytest.approx(np.quantile(naive, 0.975), abs=0.01)
    with pytest.raises(ValueError):
        bootstrap_ci([], [])


def test_interval_resamples_patients_not_videos():
    # Patient A: videos a1 (one frame, right) and a2 (one frame, wrong); patient B: video b (one frame, right).
    y_true, y_pred = np.array([0, 0, 0]), np.array([0, 1, 0])
    videos = np.array(["a1", "a2", "b"])
    group_of = {"a1": "A", "a2": "A", "b": "B"}
    # a1 and a2 always drawn together: A drawn k times, B 2 - k times, accuracy (k + 2 - k) / (2k + 2 - k) =
    # 2 / (k + 2): 1 (k = 0, prob 1/4), 2/3 (k = 1, 1/2), 1/2 (k = 2, 1/4). Both tails hold 1/4 > 2.5 %.
    assert accuracy_interval(y_true, y_pred, videos, group_of, n=4000, seed=0) == pytest.approx((0.5, 1.0))
    # Resampling videos (a1, a2 apart) reaches accuracy 0 when neither a1 nor b is drawn: (1/3)^3 = 1/27 > 2.5 %.
    assert bootstrap_ci(y_true, y_pred, n=4000, seed=0, groups=videos) == pytest.approx((0.0, 1.0))


def test_batches_cover_every_sample_once_and_never_leave_one_alone():
    from hico.eval.finetune import _batches

    for n, batch_size, sizes in ((9, 4, [4, 5]), (5, 4, [5]), (8, 4, [4, 4]), (10, 4, [4, 4, 2]), (1, 4, [1])):
        chunks = _batches(np.arange(n), batch_size)
        assert [len(c) for c in chunks] == sizes, n
        assert np.concatenate(chunks).tolist() == list(range(n))


def test_per_video_correct_counts_each_videos_frames():
    tally = per_video_correct([0, 1, 2, 0, 1], [0, 1, 0, 1, 1], ["a", "a", "b", "b", "c"])
    assert tally == {"a": [2, 2], "b": [0, 2], "c": [1, 1]}
    with pytest.raises(ValueError, match="differ in length"):
        per_video_correct([0], [0, 1], ["a"])


def test_paired_difference_is_the_accuracy_gap_with_an_interval_over_shared_patients():
    # a: 3/4 + 1/4 right, b: 2/4 + 0/4: 4/8 - 2/8 = 0.25 on all videos.
    a, b = {"v1": [3, 4], "v2": [1, 4]}, {"v1": [2, 4], "v2": [0, 4]}
    d, low, high = paired_difference(a, b, {"v1": "P", "v2": "Q"}, n=500)
    assert d == pytest.approx(0.25)
    # In every patient a has exactly one more right frame of 4: every replicate's gap is 1/4, a point interval.
    assert (low, high) == pytest.approx((0.25, 0.25))
    assert paired_difference(a, a, {"v1": "P", "v2": "Q"}) == pytest.approx((0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="different videos"):
        paired_difference(a, {"v1": [1, 4]}, {"v1": "P", "v2": "Q"})
    with pytest.raises(ValueError, match="no patient group"):
        paired_difference(a, b, {"v1": "P"})


def test_pairing_separates_what_two_separate_intervals_cannot():
    # 40 patients, one 10-frame video each, some easy, some hard for both backbones; a gets one frame more right
    # in 3 of 4 patients. Each backbone's own interval is wide (patients differ a lot); the gap is not.
    rng = np.random.default_rng(0)
    easy = rng.integers(0, 10, 40)
    b = {f"v{i}": [int(easy[i]), 10] for i in range(40)}
    a = {f"v{i}": [min(10, int(easy[i]) + (i % 4 != 0)), 10] for i in range(40)}
    group_of = {f"v{i}": f"p{i}" for i in range(40)}
    d, low, high = paired_difference(a, b, group_of, n=2000)
    assert 0 < low <= d <= high

    def own_interval(test):
        y_pred = np.concatenate([[0] * r + [1] * (f - r) for r, f in test.values()])
        vids = np.repeat(list(test), [f for _, f in test.values()])
        return bootstrap_ci(np.zeros(len(y_pred)), y_pred, n=2000, groups=vids)

    assert own_interval(a)[0] < own_interval(b)[1]  # the separate intervals overlap


def test_paired_difference_matches_resampling_patients_by_hand():
    rng = np.random.default_rng(3)
    videos = [f"v{i}" for i in range(30)]
    group_of = {v: f"p{i // 2}" for i, v in enumerate(videos)}  # two videos per patient
    frames = rng.integers(2, 9, 30)
    a = {v: [int(rng.integers(0, f + 1)), int(f)] for v, f in zip(videos, frames, strict=True)}
    b = {v: [int(rng.integers(0, f + 1)), int(f)] for v, f in zip(videos, frames, strict=True)}
    patients = sorted(set(group_of.values()))
    diffs = []
    for _ in range(4000):  # draw 15 patients with replacement, score both tests on the same draw
        drawn = rng.choice(patients, size=len(patients))
        ra = fa = rb = fb = 0
        for p in drawn:
            for v in videos:
                if group_of[v] == p:
                    ra, fa, rb, fb = ra + a[v][0], fa + a[v][1], rb + b[v][0], fb + b[v][1]
        diffs.append(ra / fa - rb / fb)
    d, low, high = paired_difference(a, b, group_of, n=4000, seed=1)
    total = lambda t, i: sum(t[v][i] for v in videos)  # noqa: E731
    assert d == pytest.approx(total(a, 0) / total(a, 1) - total(b, 0) / total(b, 1))
    assert low == pytest.approx(np.quantile(diffs, 0.025), abs=0.02)
    assert high == pytest.approx(np.quantile(diffs, 0.975), abs=0.02)


# -------------------------------------------------------------------------------------------- model / modes

EXPECTED_TRAINABLE = {
    "head": ("head.",),
    "last_block": ("head.", "trunk.layer4.1."),
    "layer4": ("head.", "trunk.layer4."),
    "all": ("head.", "trunk."),
}


@pytest.mark.parametrize("mode", list(EXPECTED_TRAINABLE))
def test_trainable_modes(mode):
    torch.manual_seed(0)
    model = FinetuneNet(ResNetTrunk(), 3, mode)
    expected = {n for n, _ in model.named_parameters() if n.startswith(EXPECTED_TRAINABLE[mode])}
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected
    frozen = model.frozen_modules()
    frozen_names = {n for n, m in model.named_modules() if any(m is f for f in frozen)}
    before_p = {n: p.detach().clone() for n, p in model.named_parameters()}
    before_b = {n: b.clone() for n, b in model.named_buffers()}

    frames = torch.randint(0, 256, (12, 40, 40), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2] * 4)
    opt = torch.optim.Adam(model.trainable_parameters(), lr=0.01)
    loss = train_epoch(model, frames, labels, make_augment(32), opt, None, 6, np.random.default_rng(0))
    assert np.isfinite(loss)
    assert all(not m.training for m in frozen)  # frozen parts stay in eval mode in training
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before_p[n])}
    assert changed == expected
    for name, buf in model.named_buffers():  # BN statistics: frozen ones untouched, trained ones updated
        owner = name.rsplit(".", 1)[0]
        is_frozen = owner in frozen_names or any(owner.startswith(f + ".") for f in frozen_names)
        assert torch.equal(buf, before_b[name]) == is_frozen, name


def test_eval_cache_matches_full_forward():
    torch.manual_seed(0)
    model = FinetuneNet(ResNetTrunk(), 3, "last_block")
    aug = make_augment(32)
    frames = torch.randint(0, 256, (5, 40, 40), dtype=torch.uint8)
    cached = EvalSet(frames, np.zeros(5), np.arange(5))
    plain = EvalSet(frames, np.zeros(5), np.arange(5))
    plain._cacheable = False
    a1, a2 = cached.logits(model, aug), cached.logits(model, aug)
    b = plain.logits(model, aug)
    assert cached._features is not None and plain._features is None
    torch.testing.assert_close(a1, b)
    torch.testing.assert_close(a2, b)


def test_frame_indices():
    np.testing.assert_array_equal(frame_indices(16, 16), np.arange(16))
    np.testing.assert_array_equal(frame_indices(16, 8), [1, 3, 5, 7, 9, 11, 13, 15])
    np.testing.assert_array_equal(frame_indices(5, None), np.arange(5))
    np.testing.assert_array_equal(frame_indices(3, 8), np.arange(3))
    np.testing.assert_array_equal(frame_indices(10, 1), [5])
    for n in range(1, 40):
        for c in range(1, n + 1):
            idx = frame_indices(n, c)
            assert len(np.unique(idx)) == c and idx.min() >= 0 and idx.max() < n


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"epochs": 0}, "epochs"),
        ({"folds": 1}, "folds"),
        ({"batch_size": 1}, "batch_size"),
        ({"trainable": "fc"}, "trainable"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"lr": 0.0}, "lr"),
        ({"frames_per_video": 0}, "frames_per_video"),
        ({"device": "gpu0"}, "device"),
        ({"classes": ["covid"]}, "classes"),
        ({"size": 16}, "size"),
    ],
)
def test_config_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"FinetuneConfig.{field} ") as err:
        FinetuneConfig(**kwargs)
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_cuda_absent_is_a_clear_error():
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda")


def test_write_json_atomic(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


# ---------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from hico.data.synth import write_dataset

    return write_dataset(tmp_path_factory.mktemp("ft") / "ds", 6, 4, 64, progress=False)


def test_cli_end_to_end(tiny, tmp_path, capsys, monkeypatch):
    from hico.data import scan
    from hico.eval import finetune as ft

    units = []  # the resampling unit of each test frame, for each interval computed

    def spy(*args, groups=None, **kwargs):
        units.append(np.asarray(groups))
        return bootstrap_ci(*args, groups=groups, **kwargs)

    monkeypatch.setattr(ft, "bootstrap_ci", spy)
    out = tmp_path / "run"
    argv = ["finetune", "--backbone", "random", "--data", str(tiny), "--folds", "2", "--epochs", "2"]
    argv += ["--size", "32", "--batch-size", "8", "--out", str(out), "--no-cache", "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "optimistic" in printed and "honest" in printed and "accuracy [95% CI]" in printed
    results = json.loads((out / "results.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == ["progress.json", "results.json"]  # no temporary file left

    ds = scan(tiny, size=16)
    group = {v.video_id: v.group for v in ds.videos}
    n_frames = 18 * 4
    assert results["classes"] == CLASSES and results["config"]["epochs"] == 2
    assert set(results["summary"]) == set(PROTOCOLS)
    assert sum(f["n_test_frames"] for f in results["folds"]) == n_frames

    tested = []
    for fold in results["folds"]:
        train, val, test = (set(fold[k]) for k in ("train_videos", "val_videos", "test_videos"))
        assert train and val and test
        assert not (test & (train | val)) and not (train & val)
        groups_of = lambda vids: {group[v] for v in vids}  # noqa: E731
        assert not (groups_of(test) & groups_of(train | val)) and not (groups_of(train) & groups_of(val))
        assert fold["n_train_frames"] == 4 * len(train)
        tested += fold["test_videos"]
        hist = [h["test_accuracy"] for h in fold["history"]]
        assert len(hist) == 2
        prot = fold["protocols"]
        assert prot["honest_final"]["epoch"] == 2 and prot["honest_final"]["accuracy"] == pytest.approx(hist[-1])
        assert prot["optimistic_best_test"]["accuracy"] == pytest.approx(max(hist))
        assert prot["optimistic_best_test"]["accuracy"] >= prot["honest_final"]["accuracy"]
        for p in PROTOCOLS:
            assert np.sum(prot[p]["confusion"]) == fold["n_test_frames"]
    assert sorted(tested) == sorted(group)  # every video tested exactly once

    s = results["summary"]
    for p in PROTOCOLS:
        assert np.sum(s[p]["confusion"]) == n_frames
        assert s[p]["accuracy_ci"][0] <= s[p]["accuracy"] <= s[p]["accuracy_ci"][1]
        assert set(s[p]["per_class"]) == set(CLASSES) and 0 <= s[p]["video_accuracy"] <= 1
    assert s["optimistic_best_test"]["accuracy"] >= s["honest_final"]["accuracy"]

    # The interval resamples patients: 9 units (2 videos each) of 8 test frames, not 18 videos of 4 frames.
    assert all(s[p]["bootstrap_unit"] == "patient group" for p in PROTOCOLS) and len(units) == len(PROTOCOLS)
    for u in units:
        names, counts = np.unique(u, return_counts=True)
        assert set(names) == set(group.values()) and len(names) == 9 and set(counts) == {8}
    assert "CI: bootstrap over test patient groups" in printed


def test_cli_missing_data_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope"
    argv = ["finetune", "--backbone", "random", "--data", str(missing), "--out", str(tmp_path / "o"), "--no-cache"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hico: error:") and str(missing) in err and len(err.splitlines()) == 1


def test_cli_bad_value_is_one_line_error(tiny, tmp_path, capsys):
    argv = ["finetune", "--backbone", "random", "--data", str(tiny), "--out", str(tmp_path / "o"), "--epochs", "0"]
    assert main(argv + ["--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hico: error:") and "epochs" in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------------------ label leakage from pretraining


def patients_of_three(videos):
    """The videos regrouped so that patient p has the p-th video of every class (one of each class)."""
    import dataclasses

    from hico.data.dataset import VideoDataset

    regrouped = [dataclasses.replace(v, group=f"p{v.video_id[-2:]}") for v in videos.videos]
    return VideoDataset(videos.root, regrouped, videos.cache, [])


FT_TINY = dict(folds=2, epochs=1, batch_size=8, size=32, frames_per_video=2, test_frames_per_video=2, bootstrap=20)
FT_TINY.update(trainable="head", device="cpu")


@pytest.fixture(scope="module")
def tiny8(tmp_path_factory):
    """3 classes x 8 videos x 4 frames at 64 px, loaded, in 8 patients of one video of each class."""
    from hico.data import scan
    from hico.data.synth import write_dataset

    root = write_dataset(tmp_path_factory.mktemp("leak") / "ds", 8, 4, 64, progress=False)
    return patients_of_three(scan(root, size=64, cache_dir=None).load_all(progress=False))


def test_the_run_behind_a_backbone_name_and_what_it_saw(tiny8, tmp_path):
    from hico.eval.leakage import guard
    from hico.train.labelled import find_run_dir

    ids = [v.video_id for v in tiny8.videos]
    run = fake_run(tmp_path / "run", tiny8.root, {"covid_v01", "regular_v05"}, ids[:16])
    loose = tmp_path / "loose.pt"
    loose.write_bytes((run / "backbone.pt").read_bytes())
    for spec in (run, run / "backbone.pt", run / "checkpoints" / "epoch_0001.pt"):
        assert find_run_dir(spec) == run.resolve()
    assert find_run_dir(loose) is None and find_run_dir("random") is None

    two = [v.video_id for v in tiny8.with_classes(["covid", "pneumonia"]).videos]  # --classes covid pneumonia
    seen = guard(run, tiny8.root, two)
    assert seen.labelled.sum() == 1 and seen.pretrained.sum() == 16  # regular_v05 is not evaluated
    other = fake_run(tmp_path / "other", tmp_path / "elsewhere", {"covid_v01"}, ids)  # another dataset
    assert not guard(other, tiny8.root, ids).keep.any() and not guard(other, tiny8.root, ids).pretrained.any()
    report = guard(loose, tiny8.root, ids).report([(np.arange(12), np.arange(12, 24))], ids)
    assert report["label_overlap"] is None and "not inside a pretraining run" in report["pretraining"]["source"]
    assert guard("random", tiny8.root, ids).report([], ids)["label_overlap"] == 0


def test_finetune_never_tests_a_video_whose_labels_pretraining_used(tiny8, tmp_path):
    from hico.eval.finetune import finetune, format_results

    ids = [v.video_id for v in tiny8.videos]
    group = {v.video_id: v.group for v in tiny8.videos}
    labelled = {"covid_v01", "regular_v05"}  # patients p01 and p05: 6 videos never tested
    pretrained = set(ids[:16])
    run = fake_run(tmp_path / "run", tiny8.root, labelled, pretrained)
    res = finetune(str(run / "checkpoints" / "epoch_0001.pt"), tiny8, FinetuneConfig(**FT_TINY), progress=False)
    tested = [v for fold in res["folds"] for v in fold["test_videos"]]
    scored = tested + [v for fold in res["folds"] for v in fold["val_videos"]]
    assert not {group[v] for v in scored} & {"p01", "p05"}
    assert sorted(res["kept_in_training"]) == sorted(v for v in ids if group[v] in ("p01", "p05"))
    assert sorted(tested + res["kept_in_training"]) == sorted(ids)  # every other video tested once
    for fold in res["folds"]:  # the kept videos are trained on in every fold
        assert set(res["kept_in_training"]) <= set(fold["train_videos"])
    assert res["label_overlap"] == 2
    assert res["pretrained_on_test_videos"] == len(set(tested) & pretrained)
    table = format_results(res)
    assert "label_overlap 2" in table and f"pretrained_on_test_videos {res['pretrained_on_test_videos']}" in table


def test_finetune_a_fold_without_test_videos_is_a_clear_error(tiny8, tmp_path):
    from hico.eval.finetune import finetune

    run = fake_run(tmp_path / "run", tiny8.root, [v.video_id for v in tiny8.videos][::3], [])
    with pytest.raises(ValueError, match="no test video left.*lower the number of folds"):
        finetune(str(run), tiny8, FinetuneConfig(**FT_TINY), progress=False)


def test_permuting_test_labels_changes_no_honest_epoch(tiny8, tmp_path):
    """The honest protocols never depend on a test video's label, not even through the pretraining.

    A stand-in for a pretraining with a softened CE: the backbone is drawn from the labels of the labelled
    videos (another label, another network), as a real run's weights depend on them. One labelled video sits in
    each fold of the unconstrained k-fold. The labels of fold 1's test videos are then permuted within each of
    its patients (so that the stratified folds stay the same; fold 2 trains on them, so only fold 1 must not
    move), the "pretraining" is redone on the permuted data, and the fine-tuning too: fold 1's
    inner-validation curve, and so the epoch both honest protocols choose there, must not change.
    """
    import dataclasses

    from hico.data.dataset import VideoDataset
    from hico.data.splits import kfold_splits
    from hico.eval.finetune import finetune

    cfg = FinetuneConfig(**{**FT_TINY, "epochs": 3})
    ids = np.array([v.video_id for v in tiny8.videos])
    labelled = [ids[test][0] for _, test in kfold_splits(tiny8.labels, tiny8.groups, k=2, seed=cfg.seed)]

    def pretrain_and_finetune(videos, name):
        label = {v.video_id: v.label for v in videos.videos}
        seed = int("".join(str(videos.classes.index(label[v])) for v in labelled), 3)
        run = fake_run(tmp_path / name, videos.root, labelled, ids, seed=seed)
        return finetune(str(run), videos, cfg, progress=False)

    before = pretrain_and_finetune(tiny8, "a")
    tested = set(before["folds"][0]["test_videos"])
    rotate = dict(zip(tiny8.classes, tiny8.classes[1:] + tiny8.classes[:1], strict=True))
    permuted = VideoDataset(
        tiny8.root,
        [dataclasses.replace(v, label=rotate[v.label]) if v.video_id in tested else v for v in tiny8.videos],
        tiny8.cache,
        [],
    )
    after = pretrain_and_finetune(permuted, "b")
    a, b = after["folds"][0], before["folds"][0]
    assert a["test_videos"] == b["test_videos"] and a["val_videos"] == b["val_videos"]
    for protocol in ("honest_final", "honest_val"):
        assert a["protocols"][protocol]["epoch"] == b["protocols"][protocol]["epoch"]
    assert [h["val_loss"] for h in a["history"]] == [h["val_loss"] for h in b["history"]]
    assert [h["val_accuracy"] for h in a["history"]] == [h["val_accuracy"] for h in b["history"]]
