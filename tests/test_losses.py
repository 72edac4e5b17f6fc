"""Tests of hico.losses against the paper's equations, written independently of the implementation.

The oracles are: eq. 1 spelled out term by term in plain Python (N = 2, 3), a NumPy loop over the 2N
anchors, closed-form values, and (when installed) lightly's NTXentLoss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hico.losses import HICO_TERMS, HiCoLoss, USCLLoss, info_nce, soft_targets

# ---------------------------------------------------------------- independent reference implementations


def cos(u, v) -> float:
    """Cosine similarity of two plain Python sequences."""
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    return dot / (math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v)))


def ref_nt_xent(a, b, tau: float = 0.5) -> float:
    """Eq. 1 averaged over the 2N anchors, as a NumPy loop (float64)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    vectors = list(a) + list(b)  # anchor i < N is a_i, anchor N + i is b_i
    total = 0.0
    for i in range(2 * n):
        positive = vectors[(i + n) % (2 * n)]
        numerator = np.exp(cos(vectors[i], positive) / tau)
        denominator = sum(np.exp(cos(vectors[i], vectors[k]) / tau) for k in range(2 * n) if k != i)
        total += -np.log(numerator / denominator)
    return float(total / (2 * n))


def ref_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def ref_soft_ce(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-row soft cross-entropy -sum(target * log_softmax(logits))."""
    return -(targets * ref_log_softmax(logits)).sum(axis=1)


def np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# ---------------------------------------------------------------- info_nce: exact values


def test_info_nce_n2_by_hand():
    t = 0.5
    a1, a2 = (1.0, 0.0), (0.0, 2.0)
    b1, b2 = (1.0, 1.0), (3.0, -1.0)

    def e(u, v):
        return math.exp(cos(u, v) / t)

    # anchor: -log(exp(positive) / sum over the 2N - 1 others)
    l_a1 = -math.log(e(a1, b1) / (e(a1, a2) + e(a1, b1) + e(a1, b2)))
    l_a2 = -math.log(e(a2, b2) / (e(a2, a1) + e(a2, b1) + e(a2, b2)))
    l_b1 = -math.log(e(b1, a1) / (e(b1, a1) + e(b1, a2) + e(b1, b2)))
    l_b2 = -math.log(e(b2, a2) / (e(b2, a1) + e(b2, a2) + e(b2, b1)))
    expected = (l_a1 + l_a2 + l_b1 + l_b2) / 4

    got = info_nce(torch.tensor([a1, a2]), torch.tensor([b1, b2]), temperature=t)
    assert got.shape == ()
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got64 = info_nce(torch.tensor([a1, a2], dtype=torch.float64), torch.tensor([b1, b2], dtype=torch.float64))
    assert got64.dtype == torch.float64
    assert got64.item() == pytest.approx(expected, rel=1e-12)


def test_info_nce_n3_by_hand():
    t = 0.5
    a1, a2, a3 = (1.0, 0.0, 0.0), (1.0, 2.0, 0.0), (0.0, -1.0, 3.0)
    b1, b2, b3 = (2.0, 1.0, 0.0), (0.0, 1.0, 1.0), (-1.0, 0.0, 2.0)

    def e(u, v):
        return math.exp(cos(u, v) / t)

    l_a1 = -math.log(e(a1, b1) / (e(a1, a2) + e(a1, a3) + e(a1, b1) + e(a1, b2) + e(a1, b3)))
    l_a2 = -math.log(e(a2, b2) / (e(a2, a1) + e(a2, a3) + e(a2, b1) + e(a2, b2) + e(a2, b3)))
    l_a3 = -math.log(e(a3, b3) / (e(a3, a1) + e(a3, a2) + e(a3, b1) + e(a3, b2) + e(a3, b3)))
    l_b1 = -math.log(e(b1, a1) / (e(b1, a1) + e(b1, a2) + e(b1, a3) + e(b1, b2) + e(b1, b3)))
    l_b2 = -math.log(e(b2, a2) / (e(b2, a1) + e(b2, a2) + e(b2, a3) + e(b2, b1) + e(b2, b3)))
    l_b3 = -math.log(e(b3, a3) / (e(b3, a1) + e(b3, a2) + e(b3, a3) + e(b3, b1) + e(b3, b2)))
    expected = (l_a1 + l_a2 + l_a3 + l_b1 + l_b2 + l_b3) / 6

    a = torch.tensor([a1, a2, a3], dtype=torch.float64)
    b = torch.tensor([b1, b2, b3], dtype=torch.float64)
    assert info_nce(a, b, temperature=t).item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("n", [2, 5, 16])
def test_info_nce_all_identical_vectors_is_log_2n_minus_1(n):
    x = torch.ones(n, 7)
    assert info_nce(x, x.clone()).item() == pytest.approx(math.log(2 * n - 1), rel=1e-6)


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_info_nce_identical_orthonormal_views(tau):
    # anchor e_i: positive cos 1; among the others one more cos 1 (itself, is the positive) and 2N-2 zeros
    n = 4
    x = torch.eye(n, 6, dtype=torch.float64)
    expected = math.log(1 + (2 * n - 2) * math.exp(-1 / tau))
    assert info_nce(x, x.clone(), temperature=tau).item() == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- info_nce: against a loop, properties


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
@pytest.mark.parametrize("n,d", [(2, 3), (7, 16), (12, 5)])
def test_info_nce_matches_numpy_loop(n, d, tau):
    g = torch.Generator().manual_seed(n * 100 + d)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert info_nce(a, b, temperature=tau).item() == pytest.approx(ref_nt_xent(a, b, tau), rel=1e-10)


def test_info_nce_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 8, generator=g, dtype=torch.float64)
    b = torch.randn(6, 8, generator=g, dtype=torch.float64)
    base = info_nce(a, b)
    torch.testing.assert_close(info_nce(b, a), base)
    scale = torch.rand(6, 1, generator=g, dtype=torch.float64) * 100 + 0.01  # positive, per row
    torch.testing.assert_close(info_nce(a * scale, b * 3.0), base)
    # pairs permuted together: same loss
    perm = torch.randperm(6, generator=g)
    torch.testing.assert_close(info_nce(a[perm], b[perm]), base)


def test_info_nce_batched_matches_separate_calls():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    b = torch.randn(3, 5, 4, generator=g, dtype=torch.float64)
    got = info_nce(a, b, temperature=0.3)
    assert got.shape == (3,)
    for t in range(3):
        assert got[t].item() == pytest.approx(ref_nt_xent(a[t], b[t], 0.3), rel=1e-10)


def test_info_nce_gradcheck():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: info_nce(x, y, temperature=0.5), (a, b))
    assert torch.autograd.gradcheck(lambda x, y: info_nce(x, y, temperature=0.1), (a, b))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_info_nce_half_precision_large_norms(dtype):
    g = torch.Generator().manual_seed(3)
    # entries ~ 300: every square overflows float16 (max 65504), so a half-precision norm would be inf
    a = (torch.randn(16, 64, generator=g) * 300).to(dtype)
    b = (a.float() + torch.randn(16, 64, generator=g) * 300).to(dtype)
    for tau in (0.5, 0.05):
        got = info_nce(a, b, temperature=tau)
        assert got.dtype == torch.float32
        assert torch.isfinite(got)
        ref = ref_nt_xent(a.double(), b.double(), tau)
        assert got.item() == pytest.approx(ref, rel=1e-4, abs=1e-5)
    a.requires_grad_(True)
    info_nce(a, b).backward()
    assert torch.isfinite(a.grad.float()).all()


def test_info_nce_ignores_autocast():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(8, 32, generator=g), torch.randn(8, 32, generator=g)
    plain = info_nce(a, b, temperature=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = info_nce(a, b, temperature=0.1)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, plain)


def test_info_nce_errors():
    with pytest.raises(ValueError, match="N >= 2"):
        info_nce(torch.randn(1, 4), torch.randn(1, 4))
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(4, 7\)"):
        info_nce(torch.randn(4, 8), torch.randn(4, 7))
    with pytest.raises(ValueError, match=r"\(3, 8\).*\(4, 8\)"):
        info_nce(torch.randn(3, 8), torch.randn(4, 8))
    with pytest.raises(ValueError, match="shape"):
        info_nce(torch.randn(8), torch.randn(8))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(torch.randn(4, 8), torch.randn(4, 8), temperature=0.0)


def test_info_nce_matches_lightly():
    lightly_loss = pytest.importorskip("lightly.loss")
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(10, 16, generator=g), torch.randn(10, 16, generator=g)
    for tau in (0.1, 0.5):
        expected = lightly_loss.NTXentLoss(temperature=tau, memory_bank_size=0)(a, b)
        torch.testing.assert_close(info_nce(a, b, temperature=tau), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- HiCoLoss: contrastive terms

LEVELS = ("local", "medium", "global")


def make_outputs(n=6, d=8, k=3, seed=0, dtype=torch.float64, dims=None):
    g = torch.Generator().manual_seed(seed)
    dims = dims or dict.fromkeys(LEVELS, d)
    outs = []
    for _ in range(2):
        out = {level: torch.randn(n, dims[level], generator=g, dtype=dtype) for level in LEVELS}
        out["logits"] = torch.randn(n, k, generator=g, dtype=dtype)
        outs.append(out)
    return outs


def test_hico_terms_both_pairings():
    out1, out2 = make_outputs()
    l, m, g = (np64(out1[k]) for k in LEVELS)
    l2, m2, g2 = (np64(out2[k]) for k in LEVELS)
    tau = 0.5
    expected_peer = {"local": ref_nt_xent(l, l2), "medium": ref_nt_xent(m, m2), "global": ref_nt_xent(g, g2)}
    expected_cross = {  # the paper's eq. 5: global of one view against the other view
        "global_local": ref_nt_xent(g, l2, tau) + ref_nt_xent(g2, l, tau),
        "global_medium": ref_nt_xent(g, m2, tau) + ref_nt_xent(g2, m, tau),
    }
    expected_same = {  # the authors' code: global against the same view
        "global_local": ref_nt_xent(g, l, tau) + ref_nt_xent(g2, l2, tau),
        "global_medium": ref_nt_xent(g, m, tau) + ref_nt_xent(g2, m2, tau),
    }
    # the two pairings really differ on these inputs, so the checks below tell them apart
    for key in expected_cross:
        assert abs(expected_cross[key] - expected_same[key]) > 1e-3

    cross = HiCoLoss(cross_pairing="cross_view")(out1, out2)
    same = HiCoLoss(cross_pairing="same_view")(out1, out2)
    for term, value in expected_peer.items():
        assert cross[term].item() == pytest.approx(value, rel=1e-10)
        assert same[term].item() == pytest.approx(value, rel=1e-10)
    for term in expected_cross:
        assert cross[term].item() == pytest.approx(expected_cross[term], rel=1e-10)
        assert same[term].item() == pytest.approx(expected_same[term], rel=1e-10)
    assert HiCoLoss().cross_pairing == "cross_view"


@pytest.mark.parametrize("lam,beta", [(0.5, 0.2), (0.0, 1.0), (1.0, 0.0), (0.3, 2.5)])
def test_hico_con_and_total(lam, beta):
    out1, out2 = make_outputs(seed=1)
    labels = torch.tensor([0, -1, 2, 1, -1, 0])
    l, m, g = (np64(out1[k]) for k in LEVELS)
    l2, m2, g2 = (np64(out2[k]) for k in LEVELS)
    peer = ref_nt_xent(l, l2) + ref_nt_xent(m, m2) + ref_nt_xent(g, g2)
    cross = ref_nt_xent(g, l2) + ref_nt_xent(g2, l) + ref_nt_xent(g, m2) + ref_nt_xent(g2, m)
    con = lam * peer + (1 - lam) * cross
    # normalized smoothing: mean over the labelled rows of both views, target (1 - a) onehot + a / K
    alpha, k = 0.2, 3
    rows = np.concatenate([np64(out1["logits"])[[0, 2, 3, 5]], np64(out2["logits"])[[0, 2, 3, 5]]])
    cls = [0, 2, 1, 0] * 2
    targets = np.full((8, k), alpha / k)
    targets[np.arange(8), cls] += 1 - alpha
    soft = ref_soft_ce(rows, targets).mean()

    losses = HiCoLoss(lam=lam, beta=beta, alpha=alpha)(out1, out2, labels)
    assert set(losses) == {"total", "con", *HICO_TERMS}
    assert losses["con"].item() == pytest.approx(con, rel=1e-10)
    assert losses["soft_ce"].item() == pytest.approx(soft, rel=1e-10)
    assert losses["total"].item() == pytest.approx(con + beta * soft, rel=1e-10)


def test_hico_temperature():
    out1, out2 = make_outputs(seed=2)
    losses = HiCoLoss(temperature=0.1, terms={"global", "global_medium"})(out1, out2)
    g, g2, m, m2 = np64(out1["global"]), np64(out2["global"]), np64(out1["medium"]), np64(out2["medium"])
    assert losses["global"].item() == pytest.approx(ref_nt_xent(g, g2, 0.1), rel=1e-10)
    expected = ref_nt_xent(g, m2, 0.1) + ref_nt_xent(g2, m, 0.1)
    assert losses["global_medium"].item() == pytest.approx(expected, rel=1e-10)


def test_hico_terms_switched_off():
    out1, out2 = make_outputs(seed=3)
    for out in (out1, out2):
        out["global"].requires_grad_(True)
        out["local"].requires_grad_(True)
    loss_fn = HiCoLoss(lam=0.4, terms={"global", "global_local"})
    losses = loss_fn(out1, out2, torch.tensor([0, 1, 2, 0, 1, 2]))
    g, g2, l, l2 = (np64(out1["global"]), np64(out2["global"]), np64(out1["local"]), np64(out2["local"]))
    expected = 0.4 * ref_nt_xent(g, g2) + 0.6 * (ref_nt_xent(g, l2) + ref_nt_xent(g2, l))
    assert losses["total"].item() == pytest.approx(expected, rel=1e-10)
    assert losses["con"].item() == pytest.approx(expected, rel=1e-10)
    for term in ("local", "medium", "global_medium", "soft_ce"):
        assert losses[term].shape == ()
        assert losses[term].item() == 0.0
        assert not losses[term].requires_grad
    losses["total"].backward()
    assert out1["global"].grad.abs().sum() > 0 and out2["local"].grad.abs().sum() > 0


def test_hico_only_needs_the_keys_of_its_terms():
    out1, out2 = make_outputs(seed=4)
    simclr = HiCoLoss(lam=1.0, terms=["global"])  # Table 3's SimCLR row
    losses = simclr({"global": out1["global"]}, {"global": out2["global"]})
    assert losses["total"].item() == pytest.approx(ref_nt_xent(np64(out1["global"]), np64(out2["global"])))
    with pytest.raises(KeyError, match="local"):
        HiCoLoss(terms=["local"])({"global": out1["global"]}, {"global": out2["global"]})
    with pytest.raises(KeyError, match="logits"):
        HiCoLoss(terms=["soft_ce"])({"global": out1["global"]}, {"global": out2["global"]})


def test_hico_peer_terms_with_different_dims():
    out1, out2 = make_outputs(seed=5, dims={"local": 4, "medium": 8, "global": 16})
    losses = HiCoLoss(terms=["local", "medium", "global"])(out1, out2)
    for level in LEVELS:
        assert losses[level].item() == pytest.approx(ref_nt_xent(np64(out1[level]), np64(out2[level])), rel=1e-10)
    with pytest.raises(ValueError, match="shape"):  # a cross term between different dims
        HiCoLoss(terms=["global_local"])(out1, out2)


def test_hico_half_precision_and_backward():
    out1, out2 = make_outputs(n=8, d=32, seed=6, dtype=torch.float32)
    for out in (out1, out2):
        for key in out:
            out[key] = (out[key] * 300).to(torch.bfloat16).requires_grad_(True)
    losses = HiCoLoss()(out1, out2, torch.tensor([0, 1, -1, -1, 2, -1, 0, -1]))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["total"].backward()
    for out in (out1, out2):
        for key in out:
            assert torch.isfinite(out[key].grad.float()).all()


@pytest.mark.parametrize("pairing", ["cross_view", "same_view"])
def test_hico_gradcheck(pairing):
    out1, out2 = make_outputs(n=3, d=4, k=3, seed=11)
    keys = [*LEVELS, "logits"]
    inputs = tuple(out[key].requires_grad_(True) for out in (out1, out2) for key in keys)
    labels = torch.tensor([1, -1, 0])
    loss_fn = HiCoLoss(cross_pairing=pairing, beta=0.7)

    def total(*tensors):
        first, second = dict(zip(keys, tensors[:4], strict=True)), dict(zip(keys, tensors[4:], strict=True))
        return loss_fn(first, second, labels)["total"]

    # fast mode (random vector-Jacobian products) keeps the 8-input composite quick; info_nce gets the full check
    assert torch.autograd.gradcheck(total, inputs, fast_mode=True)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"lam": -0.1}, "lam"),
        ({"lam": 1.5}, "lam"),
        ({"alpha": 1.0}, "alpha"),
        ({"alpha": -0.2}, "alpha"),
        ({"beta": -1}, "beta"),
        ({"temperature": 0}, "temperature"),
        ({"temperature": -0.5}, "temperature"),
        ({"terms": ["global", "globl", "peer"]}, "globl"),
        ({"terms": []}, "terms"),
        ({"cross_pairing": "crossview"}, "cross_pairing"),
        ({"smoothing": "authors"}, "smoothing"),
    ],
)
def test_hico_argument_validation(kwargs, name):
    with pytest.raises(ValueError, match=name):
        HiCoLoss(**kwargs)


def test_hico_terms_single_string_and_canonical_order():
    assert HiCoLoss(terms="global").terms == ("global",)
    assert HiCoLoss(terms=["soft_ce", "local", "global"]).terms == ("local", "global", "soft_ce")
    assert HiCoLoss().terms == HICO_TERMS
    assert "cross_view" in repr(HiCoLoss())


# ---------------------------------------------------------------- softened targets and soft CE


def test_soft_targets_normalized():
    labels = torch.tensor([0, -1, 2, 1])
    got = soft_targets(labels, num_classes=3, alpha=0.2, mode="normalized")
    expected = torch.tensor(
        [
            [0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3],
            [0.2 / 3, 0.2 / 3, 0.8 + 0.2 / 3],
            [0.2 / 3, 0.8 + 0.2 / 3, 0.2 / 3],
        ]
    )
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(3))


def test_torch_label_smoothing_is_the_normalized_target():
    # F.cross_entropy(label_smoothing=a) == soft CE with target (1 - a) * onehot + a / K
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1, 1, 2])
    alpha = 0.3
    targets = np.full((5, 4), alpha / 4)
    targets[np.arange(5), labels.numpy()] += 1 - alpha
    expected = ref_soft_ce(np64(logits), targets).mean()
    got = F.cross_entropy(logits, labels, label_smoothing=alpha)
    assert got.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5])
def test_soft_ce_normalized_is_torch_label_smoothing(alpha):
    # the contract: the mean over the labelled samples of both views of F.cross_entropy(label_smoothing)
    g = torch.Generator().manual_seed(10)
    logits1, logits2 = torch.randn(7, 4, generator=g), torch.randn(7, 4, generator=g)
    labels = torch.tensor([3, -1, 0, 2, -1, -1, 1])
    keep = labels >= 0
    expected = F.cross_entropy(torch.cat([logits1[keep], logits2[keep]]), labels[keep].repeat(2), label_smoothing=alpha)
    losses = HiCoLoss(terms=["soft_ce"], alpha=alpha)({"logits": logits1}, {"logits": logits2}, labels)
    torch.testing.assert_close(losses["soft_ce"], expected)


def test_soft_targets_reference_values():
    # the authors' formula, 3 labelled samples, K = 3, alpha = 0.2: alpha / (3 - 1) = 0.1 everywhere
    labels = torch.tensor([-1, 2, 0, -1, 1])
    got = soft_targets(labels, num_classes=3, alpha=0.2, mode="reference")
    expected = torch.tensor([[0.1, 0.1, 0.9], [0.9, 0.1, 0.1], [0.1, 0.9, 0.1]])
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got.sum(dim=1), torch.full((3,), 1.1))  # not a distribution
    # 5 labelled: alpha / 4 = 0.05
    got5 = soft_targets(torch.tensor([0, 0, 1, 2, 1]), num_classes=3, alpha=0.2, mode="reference")
    torch.testing.assert_close(got5[0], torch.tensor([0.85, 0.05, 0.05]))
    with pytest.raises(ValueError, match="2 labelled"):
        soft_targets(torch.tensor([-1, 1, -1]), num_classes=3, alpha=0.2, mode="reference")
    assert soft_targets(torch.tensor([-1, -1]), num_classes=3, alpha=0.2, mode="reference").shape == (0, 3)
    with pytest.raises(ValueError, match="mode"):
        soft_targets(labels, num_classes=3, alpha=0.2, mode="uniform")


def test_soft_ce_reference_values():
    logits1 = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5], [0.0, 1.0, 3.0], [1.0, -2.0, 0.0]])
    logits2 = torch.tensor([[0.0, 1.0, 0.0], [9.0, 9.0, 9.0], [1.0, 1.0, -1.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, -1, 2, 1])
    targets = np.array([[0.9, 0.1, 0.1], [0.1, 0.1, 0.9], [0.1, 0.9, 0.1]])  # alpha 0.2, 3 labelled
    rows = [0, 2, 3]
    expected = (
        ref_soft_ce(np64(logits1)[rows], targets).mean() + ref_soft_ce(np64(logits2)[rows], targets).mean()
    )  # per view mean, summed over the two views
    loss_fn = HiCoLoss(terms=["soft_ce"], smoothing="reference", alpha=0.2, beta=1.0)
    losses = loss_fn({"logits": logits1}, {"logits": logits2}, labels)
    assert losses["soft_ce"].item() == pytest.approx(expected, rel=1e-6)
    assert losses["total"].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("smoothing", ["normalized", "reference"])
def test_soft_ce_ignores_unlabelled_samples(smoothing):
    g = torch.Generator().manual_seed(8)
    logits1, logits2 = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    labels = torch.tensor([1, -1, 0, -1, 2, -1])
    loss_fn = HiCoLoss(terms=["soft_ce"], smoothing=smoothing)
    base = loss_fn({"logits": logits1}, {"logits": logits2}, labels)["soft_ce"]
    unlabelled = labels < 0
    logits1[unlabelled] = torch.randn(3, 3, generator=g) * 50
    logits2[unlabelled] = torch.randn(3, 3, generator=g) * 50
    changed = loss_fn({"logits": logits1}, {"logits": logits2}, labels)["soft_ce"]
    assert changed.item() == pytest.approx(base.item(), rel=1e-6)


@pytest.mark.parametrize("smoothing", ["normalized", "reference"])
@pytest.mark.parametrize("labels", [None, torch.tensor([-1, -1, -1, -1])])
def test_soft_ce_no_labelled_sample_is_zero(smoothing, labels):
    logits1 = torch.randn(4, 3, requires_grad=True)
    logits2 = torch.randn(4, 3, requires_grad=True)
    losses = HiCoLoss(terms=["soft_ce"], smoothing=smoothing)({"logits": logits1}, {"logits": logits2}, labels)
    assert losses["soft_ce"].item() == 0.0
    assert losses["total"].item() == 0.0
    losses["total"].backward()
    assert torch.equal(logits1.grad, torch.zeros(4, 3)) and torch.equal(logits2.grad, torch.zeros(4, 3))


def test_soft_ce_one_labelled_sample():
    logits1 = torch.randn(4, 3, requires_grad=True)
    logits2 = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([-1, 2, -1, -1])
    losses = HiCoLoss(terms=["soft_ce"])({"logits": logits1}, {"logits": logits2}, labels)
    targets = np.full((1, 3), 0.2 / 3)
    targets[0, 2] += 0.8
    expected = (ref_soft_ce(np64(logits1)[[1]], targets) + ref_soft_ce(np64(logits2)[[1]], targets)).sum() / 2
    assert losses["soft_ce"].item() == pytest.approx(expected, rel=1e-6)
    losses["total"].backward()
    assert torch.isfinite(logits1.grad).all() and logits1.grad[1].abs().sum() > 0
    assert "soft_ce_skipped" not in losses  # only the reference smoothing skips batches


@pytest.mark.parametrize(("labels", "skipped"), [([-1, 2, -1, -1], 1.0), ([-1, -1, -1, -1], 0.0), ([0, 2, -1, 1], 0.0)])
def test_reference_soft_ce_skips_a_batch_with_one_labelled_sample(labels, skipped):
    # the authors' alpha / (N - 1) divides by zero at N = 1: the term is 0 for that batch (finite zero
    # gradients, still in the graph) and the batch is counted; N = 0 is not counted, N = 3 is computed
    logits1 = torch.randn(4, 3, requires_grad=True)
    logits2 = torch.randn(4, 3, requires_grad=True)
    loss_fn = HiCoLoss(terms=["soft_ce", "global"], smoothing="reference", beta=1.0)
    out1 = {"logits": logits1, "global": torch.randn(4, 8)}
    out2 = {"logits": logits2, "global": torch.randn(4, 8)}
    losses = loss_fn(out1, out2, torch.tensor(labels))
    assert losses["soft_ce_skipped"].item() == skipped
    assert losses["total"].item() == pytest.approx(losses["con"].item() + losses["soft_ce"].item(), rel=1e-6)
    losses["total"].backward()
    assert torch.isfinite(logits1.grad).all() and torch.isfinite(logits2.grad).all()
    if sum(label >= 0 for label in labels) <= 1:
        assert losses["soft_ce"].item() == 0.0
        assert torch.equal(logits1.grad, torch.zeros(4, 3)) and torch.equal(logits2.grad, torch.zeros(4, 3))
    else:
        assert losses["soft_ce"].item() > 0 and logits1.grad.abs().sum() > 0
    no_labels = loss_fn(out1, out2, None)
    assert no_labels["soft_ce_skipped"].item() == 0.0 and no_labels["soft_ce"].item() == 0.0


def test_soft_ce_label_shape_errors():
    logits = torch.randn(4, 3)
    with pytest.raises(ValueError, match="labels"):
        HiCoLoss(terms=["soft_ce"])({"logits": logits}, {"logits": logits}, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer"):
        HiCoLoss(terms=["soft_ce"])({"logits": logits}, {"logits": logits}, torch.zeros(4))


# ---------------------------------------------------------------- USCL


def ref_ce(logits: np.ndarray, labels: np.ndarray) -> float:
    rows = labels >= 0
    if not rows.any():
        return 0.0
    return float(-ref_log_softmax(logits[rows])[np.arange(rows.sum()), labels[rows]].mean())


def test_uscl_loss_formula():
    g = torch.Generator().manual_seed(9)
    z1, z2 = (
        torch.randn(6, 8, generator=g, dtype=torch.float64),
        torch.randn(6, 8, generator=g, dtype=torch.float64),
    )
    o1, o2 = (
        torch.randn(6, 3, generator=g, dtype=torch.float64),
        torch.randn(6, 3, generator=g, dtype=torch.float64),
    )
    labels = torch.tensor([2, -1, 0, 0, -1, 1])
    ce = ref_ce(np64(o1), labels.numpy()) + ref_ce(np64(o2), labels.numpy())
    contrastive = ref_nt_xent(np64(z1), np64(z2), 0.5)
    losses = USCLLoss(lam=0.2)({"global": z1, "logits": o1}, {"global": z2, "logits": o2}, labels)
    assert set(losses) == {"total", "global", "ce"}
    assert losses["global"].item() == pytest.approx(contrastive, rel=1e-10)
    assert losses["ce"].item() == pytest.approx(ce, rel=1e-10)
    assert losses["total"].item() == pytest.approx(contrastive + 0.2 * ce, rel=1e-10)


def test_uscl_no_labels_and_validation():
    z1 = torch.randn(4, 8, requires_grad=True)
    o1 = torch.randn(4, 3, requires_grad=True)
    out1, out2 = {"global": z1, "logits": o1}, {"global": torch.randn(4, 8), "logits": torch.randn(4, 3)}
    losses = USCLLoss(temperature=0.1)(out1, out2, None)
    assert losses["ce"].item() == 0.0
    assert losses["total"].item() == pytest.approx(ref_nt_xent(np64(z1), np64(out2["global"]), 0.1), rel=1e-5)
    losses["total"].backward()
    assert torch.equal(o1.grad, torch.zeros(4, 3)) and z1.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="lam"):
        USCLLoss(lam=-1)
    with pytest.raises(ValueError, match="temperature"):
        USCLLoss(temperature=0)
    with pytest.raises(KeyError, match="logits"):
        USCLLoss()({"global": z1}, {"global": z1})


# ---------------------------------------------------------------- pair weights (IVPP)


def ref_weighted_nt_xent(a, b, w, tau: float = 0.5) -> float:
    """Eq. 1 per anchor, anchor a_i and b_i both weighted by w_i, averaged over the 2N anchors (NumPy loop)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n = len(a)
    vectors = list(a) + list(b)
    total = 0.0
    for i in range(2 * n):
        positive = vectors[(i + n) % (2 * n)]
        numerator = np.exp(cos(vectors[i], positive) / tau)
        denominator = sum(np.exp(cos(vectors[i], vectors[k]) / tau) for k in range(2 * n) if k != i)
        total += w[i % n] * -np.log(numerator / denominator)
    return float(total / (2 * n))


def test_info_nce_pair_weights():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    w = torch.tensor([1.0, 0.5, 0.25, 0.0, 0.75], dtype=torch.float64)
    got = info_nce(a, b, 0.5, weights=w)
    assert got.item() == pytest.approx(ref_weighted_nt_xent(a.numpy(), b.numpy(), w.numpy()), rel=1e-10)
    assert info_nce(a, b, 0.5, weights=torch.ones(5, dtype=torch.float64)).item() == pytest.approx(
        ref_nt_xent(a.numpy(), b.numpy())
    )
    a.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: info_nce(x, b, 0.5, weights=w), (a,))
    with pytest.raises(ValueError, match="weights must have shape"):
        info_nce(a, b, weights=torch.ones(4))


def test_hico_and_uscl_losses_pass_pair_weights_to_every_contrastive_term():
    out1, out2 = make_outputs(n=6, seed=1)
    w = torch.linspace(0.1, 1.0, 6, dtype=torch.float64)
    terms = HiCoLoss(terms=("local", "global", "global_medium"))(out1, out2, None, weights=w)
    assert terms["local"].item() == pytest.approx(info_nce(out1["local"], out2["local"], weights=w).item())
    expected = info_nce(out1["global"], out2["medium"], weights=w) + info_nce(out2["global"], out1["medium"], weights=w)
    assert terms["global_medium"].item() == pytest.approx(expected.item())
    uscl = USCLLoss(lam=0.0)(out1, out2, None, weights=w)
    assert uscl["global"].item() == pytest.approx(info_nce(out1["global"], out2["global"], weights=w).item())
