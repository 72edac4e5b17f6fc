"""The first run on a GPU machine: every check once, one table at the end (run it through bench/gpu_smoke.sh).

    bash bench/gpu_smoke.sh                  # GPU: 224 px, 20 steps per method, about 10 minutes on one GPU
    bash bench/gpu_smoke.sh --cpu            # the same checks CI-sized on the CPU (32 px, 2 steps), a few minutes
    bash bench/gpu_smoke.sh --out DIR        # keep the runs and logs in DIR (default: a new temporary folder)

Offline: every model starts from ``model.init=random``, the data is the bundled data_samples/ (decoded into
HICO_CACHE). Each check is wrapped: a failing check is reported and the next one runs. The checks:

- env: torch and CUDA versions, the device (fails in GPU mode when CUDA is not available);
- throughput: ``bench/train_throughput.py`` on the device (GPU: 224 px, 64 pairs); its images/s and full / bare;
- step METHOD, for every method (hico.config.method_names()): ``hico.train.trainer.pretrain`` takes 20 steps
  (CPU: 2); steps/s is the median of the trainer's steps after the first; for hico and ucl also the peak CUDA
  memory and the host syncs per step (``torch.cuda.set_sync_debug_mode("warn")`` around each step, warnings
  counted);
- compile: GPU: a hico run with ``train.compile=true``, 20 steps, graph breaks logged (``TORCH_LOGS`` style, via
  torch._logging) and counted, steps/s after two warm-up steps. CPU: no inductor build; ``torch._dynamo.explain``
  traces the model's forward once and counts its graphs and graph breaks (a cheap stand-in: it says so);
- ctrl-c + resume: ``hico pretrain`` in a subprocess, SIGINT after its 2nd step (exit code 130, status
  "interrupted", last.pt), then ``--resume`` to the run's last step (exit code 0, status "finished");
- torchrun CONFIG, for every method whose loss leaves parameters without a gradient (found by one backward here):
  ``torchrun --standalone --nproc_per_node=2 -m hico.cli pretrain``, 3 steps; those parameters must keep their
  initial weights. With 2 GPUs: NCCL at the GPU sizes; with one GPU or --cpu: gloo on the CPU at 32 px.
  --cpu runs only the first such configuration (a launch costs ~20 s on a 2-core machine; tests/test_dist.py
  trains every one on two gloo processes).

--cpu runs one thread per process unless OMP_NUM_THREADS says otherwise. Exit code 0 when every check passed,
1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from hico.config import load_method, method_from_dict, method_names, resolve_classes
from hico.methods import build_method
from hico.models import HiCoNet
from hico.train.trainer import Trainer, pretrain

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data_samples"
PROFILED = ("hico", "ucl")  # methods whose peak memory and host syncs are reported


@dataclass
class Mode:
    """The sizes of one mode: GPU (the issue's) or --cpu (CI-sized)."""

    device: str
    size: int
    working_size: int
    batch_size: int
    pairs_per_video: int
    steps: int
    throughput: list[str]
    torchrun_configs: int | None  # None: every configuration with unused parts

    def overrides(self, name: str, steps: int | None = None) -> list[str]:
        """The ``--set`` overrides of a short run of method ``name`` on data_samples/."""
        over = [
            "model.init=random", f"model.image_size={self.size}", f"augment.size={self.size}",
            f"data.working_size={self.working_size}", f"train.batch_size={self.batch_size}",
            f"train.pairs_per_video={self.pairs_per_video}", f"train.max_steps={steps or self.steps}",
            f"train.device={self.device}", "train.log_every=1", "train.knn_every=0", "train.epoch_checkpoints=false",
        ]  # fmt: skip
        if name == "uscl":
            over += ["model.num_classes=3", "data.label_rate=0.5"]  # data_samples has 3 classes
        if name in ("mocov2", "ucl"):
            over += ["loss.queue_size=256"]  # a queue smaller than the data set's frames per epoch x 2
        return over


GPU = Mode("cuda", 224, 256, 32, 32, 20, ["--device", "cuda", "--size", "224", "--pairs", "64"], None)
CPU = Mode("cpu", 32, 48, 8, 2, 2, ["--device", "cpu", "--size", "32", "--pairs", "4", "--reps", "1",
                                    "--loader-steps", "1"], 1)  # fmt: skip


@dataclass
class Result:
    """One row of the final table."""

    check: str
    passed: bool
    figures: str


def run_check(results: list[Result], name: str, fn: Callable[[], str]) -> None:
    """Run one check, ``fn`` returning its figures (raising on failure); record and print the outcome."""
    print(f"--- {name}", flush=True)
    t = time.perf_counter()
    try:
        figures, passed = fn(), True
    except Exception as e:  # noqa: BLE001 - one failing check never stops the others
        traceback.print_exc()
        figures, passed = f"{type(e).__name__}: {e}".splitlines()[0][:300], False
    figures = f"{figures}; {time.perf_counter() - t:.0f} s" if figures else f"{time.perf_counter() - t:.0f} s"
    results.append(Result(name, passed, figures))
    print(f"{'PASS' if passed else 'FAIL'} {name}: {figures}", flush=True)


def table(results: list[Result]) -> str:
    """The final table: check, status, figures; one row per check."""
    width = max([len("check"), *(len(r.check) for r in results)])
    rows = [f"{'check':<{width}}  status  figures", f"{'-' * width}  ------  -------"]
    rows += [f"{r.check:<{width}}  {'PASS' if r.passed else 'FAIL':<6}  {r.figures}" for r in results]
    failed = sum(not r.passed for r in results)
    rows.append(f"{len(results) - failed} passed, {failed} failed")
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------------- checks
def check_env(mode: Mode) -> str:
    cuda = torch.cuda.is_available()
    figures = f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}, python {sys.version.split()[0]}"
    if cuda:
        names = {torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())}
        figures += f", {torch.cuda.device_count()} GPU(s): {', '.join(sorted(names))}"
    else:
        figures += f", no GPU, {os.cpu_count()} CPU cores"
    if mode.device == "cuda" and not cuda:
        raise RuntimeError(f"CUDA is not available ({figures}); use --cpu for the dry run")
    return figures


