"""The tutorial notebooks: all seven are there, committed without outputs, linked from the README, and each
runs top to bottom on data_samples/ (its run time is printed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXPECTED = [
    "01_ultrasound_videos_and_pairs",
    "02_infonce",
    "03_peer_level",
    "04_cross_level",
    "05_softened_ce",
    "06_pretrain_and_evaluate",
    "07_embeddings_umap",
]
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_the_seven_tutorials_are_there():
    assert [p.stem for p in PATHS] == EXPECTED


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_notebook_holds_no_outputs(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them (Edit > Clear All Outputs) and save"
    assert "widgets" not in nb.metadata, f"{path.name}: saved widget state in its metadata; clear it"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_readme_links_the_notebook(path):
    assert f"notebooks/{path.name}" in (ROOT / "README.md").read_text()


@pytest.fixture
def _poll_in_slices(monkeypatch):
    """Work around jupyter/nbclient#312: after a cell that shows ipywidgets, the client's single
    ``socket.poll(timeout)`` sometimes misses the kernel's reply and waits out the whole cell timeout (600 s
    here). Polling in 1 s slices bounds such a stall to 1 s."""
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    async def get_msg(self, timeout=None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))
            if await self.socket.poll(int(left * 1000)):
                return await self._recv()
            if deadline is not None and time.monotonic() >= deadline:
                raise Empty

    monkeypatch.setattr(AsyncZMQSocketChannel, "get_msg", get_msg)


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, capsys, _poll_in_slices):
    from nbclient import NotebookClient

    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))  # the kernel inherits these
    monkeypatch.setenv("HICO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n  {path.name} ran in {seconds:.1f} s", end="")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
