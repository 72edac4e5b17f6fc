"""The shared training step: one forward for both views, every loss term, an optimizer step."""

from __future__ import annotations

import ast
import math
import time
from pathlib import Path

import pytest
import torch

from hico.config import load_method
from hico.engine import forward_views, train_step
from hico.methods import build_method
from hico.models import HiCoNet

ROOT = Path(__file__).resolve().parent.parent


def test_forward_views_splits_one_forward_into_two_views():
    model = HiCoNet(load_method("hico", ["model.init=random", "model.num_classes=3"]).model).eval()
    v1, v2 = torch.randn(2, 3, 3, 64, 64).unbind(0)
    out1, out2 = forward_views(model, v1, v2)
    with torch.no_grad():
        ref = model(torch.cat([v1, v2]))
    for key in ("local", "medium", "global", "logits"):
        torch.testing.assert_close(out1[key], ref[key][:3])
        torch.testing.assert_close(out2[key], ref[key][3:])


@pytest.mark.slow  # the paper-size step (a minute under load); `make test` runs it
def test_full_hico_step_at_batch_32_and_224px_on_cpu():
    """The issue's requirement: HiCoNet + HiCoLoss, 32 pairs (64 images) at 224 px, forward+backward on CPU."""
    torch.manual_seed(0)
    cfg = load_method("hico", ["model.init=random", "model.num_classes=3"])
    model = HiCoNet(cfg.model).train()
    method = build_method(cfg, model)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    v1, v2 = torch.randn(2, 32, 3, 224, 224).unbind(0)
    labels = torch.tensor([0, 1, 2, -1] * 8)
    t = time.perf_counter()
    terms = train_step(method, model, opt, v1, v2, labels)
    print(f"\nfull HiCo step, 32 pairs at 224 px on CPU: {time.perf_counter() - t:.1f} s")
    assert set(terms) >= {"total", "local", "medium", "global", "global_local", "global_medium", "soft_ce"}
    assert all(math.isfinite(v) for v in terms.values())
    assert all(terms[k] > 0 for k in ("local", "medium", "global", "global_local", "global_medium", "soft_ce"))
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert all(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters(), strict=True))


def test_simclr_and_uscl_steps_run():
    for name in ("simclr", "uscl"):
        cfg = load_method(name, ["model.num_classes=3"])  # auto is resolved from a dataset; here there is none
        model = HiCoNet(cfg.model).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        v1, v2 = torch.randn(2, 4, 3, 64, 64).unbind(0)
        terms = train_step(build_method(cfg, model), model, opt, v1, v2, torch.tensor([0, 1, -1, 2]))
        assert math.isfinite(terms["total"]) and terms["total"] > 0


def _calls(path: Path) -> set[str]:
    """Names of the functions a file calls, and imports from hico.engine."""
    tree = ast.parse(path.read_text())
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    imported = {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "hico.engine" for a in n.names
    }
    return called & imported


def test_the_trainer_and_both_step_benchmarks_call_the_same_step():
    for path in ("hico/train/trainer.py", "bench/step_overhead.py", "bench/train_throughput.py"):
        assert "train_step" in _calls(ROOT / path), path


def test_pair_similarities_are_the_mean_cosines_of_pairs_and_of_the_rest():
    from hico.engine import pair_similarities

    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    z2[2] = 3 * z1[2]  # one pair points the same way: cosine 1

    def cos(a, b):
        return float(a @ b) / (float(a.norm()) * float(b.norm()))

    pos = sum(cos(z1[i], z2[i]) for i in range(5)) / 5
    neg = sum(cos(z1[i], z2[j]) for i in range(5) for j in range(5) if i != j) / 20
    got = pair_similarities(z1, z2)
    assert got == pytest.approx((pos, neg), abs=1e-6)


def test_flush_subnormals_zeroes_only_the_tiny_values_of_weights_and_optimizer_state():
    from hico.engine import flush_subnormals

    w = torch.nn.Parameter(torch.tensor([1e-40, -1e-33, 1e-29, 0.0, 1.0, -2.5]))  # 1e-40 is subnormal in float32
    opt = torch.optim.Adam([w])
    w.grad = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    opt.step()
    with torch.no_grad():
        w.copy_(torch.tensor([1e-40, -1e-33, 1e-29, 0.0, 1.0, -2.5]))
        opt.state[w]["exp_avg_sq"].copy_(torch.tensor([1e-31, 1e-3, 1e-38, 0.0, 2.0, 1e-45]))
    kept = {"exp_avg": opt.state[w]["exp_avg"].clone(), "step": opt.state[w]["step"].clone()}
    assert flush_subnormals(opt) == 2 + 3
    assert w.tolist() == pytest.approx([0.0, 0.0, 1e-29, 0.0, 1.0, -2.5], rel=1e-6, abs=0)
    assert opt.state[w]["exp_avg_sq"].tolist() == pytest.approx([0.0, 1e-3, 0.0, 0.0, 2.0, 0.0], rel=1e-6, abs=0)
    assert torch.equal(opt.state[w]["exp_avg"], kept["exp_avg"]) and torch.equal(opt.state[w]["step"], kept["step"])
    assert flush_subnormals(opt) == 0  # nothing left
