"""Run tutorial notebooks headless and save them with their outputs, for a class that should not wait for them.

    .venv/bin/python notebooks/prerun.py OUTDIR [NOTEBOOK ...]     # default: all notebooks/*.ipynb

The executed copies go to OUTDIR (the committed notebooks stay free of outputs). This works around
jupyter/nbclient#312: after a cell that shows ipywidgets, the client's single ``socket.poll(timeout)`` can miss the
kernel's reply and wait out the whole cell timeout; polling in 1 s slices bounds such a stall to 1 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from queue import Empty


def poll_in_slices() -> None:
    """Patch jupyter_client so that waiting for a kernel message polls its socket in 1 s slices."""
    from jupyter_client.channels import AsyncZMQSocketChannel

    async def get_msg(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty

    AsyncZMQSocketChannel.get_msg = get_msg


def main(argv: list[str]) -> int:
    """Execute the notebooks named in ``argv[1:]`` (all by default) into the folder ``argv[0]``."""
    if not argv:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    import nbformat
    from nbclient import NotebookClient

    here = Path(__file__).resolve().parent
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    poll_in_slices()
    for path in [Path(p) for p in argv[1:]] or sorted(here.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
        nbformat.write(nb, out / path.name)
        print(f"{path.name}: {time.perf_counter() - start:.0f} s -> {out / path.name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