def check_throughput(mode: Mode, out: Path) -> str:
    cmd = [sys.executable, "bench/train_throughput.py", *mode.throughput, "--data", str(DATA)]
    text = run_logged(cmd, out / "throughput.log", timeout=600)
    full = re.search(r"full HiCo step\s+([\d.]+) images/s", text)
    ratio = re.search(r"ratio full / bare \(time\): ([\d.]+)", text)
    if not (full and ratio):
        raise RuntimeError(f"no images/s in its output (see {out / 'throughput.log'})")
    return f"full step {full.group(1)} images/s, full / bare {ratio.group(1)}"


@contextmanager
def timed_steps(cuda: bool) -> Iterator[list[tuple[float, int]]]:
    """Time every ``Trainer.step`` in this block and count its host syncs (CUDA only; 0 on the CPU)."""
    record: list[tuple[float, int]] = []
    original = Trainer.step

    def step(self: Trainer, batch: dict) -> dict[str, float]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            t = time.perf_counter()
            try:
                terms = original(self, batch)
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
        if cuda:
            torch.cuda.synchronize()
        syncs = sum("synchroniz" in str(w.message) for w in caught)
        record.append((time.perf_counter() - t, syncs))
        return terms

    Trainer.step = step
    try:
        yield record
    finally:
        Trainer.step = original


def finished(run: Path, steps: int) -> None:
    """Raise unless the run's status is "finished" after ``steps`` steps."""
    status = json.loads((run / "status.json").read_text())
    if status.get("state") != "finished":
        raise RuntimeError(f"status {status.get('state')!r}: {status.get('error', '')}")
    done = [r["step"] for r in read_metrics(run) if r.get("kind") == "step"]
    if not done or done[-1] != steps:
        raise RuntimeError(f"the run logged steps {done}, not 1..{steps}")


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def check_steps(mode: Mode, name: str, out: Path, extra: tuple[str, ...] = ()) -> str:
    cuda = mode.device == "cuda"
    cfg = load_method(name, [*mode.overrides(name), *extra, f"data.path={DATA}"])
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    run = out / "steps" / name
    with timed_steps(cuda) as record:
        pretrain(cfg, out=run, progress=False)
    finished(run, mode.steps)
    shutil.rmtree(run)  # checkpoints of 25 methods add up; a failed run stays for a look
    figures = f"{len(record)} steps, {1 / statistics.median(s for s, _ in record[1:] or record):.2f} steps/s"
    if name in PROFILED:
        syncs = [n for _, n in record[1:] or record]
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if cuda else "n/a on CPU"
        figures += f", peak memory {peak}, host syncs/step {max(syncs) if cuda else 'n/a on CPU'}"
    return figures


