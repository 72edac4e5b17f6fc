"""hico.dist: real 2-process gloo runs (CPU) compared with 1-process runs on the same global batch.

One module-scoped fixture spawns the two ranks ONCE (a spawn costs seconds); each rank runs every check,
saves what it saw to a file, and the tests below compare those files with a reference computed here, in one
process. Each rank sets the env that torchrun would set and goes through ``hico.dist.setup``.

The DDP model runs in eval mode: in training mode plain BatchNorm normalises with each rank's LOCAL batch
statistics (which differ from the 1-process batch statistics), and SyncBatchNorm needs CUDA (it raises on
cpu tensors, checked below). Eval mode still computes every gradient. Everything runs in float64, so the
comparisons are tight (summation order differs between 1 and 2 processes).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import free_port, scratch
from torch import Tensor, nn

from hico import dist
from hico.config import LossConfig, MethodConfig, load_method, method_names, resolve_classes
from hico.data.synth import write_dataset
from hico.engine import forward_views, train_step
from hico.losses import HiCoLoss, USCLLoss
from hico.methods import build_method
from hico.methods.base import Method
from hico.models import HiCoNet
from hico.models.checkpoint import unwrap
from hico.models.config import ModelConfig

WORLD = 2
BATCH = 8  # global pairs, split 4 + 4
SIZE = 32  # pixels
TOL = {"rtol": 1e-7, "atol": 1e-9}  # float64; the brief's bar is 1e-5

# name -> (model config, loss class, loss kwargs, global labels). Rank 1's half has no label in "hico", so a
# per-rank average of the CE would differ from the global one.
CASES: dict[str, tuple[dict[str, Any], str, dict[str, Any], list[int]]] = {
    "hico": (
        {"fpn_channels": 16, "head_dim": 8, "num_classes": 3},
        "hico",
        {},
        [0, -1, 2, 1, -1, -1, -1, -1],
    ),
    "hico_reference_same_view": (
        {"levels": ("p2", "p3", "p5"), "fpn_channels": 16, "head_dim": 8, "num_classes": 3, "classifier": "code"},
        "hico",
        {"cross_pairing": "same_view", "smoothing": "reference", "alpha": 0.3},
        [1, -1, -1, 0, 2, -1, 0, -1],
    ),
    "uscl": (
        {"fpn": False, "head_layers": 2, "hidden_dim": 32, "head_dim": 8, "num_classes": 3},
        "uscl",
        {"lam": 0.2},
        [-1, 2, -1, 0, 1, -1, -1, 2],
    ),
}


def _loss_fn(kind: str, kwargs: dict[str, Any]) -> nn.Module:
    return HiCoLoss(**kwargs) if kind == "hico" else USCLLoss(**kwargs)


def _views() -> tuple[Tensor, Tensor]:
    """The global batch (BATCH, 3, SIZE, SIZE) x 2, identical in every process."""
    gen = torch.Generator().manual_seed(1)
    return tuple(torch.randn(BATCH, 3, SIZE, SIZE, generator=gen, dtype=torch.float64) for _ in range(2))


def _model(case: str, workdir: Path) -> HiCoNet:
    model = HiCoNet(ModelConfig(**{**CASES, **STEP_CASES}[case][0])).double()
    model.load_state_dict(torch.load(workdir / f"{case}.pt", weights_only=True))
    return model.eval()  # see the module docstring


def _method(case: str, model: HiCoNet) -> Method:
    model_cfg, loss, _ = STEP_CASES[case]
    torch.manual_seed(1)  # BYOL's predictor: the same initial weights in every process
    return build_method(MethodConfig(model=ModelConfig(**model_cfg), loss=LossConfig(**loss)), model).double().eval()


def _step(model: nn.Module, method: Method, view1: Tensor, view2: Tensor, labels: Tensor) -> dict:
    """One train_step (lr 0: the gradients stay to be compared); its terms and every trained gradient."""
    trained = dict(unwrap(model).named_parameters())
    trained |= {f"method.{n}": p for n, p in method.named_parameters() if p.requires_grad}
    terms = train_step(method, model, torch.optim.SGD(trained.values(), lr=0.0), view1, view2, labels)
    return {"terms": terms, "grads": {n: p.grad for n, p in trained.items()}}


def _toy_loss(g: Tensor) -> Tensor:
    """A loss that mixes all rows of the gathered (N, D) tensor non-linearly."""
    return torch.logsumexp(g @ g.T, dim=1).mean() + (g**3).sum() / g.numel()


# name -> (model config, loss section, global labels): one step of the trainer's ``hico.engine.train_step``, the
# method gathering what it needs (HiCo: every embedding; BYOL: nothing, but its predictor's gradients averaged)
STEP_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], list[int]]] = {
    "step-hico": (
        {"fpn_channels": 16, "head_dim": 8, "num_classes": 3},
        {"kind": "hico"},
        [0, -1, 2, 1, -1, -1, -1, -1],
    ),
    "step-byol": (
        {"fpn": False, "head_layers": 2, "hidden_dim": 32, "head_dim": 8, "num_classes": 0},
        {"kind": "byol"},
        [-1] * BATCH,
    ),
}


def _toy_input() -> Tensor:
    return torch.randn(2 * WORLD, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def _worker(rank: int, port: int, workdir: str) -> None:
    """One rank: every check of this file, results saved to ``workdir/rank{rank}.pt``."""
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    device = dist.setup(device="cpu", timeout_s=60)
    res: dict[str, Any] = {"device": str(device), "ids": (dist.rank(), dist.world_size(), dist.is_main())}
    res["ids"] += (dist.local_rank(), dist.is_dist())

    # gather_with_grad on a toy loss of the whole gathered tensor
    rows = slice(2 * rank, 2 * rank + 2)
    x = _toy_input()[rows].clone().requires_grad_()
    gathered = dist.gather_with_grad(x)
    _toy_loss(gathered).backward()
    res["toy"] = {"gathered": gathered.detach(), "grad": x.grad}

    # unequal batch sizes at the first gather of a kind (where the shapes are compared, once per process, so
    # that a training step pays no sync for it): the same clear error on every rank, no hang
    dist._CHECKED.clear()
    try:
        dist.gather_with_grad(torch.zeros(3 + rank, 2))
        res["unequal"] = None
    except ValueError as err:
        res["unequal"] = str(err)

    # gather_outputs: float tensors with grad, integer ones without; one dict, several shapes
    out = {
        "emb": torch.full((2, 3), float(rank), requires_grad=True),
        "maps": torch.full((2, 2, 2), 10.0 + rank),
        "idx": torch.arange(2) + 10 * rank,
    }
    g = dist.gather_outputs(out)
    (g["emb"].sum() * 2).backward()
    res["outputs"] = {k: v.detach() for k, v in g.items()} | {"emb_grad": out["emb"].grad, "keys": list(g)}

    res["mean"] = dist.all_reduce_mean(torch.tensor(rank + 1))
    res["broadcast"] = dist.broadcast_object({"run": f"chosen by rank {rank}"})
    # the CLI's run folder without --out: named after each rank's clock, which may tick between the ranks
    calls = []
    res["run_dir"] = dist.on_rank0(lambda: calls.append(rank) or f"runs/hico-20260101-00000{rank}", "cpu")
    res["run_dir_chosen_here"] = calls
    dist.barrier()

    # SyncBatchNorm on cpu / gloo
    try:
        nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(3)).train()(torch.randn(4, 3))
        res["syncbn_cpu"] = None
    except ValueError as err:
        res["syncbn_cpu"] = str(err)
    bn = nn.BatchNorm1d(3)
    res["maybe_sync_is_identity"] = dist.maybe_sync_batchnorm(bn, device) is bn

    # the real thing: DDP, forward_views per rank, gather, global loss, backward
    view1, view2 = _views()
    local = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    for case, (_, kind, loss_kwargs, labels) in CASES.items():
        model = _model(case, Path(workdir))
        ddp = DistributedDataParallel(model)
        out1, out2 = forward_views(ddp, view1[local], view2[local])
        out1, out2 = dist.gather_outputs(out1), dist.gather_outputs(out2)
        global_labels = dist.all_gather_nograd(torch.tensor(labels)[local])
        terms = _loss_fn(kind, loss_kwargs)(out1, out2, global_labels)
        terms["total"].backward()
        res[case] = {
            "terms": {k: v.detach() for k, v in terms.items()},
            "grads": {n: p.grad for n, p in model.named_parameters()},
            "labels": global_labels,
        }
    for case, (*_, labels) in STEP_CASES.items():  # the same through the trainer's step
        model = _model(case, Path(workdir))
        method = _method(case, model)
        res[case] = _step(DistributedDataParallel(model), method, view1[local], view2[local],
                          torch.tensor(labels)[local])  # fmt: skip
    torch.save(res, Path(workdir) / f"rank{rank}.pt")
    dist.cleanup()


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """1 thread in this process too: with 2 ranks on a 2-core machine, more threads only oversubscribe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict[str, Any]]]:
    """Run ``_worker`` on 2 gloo ranks; the results of rank 0 and rank 1."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this torch build")
    with scratch(tmp_path_factory, "dist") as workdir:
        for case, (model_cfg, *_) in {**CASES, **STEP_CASES}.items():  # the same initial weights in every process
            torch.manual_seed(0)
            torch.save(HiCoNet(ModelConfig(**model_cfg)).double().state_dict(), workdir / f"{case}.pt")
        torch.multiprocessing.spawn(_worker, args=(free_port(), str(workdir)), nprocs=WORLD, join=True)
        results = [torch.load(workdir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    yield results


@pytest.mark.slow
def test_setup_under_torchrun_env(ranks: list[dict[str, Any]]) -> None:
    for r, res in enumerate(ranks):
        assert res["device"] == "cpu"
        assert res["ids"] == (r, WORLD, r == 0, r, True)
        assert res["mean"].item() == pytest.approx(1.5)  # mean of 1 and 2
        assert res["broadcast"] == {"run": "chosen by rank 0"}
        assert res["run_dir"] == "runs/hico-20260101-000000"  # rank 0's, on every rank
        assert res["run_dir_chosen_here"] == ([0] if r == 0 else [])


def test_setup_waits_long_for_a_slow_rank_0(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process group's timeout is 2 h unless given: rank 0 decodes an uncached dataset alone (minutes) while
    the others wait in a barrier, and NCCL's default of 10 minutes would abort the run."""
    seen = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: seen.update(kwargs))
    dist.setup(device="cpu")
    assert seen["backend"] == "gloo" and seen["timeout"] >= timedelta(hours=2)
    dist.setup(device="cpu", timeout_s=60)
    assert seen["timeout"] == timedelta(seconds=60)


