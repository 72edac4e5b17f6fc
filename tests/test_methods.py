"""Methods: every shipped one names the terms it returns; BYOL against its equation, its gradients and momentum,
a tiny BYOL run that resumes exactly; labels decided in one place; old checkpoints still resume."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_RUN

from hico.config import load_method, method_names
from hico.data.synth import write_dataset
from hico.methods import build_method, term_names, uses_labels
from hico.methods.byol import BYOLLoss
from hico.models import HiCoNet
from hico.train.rundir import RunDir, load_checkpoint, read_metrics, save_checkpoint
from hico.train.trainer import Trainer, pretrain

SMALL = ["model.init=random", "augment.size=64", "model.image_size=64", "model.num_classes=3"]  # auto resolved: 3
TINY = [
    *TINY_RUN,
    "train.epochs=2",
    "train.lr=0.001",
    "train.constant_epochs=1",
    "train.holdout=0.25",
    "train.knn_frames_per_video=2",
    "train.knn_k=3",
]  # on conftest's tiny_data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True))


def test_byol_loss_matches_its_equation():
    """BYOL's symmetrised loss: |p1/|p1| - z2/|z2||^2 + |p2/|p2| - z1/|z1||^2, averaged over the pairs."""
    rng = np.random.default_rng(0)
    p1, p2, z1, z2 = (rng.normal(size=(5, 7)) for _ in range(4))
    weights = rng.uniform(0.2, 1.0, size=5)
    one_way = ((_unit(p1) - _unit(z2)) ** 2).sum(1)
    other_way = ((_unit(p2) - _unit(z1)) ** 2).sum(1)
    expected = (one_way + other_way).mean()
    expected_weighted = (weights * (one_way + other_way)).mean()
    t = [torch.tensor(a) for a in (p1, p2, z1, z2)]
    got = BYOLLoss()(*t)
    assert got["total"].item() == pytest.approx(expected, rel=1e-6)
    assert got["byol"].item() == pytest.approx(expected, rel=1e-6)
    assert BYOLLoss()(*t, weights=torch.tensor(weights))["total"].item() == pytest.approx(expected_weighted, rel=1e-6)
    cos = lambda a, b: (_unit(a) * _unit(b)).sum(1)  # noqa: E731  the paper's form: 2 - 2 cos per direction
    assert got["total"].item() == pytest.approx((4 - 2 * cos(p1, z2) - 2 * cos(p2, z1)).mean(), rel=1e-6)


def _byol(overrides=()):
    cfg = load_method("byol", [*SMALL, *overrides])
    torch.manual_seed(0)
    model = HiCoNet(cfg.model).train()
    return cfg, model, build_method(cfg, model)