def check_compile(mode: Mode, out: Path) -> str:
    from torch._dynamo.utils import counters

    if mode.device == "cpu":
        cfg = resolve_classes(load_method("hico", mode.overrides("hico")), ["a", "b", "c"])
        model = HiCoNet(cfg.model)
        outputs = build_method(cfg, model).outputs
        x = torch.randn(2 * mode.batch_size, 3, mode.size, mode.size)
        explained = torch._dynamo.explain(model)(x, outputs=outputs)
        for reason in explained.break_reasons:
            print(f"graph break: {reason.reason}")
        return (
            f"CPU stand-in: torch._dynamo.explain of the model's forward (no inductor, no training): "
            f"{explained.graph_count} graph(s), {explained.graph_break_count} graph break(s)"
        )
    torch._logging.set_logs(graph_breaks=True)  # each break is logged with its reason as it happens
    counters.clear()
    run = out / "compile"
    cfg = load_method("hico", [*mode.overrides("hico"), "train.compile=true", f"data.path={DATA}"])
    try:
        with timed_steps(cuda=False) as record:  # no sync counting: the compiled step is not the profiled one
            pretrain(cfg, out=run, progress=False)
    finally:
        torch._logging.set_logs(graph_breaks=False)
    finished(run, mode.steps)
    breaks = counters["graph_break"]
    warm = record[2:] or record
    return (
        f"{sum(breaks.values())} graph break(s) ({len(breaks)} distinct), compiled "
        f"{1 / statistics.median(s for s, _ in warm):.2f} steps/s after 2 warm-up steps, first step "
        f"{record[0][0]:.1f} s"
    )


def check_interrupt(mode: Mode, out: Path) -> str:
    total = 8 if mode.device == "cpu" else 100
    run = out / "interrupt"
    cmd = [sys.executable, "-m", "hico.cli", "pretrain", "--config", "hico", "--data", str(DATA), "--out", str(run),
           "--no-progress", *set_args(mode.overrides("hico", steps=total))]  # fmt: skip
    with open(out / "interrupt.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while proc.poll() is None and logged_steps(run) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:  # it did not stop: leave nothing running
                proc.kill()
                proc.wait()
    status = json.loads((run / "status.json").read_text())
    stopped = logged_steps(run)
    if rc != 130 or status.get("state") != "interrupted" or not (run / "checkpoints" / "last.pt").is_file():
        raise RuntimeError(f"after SIGINT: exit code {rc} (not 130), status {status.get('state')!r}, step {stopped}")
    if stopped >= total:
        raise RuntimeError(f"the run had finished ({stopped} steps) before the SIGINT arrived")
    cmd = [sys.executable, "-m", "hico.cli", "pretrain", "--resume", str(run), "--no-progress"]
    run_logged(cmd, out / "resume.log", timeout=600)
    finished(run, total)
    steps = [r["step"] for r in read_metrics(run) if r.get("kind") == "step"]
    if steps != list(range(1, total + 1)):
        raise RuntimeError(f"steps logged after the resume: {steps}")
    return f"SIGINT after step 2, stopped at step {stopped}: exit code 130, interrupted, last.pt; --resume went on to step {total}"


def logged_steps(run: Path) -> int:
    try:
        return max((r["step"] for r in read_metrics(run) if r.get("kind") == "step"), default=0)
    except (OSError, ValueError):  # not there yet, or a line half written
        return 0


def unused_parameters(name: str) -> list[str]:
    """The model's parameters that method ``name``'s loss leaves without a gradient (one backward, 32 px, CPU)."""
    cfg = resolve_classes(load_method(name, CPU.overrides(name)), ["a", "b", "c"])
    model = HiCoNet(cfg.model)
    method = build_method(cfg, model)
    v1, v2 = torch.randn(2, 4, 3, CPU.size, CPU.size)
    labels = torch.tensor([0, 1, -1, 0]) if cfg.model.num_classes else torch.full((4,), -1)
    method(model, v1, v2, labels)["total"].backward()
    return [n for n, p in model.named_parameters() if p.grad is None]


def check_torchrun(mode: Mode, name: str, unused: list[str], out: Path) -> str:
    nccl = mode.device == "cuda" and torch.cuda.device_count() >= 2
    sizes = mode if nccl else CPU
    steps = 3
    run = out / "torchrun" / name
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "hico.cli",
           "pretrain", "--config", name, "--data", str(DATA), "--out", str(run), "--no-progress",
           *set_args(sizes.overrides(name, steps=steps))]  # fmt: skip
    run_logged(cmd, out / "torchrun" / f"{name}.log", timeout=600)
    finished(run, steps)
    cfg = method_from_dict(yaml.safe_load((run / "config.yaml").read_text()))
    torch.manual_seed(cfg.train.seed)  # the trainer's initial weights
    initial = HiCoNet(cfg.model).state_dict()
    trained = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]
    moved = [k for k in unused if not torch.equal(trained[k].cpu(), initial[k])]
    if moved:
        raise RuntimeError(f"{len(moved)} unused parameter(s) changed, e.g. {moved[0]}")
    shutil.rmtree(run)
    backend = "nccl, 2 GPUs" if nccl else "gloo on CPU"
    return f"{backend}, {steps} steps, {len(unused)} unused parameters kept their initial weights"