@pytest.mark.slow
def test_gather_with_grad_sums_the_gradients_of_own_rows(ranks: list[dict[str, Any]]) -> None:
    x = _toy_input().requires_grad_()
    _toy_loss(x).backward()  # the 1-process gradient of the same loss on the whole tensor
    for r, res in enumerate(ranks):
        torch.testing.assert_close(res["toy"]["gathered"], x.detach(), rtol=0, atol=0)
        # each of the WORLD ranks computed the same loss: its rows get the sum over ranks = WORLD * dL/dx_r,
        # which DDP's 1/WORLD averaging turns into dL/dtheta (checked on a real model below)
        torch.testing.assert_close(res["toy"]["grad"], WORLD * x.grad[2 * r : 2 * r + 2], **TOL)


@pytest.mark.slow
def test_gather_outputs_and_unequal_sizes(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        out = res["outputs"]
        assert out["keys"] == ["emb", "maps", "idx"]
        torch.testing.assert_close(out["emb"], torch.tensor([0.0, 0, 1, 1])[:, None].expand(4, 3))
        torch.testing.assert_close(out["maps"], torch.tensor([10.0, 10, 11, 11])[:, None, None].expand(4, 2, 2))
        assert out["idx"].tolist() == [0, 1, 10, 11]
        torch.testing.assert_close(out["emb_grad"], torch.full((2, 3), 2.0 * WORLD))
        assert "rank 0: (3, 2), rank 1: (4, 2)" in res["unequal"]


@pytest.mark.slow
def test_syncbatchnorm_needs_cuda(ranks: list[dict[str, Any]]) -> None:
    for res in ranks:
        # if torch ever supports it on cpu, maybe_sync_batchnorm may convert on cpu too
        assert res["syncbn_cpu"] is not None and "SyncBatchNorm expected input tensor to be on GPU" in res["syncbn_cpu"]
        assert res["maybe_sync_is_identity"]


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_ddp_matches_one_process(ranks: list[dict[str, Any]], case: str, tmp_path: Path) -> None:
    """Loss and DDP-averaged parameter gradients of 2 ranks x 4 pairs == 1 process x 8 pairs."""
    model_cfg, kind, loss_kwargs, labels = CASES[case]
    torch.manual_seed(0)
    model = HiCoNet(ModelConfig(**model_cfg)).double().eval()
    out1, out2 = forward_views(model, *_views())
    terms = _loss_fn(kind, loss_kwargs)(out1, out2, torch.tensor(labels))
    terms["total"].backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert max(g.abs().max().item() for g in grads.values()) > 1e-3  # a 1/WORLD error would show

    for res in ranks:
        assert res[case]["labels"].tolist() == labels
        assert res[case]["terms"].keys() == terms.keys()
        for name, value in terms.items():
            torch.testing.assert_close(res[case]["terms"][name], value.detach(), **TOL, msg=f"{case}: {name}")
        assert res[case]["grads"].keys() == grads.keys()
        for name, grad in grads.items():
            torch.testing.assert_close(res[case]["grads"][name], grad, **TOL, msg=f"{case}: grad of {name}")


def test_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    device = dist.setup()
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert dist.setup(device="cpu") == torch.device("cpu")
    assert (dist.is_dist(), dist.rank(), dist.world_size(), dist.local_rank(), dist.is_main()) == (False, 0, 1, 0, True)
    x = torch.randn(4, 3, requires_grad=True)
    assert dist.gather_with_grad(x) is x
    assert dist.all_gather_nograd(x) is x
    out = {"global": x, "labels": torch.arange(4)}
    gathered = dist.gather_outputs(out)
    assert gathered == out and gathered is not out
    mean = dist.all_reduce_mean(x)
    assert not mean.requires_grad and torch.equal(mean, x.detach())
    assert dist.all_reduce_mean(torch.tensor(3)).dtype == torch.float32
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    dist.barrier()
    dist.cleanup()
    bn = nn.BatchNorm2d(3)
    assert dist.maybe_sync_batchnorm(bn, device) is bn
    with pytest.raises(TypeError, match="'maps'"):
        dist.gather_outputs({"global": x, "maps": {"c2": x}})
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            dist.setup(device="cuda")


def test_setup_rejects_devices_torchrun_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before any process group is created
    with pytest.raises(ValueError, match="cuda:LOCAL_RANK"):
        dist.setup(device="cuda:1")
    with pytest.raises(ValueError, match="'cuda' or 'cpu'"):
        dist.setup(device="mps")
    assert not dist.is_dist()


# ------------------------------------------------- every shipped method with parts its loss does not use
TINY_RUN = [  # 3 steps of 2 + 2 pairs at 32 px
    "model.init=random", "model.image_size=32", "augment.size=32", "data.working_size=48", "train.epochs=1",
    "train.batch_size=4", "train.pairs_per_video=2", "train.max_steps=3", "train.holdout=0", "train.lr=0.01",
    "train.epoch_checkpoints=false", "train.log_every=1", "train.device=cpu", "train.workers=0", "loss.queue_size=16",
]  # fmt: skip


def _tiny_config(name: str, data: str | Path | None = None) -> MethodConfig:
    over = [o for o in TINY_RUN if not o.startswith("loss.queue_size") or name in ("mocov2", "ucl")]
    cfg = load_method(name, [*over, *([f"data.path={data}"] if data else [])])
    return resolve_classes(cfg, ["covid", "pneumonia", "regular"])  # auto: the synthetic set's 3 classes


def _unused_parameters(name: str) -> list[str]:
    """The parameters that get no gradient from the method's loss: one process, the model's every output, the
    loss, backward; those whose ``.grad`` stays None (found here, not from the trainer's reasoning)."""
    cfg = _tiny_config(name)
    torch.manual_seed(0)
    model = HiCoNet(cfg.model)
    method = build_method(cfg, model)
    gen = torch.Generator().manual_seed(0)
    v1, v2 = (torch.randn(4, 3, 32, 32, generator=gen) for _ in range(2))
    labels = torch.tensor([0, 1, -1, 0]) if cfg.data.label_rate > 0 else torch.full((4,), -1)
    method(model, v1, v2, labels)["total"].backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


def _train_worker(rank: int, jobs: list[tuple[str, int]], data: str, workdir: str) -> None:
    """One rank: for each method, the trainer of a 2-process run (DDP wrap and all) takes 3 real steps; rank 0
    saves the weights. Errors are saved, not raised (the test shows them)."""
    from hico.train import trainer

    torch.set_num_threads(1)
    errors = {}
    for name, port in jobs:
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        try:
            device = dist.setup(device="cpu", timeout_s=60)  # a hang becomes an error within a minute
            run = trainer._open_run(_tiny_config(name, data), Path(workdir) / name, None)
            try:
                t = trainer.Trainer(_tiny_config(name, data), run, device)
                t.pairs.set_epoch(0)
                t.batches.set_epoch(0, 0)
                for step, batch in zip(range(3), t.loader, strict=False):
                    t.step(batch)
                    t.step_in_epoch = step + 1
                if rank == 0:
                    torch.save({"steps": t.step_in_epoch, "model": t.model.state_dict()}, Path(workdir) / f"{name}.pt")
            finally:
                if rank == 0:
                    run.release()
        except Exception as err:  # noqa: BLE001 - reported by the test
            errors[name] = f"{type(err).__name__}: {err}"[:2000]
        finally:
            dist.cleanup()
    torch.save(errors, Path(workdir) / f"train_rank{rank}.pt")


@pytest.fixture(scope="module")
def partly_used() -> dict[str, list[str]]:
    """Every shipped method whose loss leaves some parameters without a gradient, with those parameters."""
    found = {name: _unused_parameters(name) for name in method_names()}
    return {name: unused for name, unused in found.items() if unused}


@pytest.mark.slow
def test_methods_with_unused_parts_train_under_two_processes(partly_used, tmp_path):
    """Every shipped method with parts its loss does not use trains 3 steps on 2 gloo processes, and those
    parts keep their initial weights, as in one process (a zero gradient would let Adam's weight decay move
    them; the FPN convs among them are part of the exported backbone)."""
    # the two: t1-local leaves the medium and global heads unused; t3-contrastive, since its rows build no
    # classifier (no soft_ce, num_classes 0), uses every part it builds
    assert "hico-ablation-t1-local" in partly_used and "hico-ablation-t3-contrastive" not in partly_used
    data = write_dataset(tmp_path / "set", videos_per_class=2, n_frames=4, size=48, seed=1, progress=False)
    jobs = [(name, free_port()) for name in partly_used]
    torch.multiprocessing.spawn(_train_worker, args=(jobs, str(data), str(tmp_path)), nprocs=WORLD, join=True)
    for r in range(WORLD):
        assert torch.load(tmp_path / f"train_rank{r}.pt", weights_only=False) == {}
    moved = []  # (method, number of parameters without a gradient that changed, the first one)
    for name, unused in partly_used.items():
        saved = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        assert saved["steps"] == 3, name
        trained = saved["model"]
        cfg = _tiny_config(name)
        torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
        initial = HiCoNet(cfg.model).state_dict()
        changed = [key for key in unused if not torch.equal(trained[key], initial[key])]
        if changed:
            moved.append((name, len(changed), changed[0]))
        assert not torch.equal(trained["backbone.conv1.weight"], initial["backbone.conv1.weight"]), name
    assert moved == []


@pytest.mark.slow
@pytest.mark.parametrize("case", list(STEP_CASES))
def test_train_step_under_ddp_matches_one_process(ranks: list[dict[str, Any]], case: str, tmp_path: Path) -> None:
    """hico.engine.train_step of a method on 2 ranks x 4 pairs == on 1 process x 8 pairs: terms and gradients,
    those of BYOL's predictor (outside DDP) included."""
    torch.manual_seed(0)
    model = HiCoNet(ModelConfig(**STEP_CASES[case][0])).double().eval()
    ref = _step(model, _method(case, model), *_views(), torch.tensor(STEP_CASES[case][2]))
    assert all(g is not None for g in ref["grads"].values())
    assert any(n.startswith("method.predictor.") for n in ref["grads"]) == (case == "step-byol")
    for res in ranks:
        assert res[case]["terms"].keys() == ref["terms"].keys()
        for name, value in ref["terms"].items():  # floats of float32 precision (train_step's one sync)
            assert res[case]["terms"][name] == pytest.approx(value, rel=1e-6, abs=1e-7), f"{case}: {name}"
        assert res[case]["grads"].keys() == ref["grads"].keys()
        for name, grad in ref["grads"].items():
            torch.testing.assert_close(res[case]["grads"][name], grad, **TOL, msg=f"{case}: grad of {name}")


# ------------------------------------------------- decisions every rank takes at the same step (issue 17)
def _stop_worker(rank: int, jobs: list[tuple[str, int]], data: str, workdir: str) -> None:
    """One rank of a 2-process ``Trainer.fit``: in job "stop" rank 0 ALONE gets a stop request after step 2
    (as from Ctrl-C); in job "nan" rank 1 ALONE computes a non-finite loss at step 2. What each rank saw is
    saved, never raised (a rank left waiting hits the 20 s collective timeout instead of hanging the test)."""
    from hico.train import trainer

    torch.set_num_threads(1)
    seen = {}
    for job, port in jobs:
        os.environ.update(
            RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
        )
        cfg = load_method(
            "mocov2", [*TINY_RUN, "train.epochs=2", "train.max_steps=5", "train.log_every=100", f"data.path={data}"]
        )
        t = None
        try:
            device = dist.setup(device="cpu", timeout_s=20)
            run = trainer._open_run(cfg, Path(workdir) / job, None)
            t = trainer.Trainer(cfg, run, device)
            if job == "stop" and rank == 0:
                step = t.step

                def step_then_stop(batch, step=step, t=t):
                    terms = step(batch)
                    if t.global_step == 1:  # this is step 2: the handler of Ctrl-C, on this rank only
                        t._request_stop(signal.SIGINT, None)
                    return terms

                t.step = step_then_stop
            if job == "nan" and rank == 1:
                forward = t.method.forward

                def nan_at_step_2(*args, forward=forward, t=t, **kwargs):
                    terms = forward(*args, **kwargs)
                    return {k: v * float("nan") for k, v in terms.items()} if t.global_step == 1 else terms

                t.method.forward = nan_at_step_2
            t.fit()
            seen[job] = {"raised": None}
        except BaseException as err:  # noqa: BLE001 - reported by the test
            seen[job] = {"raised": type(err).__name__, "message": str(err)[:500]}
        finally:
            seen[job]["global_step"] = None if t is None else t.global_step
            if rank == 0 and t is not None:
                run.release()
            dist.cleanup()
    torch.save(seen, Path(workdir) / f"stop_rank{rank}.pt")


@pytest.mark.slow  # two processes
def test_stop_and_non_finite_loss_on_one_rank_stop_every_rank(tmp_path: Path) -> None:
    """A stop requested on rank 0 only: both ranks stop after step 2 and rank 0 saves last.pt at step 2 (before:
    rank 1 went on alone and died waiting). A non-finite loss on rank 1 only: both ranks raise
    NonFiniteLossError at step 2, naming rank 1 (before: rank 0 waited in the backward's all-reduce)."""
    from hico.train.rundir import load_checkpoint

    data = write_dataset(tmp_path / "set", videos_per_class=2, n_frames=4, size=48, seed=1, progress=False)
    jobs = [("stop", free_port()), ("nan", free_port())]
    torch.multiprocessing.spawn(_stop_worker, args=(jobs, str(data), str(tmp_path)), nprocs=WORLD, join=True)
    seen = [torch.load(tmp_path / f"stop_rank{r}.pt", weights_only=False) for r in range(WORLD)]
    for r in range(WORLD):
        assert seen[r]["stop"]["raised"] == "KeyboardInterrupt", (r, seen[r]["stop"])
        assert seen[r]["stop"]["global_step"] == 2, r
    for r in range(WORLD):
        assert seen[r]["nan"]["raised"] == "NonFiniteLossError", (r, seen[r]["nan"])
        assert "on rank 1 at step 2" in seen[r]["nan"]["message"], r
        assert seen[r]["nan"]["global_step"] == 1, r
    assert load_checkpoint(tmp_path / "stop" / "checkpoints" / "last.pt")["global_step"] == 2
    status = json.loads((tmp_path / "stop" / "status.json").read_text())
    assert status["state"] == "interrupted"
    assert json.loads((tmp_path / "nan" / "status.json").read_text())["state"] == "failed"


def test_sync_bn_choice_keeps_compiled_graphs_whole_unless_forced() -> None:
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    assert dist.sync_bn_choice("auto", False, cuda, 2) == (True, "")
    use, note = dist.sync_bn_choice("auto", True, cuda, 2)  # compile: BatchNorm per GPU, and it says so
    assert not use and "BatchNorm per GPU" in note
    use, note = dist.sync_bn_choice(True, True, cuda, 2)  # forced: converted, with a warning
    assert use and "breaks the compiled graph" in note
    assert dist.sync_bn_choice(False, False, cuda, 2) == (False, "")
    assert dist.sync_bn_choice("auto", False, cuda, 1) == (False, "")  # one process: nothing to synchronise
    assert dist.sync_bn_choice(True, False, cpu, 2) == (False, "")  # gloo on the CPU cannot
    with pytest.raises(ValueError, match="train.sync_bn must be auto, true or false"):
        load_method("hico", ["train.sync_bn=sometimes"])