def test_byol_gradient_reaches_the_online_network_and_predictor_only():
    _, model, method = _byol()
    v1, v2 = torch.randn(2, 4, 3, 64, 64).unbind(0)
    method(model, v1, v2)["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.predictor.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in method.target.parameters())  # stop-gradient


def test_byol_target_follows_the_online_network_by_momentum():
    _, model, method = _byol(["loss.momentum=0.9"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # the online network moves away from its copy
    online = {n: p.detach().clone() for n, p in model.named_parameters()}
    old = {n: p.detach().clone() for n, p in method.target.named_parameters()}
    method.after_step(model)
    for n, p in method.target.named_parameters():
        torch.testing.assert_close(p, 0.9 * old[n] + 0.1 * online[n])
    assert all(torch.equal(p, online[n]) for n, p in model.named_parameters())  # the online network is untouched


@pytest.mark.parametrize("name", method_names())
def test_every_shipped_method_names_exactly_the_terms_its_forward_returns(name):
    cfg = load_method(name, SMALL)
    torch.manual_seed(0)
    model = HiCoNet(cfg.model).train()
    method = build_method(cfg, model)
    v1, v2 = torch.randn(2, 4, 3, 64, 64).unbind(0)
    labels = torch.tensor([0, -1, 1, -1]) if cfg.model.num_classes else None
    terms = method(model, v1, v2, labels)
    assert list(terms) == list(method.terms) == list(term_names(cfg.to_dict()))
    assert terms["total"].requires_grad and all(method.terms.values())  # every term has its meaning


def test_term_names_come_from_the_method_without_importing_torch():
    code = (
        "import sys; from hico.methods import term_names; "
        "print(sorted(term_names({'loss': {'kind': 'uscl'}})), sorted(term_names({'loss': {'kind': 'moco'}}))); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "['ce', 'global', 'total'] ['moco', 'total']"  # USCL's ce and MoCo's moco, for the Curves page
    assert out[1] == "False"


def test_uses_labels_is_decided_by_the_method():
    assert uses_labels(load_method("hico")) and uses_labels(load_method("uscl"))
    assert not uses_labels(load_method("hico", ["data.label_rate=0"]))  # a labelled term, but no labels kept
    assert not uses_labels(load_method("simclr", ["data.label_rate=0.5"]))  # labels kept, but no labelled term
    assert not uses_labels(load_method("byol", ["data.label_rate=0.5"]))


@pytest.mark.slow  # kill / resume: two runs
def test_byol_pretrains_and_resumes_like_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    cfg = load_method("byol", [*TINY, f"data.path={tiny_data}"])
    whole = pretrain(cfg, out=tmp_path / "whole", progress=False)
    real_step = Trainer.step

    def stop_after_four(self, batch):
        terms = real_step(self, batch)
        if self.global_step == 3:  # the 4th step (mid epoch 2): stop as after Ctrl-C, saving last.pt
            self._stop_requested = True
        return terms

    monkeypatch.setattr(Trainer, "step", stop_after_four)
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, out=tmp_path / "cut", progress=False)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["global_step"] == 4
    monkeypatch.setattr(Trainer, "step", real_step)
    resumed = pretrain(resume=tmp_path / "cut", progress=False)

    a, b = ([r for r in read_metrics(run.root) if r["kind"] == "epoch"] for run in (whole, resumed))
    assert [r["epoch"] for r in a] == [r["epoch"] for r in b] == [0, 1, 2]
    for ra, rb in zip(a, b, strict=True):
        for k in [k for k in ra if k.startswith(("train_", "holdout_", "knn_"))]:
            assert math.isclose(ra[k], rb[k], rel_tol=1e-4, abs_tol=1e-5), (k, ra[k], rb[k])
    assert set(a[-1]) >= {"train_total", "train_byol", "holdout_con"} and math.isfinite(a[-1]["train_byol"])
    sa, sb = (load_checkpoint(run.last) for run in (whole, resumed))
    assert any(k.startswith("predictor.") for k in sa["method"]) and any(k.startswith("target.") for k in sa["method"])
    for part in ("model", "method"):
        for k, v in sa[part].items():
            torch.testing.assert_close(v, sb[part][k], rtol=1e-4, atol=1e-5)


def test_a_checkpoint_written_before_methods_were_modules_still_resumes(tmp_path):
    """Old last.pt files kept MoCo's queue under "loss" and its key encoder under "key_model"."""
    data = write_dataset(tmp_path / "set", videos_per_class=4, n_frames=4, size=48, seed=1, progress=False)
    cfg = load_method("mocov2", ["augment.size=32", "data.working_size=48", "train.batch_size=4", "train.holdout=0",
                                 "loss.queue_size=8", f"data.path={data}"])  # fmt: skip
    old = Trainer(cfg, RunDir.create(tmp_path / "old", cfg.to_dict()), torch.device("cpu"))
    old.method.loss.enqueue(torch.randn(3, 128))
    with torch.no_grad():
        next(old.method.key_model.parameters()).add_(1.0)
    state = old.state()
    method = state.pop("method")
    state["loss"] = {k.removeprefix("loss."): v for k, v in method.items() if k.startswith("loss.")}
    state["key_model"] = {k.removeprefix("key_model."): v for k, v in method.items() if k.startswith("key_model.")}
    new = Trainer(cfg, RunDir.create(tmp_path / "new", cfg.to_dict()), torch.device("cpu"))
    save_checkpoint(state, new.run.last)
    new.restore()
    restored = new.method.state_dict()
    assert restored.keys() == method.keys()
    assert all(torch.equal(restored[k], v) for k, v in method.items())


def test_chance_level_from_the_equations_and_from_the_losses_at_chance():
    """chance_level: HiCo total = lam*3*ln(2N-1) + (1-lam)*2*(2 ln(2N-1)) + beta*ln K (each cross term sums two
    InfoNCE), USCL = ln(2N-1) + lam*2 ln K, MoCo/UCL = ln(1 + E + 1 + K); and the losses, fed embeddings that
    tell nothing apart and equal logits, give exactly those values."""
    import math

    from hico.losses import HiCoLoss, MoCoLoss, USCLLoss
    from hico.methods import chance_level

    n, k, lam, beta = 8, 3, 0.3, 0.2
    hico = {"loss": {"kind": "hico", "lam": lam, "beta": beta}, "train": {"batch_size": n},
            "model": {"num_classes": k}, "data": {"label_rate": 0.5}}  # fmt: skip
    pair = math.log(2 * n - 1)
    want = {"local": pair, "global": pair, "global_local": 2 * pair, "soft_ce": math.log(k),
            "con": lam * 3 * pair + (1 - lam) * 2 * 2 * pair}  # fmt: skip
    want["total"] = want["con"] + beta * math.log(k)
    for term, value in want.items():
        assert chance_level(hico, term) == pytest.approx(value), term
    same = {key: torch.ones(n, 16) for key in ("local", "medium", "global")} | {"logits": torch.zeros(n, k)}
    labels = torch.tensor([0, 1, 2, -1, 0, -1, 1, -1])
    got = HiCoLoss(lam=lam, beta=beta)(same, same, labels)
    for term, value in want.items():
        assert got[term].item() == pytest.approx(value, rel=1e-5), term

    peer_only = hico | {"loss": {"kind": "hico", "lam": lam, "terms": ["local", "global"]}, "data": {"label_rate": 0}}
    assert chance_level(peer_only, "total") == pytest.approx(lam * 2 * pair)
    assert chance_level(peer_only, "global_local") is None and chance_level(peer_only, "soft_ce") is None

    uscl = hico | {"loss": {"kind": "uscl", "lam": lam}}
    assert chance_level(uscl, "total") == pytest.approx(pair + lam * 2 * math.log(k))
    got = USCLLoss(lam=lam)(same, same, labels)
    assert got["total"].item() == pytest.approx(pair + lam * 2 * math.log(k), rel=1e-5)

    ucl = {"loss": {"kind": "moco", "queue_size": 32, "support_size": 4}, "data": {"pairs": "ucl", "negatives": 3}}
    assert chance_level(ucl, "moco") == pytest.approx(math.log(1 + 3 + 1 + 32))
    moco = MoCoLoss(dim=16, queue_size=32, support_size=4)
    moco.queue.fill_(0.25)  # unit keys, all equal to the unit queries
    got = moco({"global": torch.ones(n, 16)}, {"global": torch.ones(n, 16)}, negatives=torch.ones(n, 3, 16))
    assert got["moco"].item() == pytest.approx(math.log(1 + 3 + 1 + 32), rel=1e-5)
    assert chance_level({"loss": {"kind": "moco", "queue_size": 32}, "data": {"pairs": "hico"}}, "total") == (
        pytest.approx(math.log(33))
    )
    assert chance_level({"loss": {"kind": "byol"}}, "total") is None