def set_args(overrides: list[str]) -> list[str]:
    return [arg for o in overrides for arg in ("--set", o)]


def run_logged(cmd: list[str], log: Path, timeout: float) -> str:
    """Run ``cmd`` in the repository with its output in ``log``; raise with its last line unless it exits 0."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    text = proc.stdout + proc.stderr
    log.write_text(text)
    if proc.returncode != 0:
        last = [line for line in text.splitlines() if line.strip()][-1:] or [""]
        raise RuntimeError(f"exit code {proc.returncode}: {last[0][:200]} (log: {log})")
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="the dry run: the same checks CI-sized on the CPU")
    p.add_argument(
        "--out", type=Path, help="a new or empty folder for the runs and logs (default: a new temporary folder)"
    )
    args = p.parse_args(argv)
    if args.out is not None and args.out.is_dir() and any(args.out.iterdir()):
        p.error(f"--out {args.out} is not empty: give a new or empty folder (the runs are created inside it)")
    mode = CPU if args.cpu else GPU
    if args.cpu:  # on a busy 2-core machine a second thread waits for a core at every operation (7x slower)
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # the subprocesses too
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    out = (args.out or Path(tempfile.mkdtemp(prefix="hico-gpu-smoke-"))).resolve()  # the checks run in the repo
    out.mkdir(parents=True, exist_ok=True)
    print(f"runs and logs in {out}", flush=True)

    results: list[Result] = []
    run_check(results, "env", lambda: check_env(mode))
    run_check(results, "throughput", lambda: check_throughput(mode, out))
    for name in method_names():
        run_check(results, f"step {name}", lambda name=name: check_steps(mode, name, out))
    run_check(results, "compile", lambda: check_compile(mode, out))
    run_check(results, "ctrl-c + resume", lambda: check_interrupt(mode, out))
    partly_used: dict[str, list[str]] = {}
    run_check(results, "unused parts", lambda: find_partly_used(mode, partly_used))
    for name in list(partly_used)[: mode.torchrun_configs]:
        run_check(results, f"torchrun {name}", lambda name=name: check_torchrun(mode, name, partly_used[name], out))

    print(f"\n{table(results)}\nruns and logs in {out}")
    return 0 if all(r.passed for r in results) else 1


def find_partly_used(mode: Mode, found: dict[str, list[str]]) -> str:
    """Fill ``found`` with every method whose loss leaves parameters without a gradient."""
    for name in method_names():
        unused = unused_parameters(name)
        if unused:
            found[name] = unused
    if not found:
        raise RuntimeError("no method leaves parameters unused: the torchrun checks would test nothing")
    ran = len(found) if mode.torchrun_configs is None else min(len(found), mode.torchrun_configs)
    return f"{len(found)} configuration(s) with unused parts; torchrun runs {ran} of them"


if __name__ == "__main__":
    sys.exit(main())
