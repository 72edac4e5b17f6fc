"""MoCo v2: the queue loss against its equation, the FIFO queue, the momentum update, and a tiny run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_RUN
from torch import nn

from hico.config import load_method
from hico.data.synth import write_dataset
from hico.losses import MoCoLoss, momentum_update
from hico.train.rundir import load_checkpoint, read_metrics
from hico.train.trainer import pretrain

MOCO_TINY = [*TINY_RUN, "train.epochs=2", "train.batch_size=4", "train.pairs_per_video=1", "train.holdout=0",
             "train.knn_every=0"]  # fmt: skip
"""2 epochs of 3 steps on the 12 videos below, no held-out videos, no k-NN."""


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def dot(u, v) -> float:
    return sum(x * y for x, y in zip(u, v, strict=True))


def ref_moco(q, k, queue, t, extra=None) -> float:
    """-log(exp(q.k/t) / (exp(q.k/t) + sum_extra exp(q.e/t) + sum_queue exp(q.Q/t))), averaged; plain Python."""
    total = 0.0
    for i in range(len(q)):
        qi, ki = unit(q[i]), unit(k[i])
        pos = math.exp(dot(qi, ki) / t)
        negs = [unit(e) for e in (extra[i] if extra is not None else [])] + [unit(r) for r in queue]
        total += -math.log(pos / (pos + sum(math.exp(dot(qi, n) / t) for n in negs)))
    return total / len(q)


def loss_with_queue(queue: torch.Tensor, t: float) -> MoCoLoss:
    loss = MoCoLoss(dim=queue.shape[1], queue_size=len(queue), temperature=t)
    loss.queue.copy_(nn.functional.normalize(queue, dim=1))
    return loss


def test_moco_loss_matches_its_equation():
    q = [[1.0, 0.0, 0.5], [0.2, 1.0, -0.3]]
    k = [[0.9, 0.1, 0.4], [-0.5, 1.0, 0.0]]
    queue = [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [-1.0, 0.2, 0.1], [0.3, -0.7, 0.2]]
    fn = loss_with_queue(torch.tensor(queue, dtype=torch.float64), t=0.2)
    got = fn({"global": torch.tensor(q)}, {"global": torch.tensor(k)})
    assert got["total"].item() == pytest.approx(ref_moco(q, k, queue, 0.2), rel=1e-5)
    extra = [[[0.5, 0.5, 0.5], [1.0, -1.0, 0.0]], [[0.0, 1.0, 1.0], [0.3, 0.3, -1.0]]]
    got = fn({"global": torch.tensor(q)}, {"global": torch.tensor(k)}, negatives=torch.tensor(extra))
    assert got["total"].item() == pytest.approx(ref_moco(q, k, queue, 0.2, extra), rel=1e-5)


def test_moco_loss_gradient_flows_to_queries_only():
    q = torch.randn(4, 8, requires_grad=True)
    k = torch.randn(4, 8, requires_grad=True)
    MoCoLoss(dim=8, queue_size=16)({"global": q}, {"global": k})["total"].backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert k.grad is None  # keys come from the momentum encoder: no gradient


def test_queue_is_first_in_first_out():
    fn = MoCoLoss(dim=2, queue_size=5)
    keys = [torch.tensor([[math.cos(a), math.sin(a)]]) for a in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)]
    fn.enqueue(torch.cat(keys[:3]))
    assert fn.ptr.item() == 3 and fn.filled.item() == 3
    assert torch.allclose(fn.queue[:3], torch.cat(keys[:3]))
    fn.enqueue(torch.cat(keys[3:6]))  # wraps: rows 3, 4, then 0 (the oldest) is overwritten
    assert fn.ptr.item() == 1 and fn.filled.item() == 5
    assert torch.allclose(fn.queue, torch.cat([keys[5], keys[1], keys[2], keys[3], keys[4]]))
    fn.enqueue(torch.cat(keys) * 3.0)  # more keys than slots: the last 5, normalised
    assert torch.allclose(fn.queue.norm(dim=1), torch.ones(5))
    assert {round(float(torch.atan2(r[1], r[0])), 4) for r in fn.queue} == {0.4, 0.5, 0.6, 0.7, 0.8}


def test_momentum_update_by_hand():
    q, k = nn.Linear(2, 1), nn.Linear(2, 1)
    with torch.no_grad():
        q.weight.copy_(torch.tensor([[1.0, 2.0]]))
        q.bias.fill_(10.0)
        k.weight.copy_(torch.tensor([[3.0, -1.0]]))
        k.bias.fill_(0.0)
    momentum_update(k, q, 0.9)
    assert torch.allclose(k.weight, torch.tensor([[0.9 * 3 + 0.1 * 1, 0.9 * -1 + 0.1 * 2]]))
    assert k.bias.item() == pytest.approx(1.0)
    assert torch.equal(q.weight, torch.tensor([[1.0, 2.0]]))  # the query encoder is untouched


def test_bad_moco_settings_are_named():
    with pytest.raises(ValueError, match="queue_size"):
        MoCoLoss(queue_size=0)
    with pytest.raises(ValueError, match="momentum"):
        MoCoLoss(momentum=1.0)


def test_mocov2_trains_never_sees_its_positive_in_the_queue_and_saves_its_state(tmp_path, monkeypatch):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "set", videos_per_class=4, n_frames=4, size=48, seed=1, progress=False)
    overrides = [*MOCO_TINY, "loss.queue_size=8", f"data.path={data}"]
    seen = []
    forward = MoCoLoss.forward

    def spy(self, out_q, out_k, labels=None, weights=None, negatives=None):
        seen.append((self.queue.clone(), out_k["global"].detach().clone(), int(self.ptr)))
        return forward(self, out_q, out_k, labels, weights, negatives)

    monkeypatch.setattr(MoCoLoss, "forward", spy)
    run = pretrain(load_method("mocov2", overrides), out=tmp_path / "run", progress=False)
    assert len(seen) == 6  # 12 training videos / 4 per batch x 2 epochs
    for (queue, keys, _), (next_queue, _, ptr) in zip(seen, seen[1:], strict=False):
        unit_keys = nn.functional.normalize(keys, dim=1)
        assert not torch.isclose(unit_keys @ queue.T, torch.ones(())).any()  # the positive is never a negative
        assert torch.allclose(next_queue[(ptr - 4 + torch.arange(4)) % 8], unit_keys, atol=1e-6)  # then enqueued
    ckpt = load_checkpoint(run.last)
    state = ckpt["method"]
    assert {k for k in state if k.startswith("loss.")} == {"loss.queue", "loss.ptr", "loss.filled"}
    assert int(state["loss.filled"]) == 8
    key_model = {k.removeprefix("key_model."): v for k, v in state.items() if k.startswith("key_model.")}
    assert key_model.keys() == ckpt["model"].keys()
    assert any(not torch.equal(key_model[n], ckpt["model"][n]) for n in ckpt["model"])  # lags behind


def test_ucl_cross_video_negative_mixes_the_nearest_queued_keys():
    q = [[1.0, 0.2, 0.0]]
    k = [[0.8, 0.0, 0.6]]
    queue = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.7, 0.7, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    t, ts = 0.07, 0.5
    fn = loss_with_queue(torch.tensor(queue), t)
    fn.support_size, fn.soft_nn_temperature = 2, ts
    # by hand: the two queued keys nearest to q are Q0 and Q2; weights softmax(q.Q / ts); their sum, normalised
    qu = unit(q[0])
    near = [unit(queue[0]), unit(queue[2])]
    e = [math.exp(dot(qu, n) / ts) for n in near]
    mixed = [(e[0] * near[0][j] + e[1] * near[1][j]) / sum(e) for j in range(3)]
    assert torch.allclose(fn.cross_video_negative(torch.tensor([qu])), torch.tensor([unit(mixed)]), atol=1e-6)
    got = fn({"global": torch.tensor(q)}, {"global": torch.tensor(k)})["total"].item()
    assert got == pytest.approx(ref_moco(q, k, queue, t, extra=[[mixed]]), rel=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])  # True: the CUDA default, forced here on the CPU
def test_ucl_trains_with_its_hard_negatives(channels_last, tmp_path, monkeypatch):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "set", videos_per_class=4, n_frames=12, size=48, seed=1, progress=False)
    overrides = [*MOCO_TINY, "loss.queue_size=16", "train.epoch_checkpoints=false"]
    overrides += [f"train.channels_last={channels_last}", f"data.path={data}"]
    seen = []
    forward = MoCoLoss.forward

    def spy(self, out_q, out_k, labels=None, weights=None, negatives=None):
        seen.append(None if negatives is None else tuple(negatives.shape))
        return forward(self, out_q, out_k, labels, weights, negatives)

    monkeypatch.setattr(MoCoLoss, "forward", spy)
    run = pretrain(load_method("ucl", overrides), out=tmp_path / "run", progress=False)
    assert seen == [(4, 3, 128)] * 6  # 3 intra-video negatives per anchor, 128-d keys of the momentum encoder
    epochs = [r for r in read_metrics(run.root) if r["kind"] == "epoch" and r["epoch"] > 0]
    assert len(epochs) == 2 and all(math.isfinite(r["train_total"]) for r in epochs)


def test_mocov2_holdout_loss_does_not_depend_on_the_queue(tmp_path, monkeypatch):
    from hico.train.rundir import RunDir
    from hico.train.trainer import Trainer

    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    data = write_dataset(tmp_path / "set", videos_per_class=4, n_frames=4, size=48, seed=1, progress=False)
    cfg = load_method("mocov2", [*TINY_RUN, "train.batch_size=4", "train.holdout=0.5", "loss.queue_size=8",
                                 f"data.path={data}"])  # fmt: skip
    trainer = Trainer(cfg, RunDir.create(tmp_path / "run", cfg.to_dict()), torch.device("cpu"))
    model = trainer.model.eval()
    before = trainer._holdout(model)["holdout_con"]
    trainer.method.loss.enqueue(torch.randn(8, 128))  # a different queue: the held-out loss stays the same
    assert trainer._holdout(model)["holdout_con"] == pytest.approx(before)
    assert math.log(2 * 4 - 1) * 0.5 < before < math.log(2 * 4 - 1) * 1.5  # an InfoNCE over a batch of 4 pairs


def test_moco_loss_is_float32_under_autocast():
    """Under bf16 autocast (the trainer's mixed precision) the loss and its gradient are those of the equation
    in float32: before, the negatives' matmuls ran in bf16 (about 0.4 % off at t = 0.07)."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    k = torch.randn(8, 64, generator=gen, dtype=torch.float64)
    queue = torch.randn(256, 64, generator=gen, dtype=torch.float64)
    extra = torch.randn(8, 3, 64, generator=gen, dtype=torch.float64)
    t = 0.07

    # the equation, in float64: -log(exp(q.k/t) / (exp(q.k/t) + sum_e exp(q.e/t) + sum_j exp(q.Q_j/t)))
    qr = q.clone().requires_grad_()
    qn, kn = qr / qr.norm(dim=1, keepdim=True), k / k.norm(dim=1, keepdim=True)
    en, queue_n = extra / extra.norm(dim=2, keepdim=True), queue / queue.norm(dim=1, keepdim=True)
    pos = torch.exp((qn * kn).sum(1) / t)
    negs = torch.exp((qn[:, None, :] * en).sum(2) / t).sum(1) + torch.exp(qn @ queue_n.T / t).sum(1)
    ref = (-torch.log(pos / (pos + negs))).mean()
    ref.backward()

    fn = loss_with_queue(queue.float(), t)
    q32 = q.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fn({"global": q32}, {"global": k.float()}, negatives=extra.float())["total"]
    got.backward()
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    torch.testing.assert_close(q32.grad.double(), qr.grad, rtol=1e-4, atol=1e-6)
