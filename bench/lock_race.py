"""How often two processes both own a run directory: N trials of P processes calling ``RunDir.create`` on the
same fresh folder at once (released together at a barrier), counting the trials where more than one got it.

    python bench/lock_race.py [--trials 400] [--procs 2] [--pause 0]

Every process that gets the run keeps it (holds its lock) until all have tried, as a training run would.
``--pause S`` sleeps S seconds just before and just after a process opens the lock file (a process descheduled
at those moments), which widens the window of a lock that is taken in two steps. Prints the count; 0 is the target.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path


def contender(root: str, start, done, results, pause: float) -> None:
    """One process: wait for the others, try to create the run, report, keep it until all have tried."""
    import hico.train.rundir as rundir

    if pause:
        real_open = os.open

        def slow_open(path, *a, **k):
            lock = str(path).endswith(".lock")
            time.sleep(pause if lock else 0)
            fd = real_open(path, *a, **k)
            time.sleep(pause if lock else 0)
            return fd

        rundir.os.open = slow_open  # this process only: its os module is its own copy after fork
    start.wait()
    try:
        rundir.RunDir.create(root, {"owner": os.getpid()})
        results.put(True)
    except FileExistsError:
        results.put(False)
    done.wait()


def trial(root: Path, procs: int, pause: float = 0.0) -> int:
    """Run one trial in the fresh folder ``root``; returns how many processes got the run."""
    ctx = mp.get_context("fork")
    start, done, results = ctx.Barrier(procs), ctx.Barrier(procs), ctx.Queue()
    workers = [ctx.Process(target=contender, args=(str(root), start, done, results, pause)) for _ in range(procs)]
    for w in workers:
        w.start()
    owners = sum(results.get(timeout=60) for _ in workers)
    for w in workers:
        w.join(timeout=60)
    return owners


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=400)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument(
        "--pause", type=float, default=0.0, help="seconds a process sleeps before and after opening the lock file"
    )
    args = p.parse_args()
    import hico

    tick = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        counts = [trial(Path(tmp) / f"run-{i}", args.procs, args.pause) for i in range(args.trials)]
    shared = sum(c > 1 for c in counts)
    nobody = sum(c == 0 for c in counts)
    print(f"hico from {Path(hico.__file__).parent}")
    print(
        f"{shared} of {args.trials} trials had more than one owner ({args.procs} processes each, pause "
        f"{args.pause} s); {nobody} had none; {time.perf_counter() - tick:.1f} s"
    )


if __name__ == "__main__":
    main()
