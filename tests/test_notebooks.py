"""The tutorial notebooks: all seven are there, committed without outputs, linked from the README, self-contained,
on one colour scale for similarity maps, short in prose (SHORT_PROSE), and each runs top to bottom on data_samples/
(its run time and the bytes it wrote are printed; all seven together write at most WRITE_BUDGET_MB)."""

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
SIMILARITY_MAPS = ["02_infonce", "03_peer_level", "04_cross_level"]  # the notebooks that draw cosine-similarity maps
SHORT_PROSE = EXPECTED  # every notebook's markdown is held to MAX_PROSE_WORDS (about 800 words of prose each)
MAX_PROSE_WORDS = 850
WRITE_BUDGET_MB = 200  # what one pass over all notebooks may leave in HICO_RUNS and a shared HICO_CACHE
WRITTEN: dict[str, tuple[int, int]] = {}  # (runs, cache) bytes each notebook left, by test_notebook_runs_top_to_bottom


def _bytes_under(folder):
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _sources(path, cell_type=None):
    nb = nbformat.read(path, as_version=4)
    return [c.source for c in nb.cells if cell_type is None or c.cell_type == cell_type]


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


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_is_self_contained(path):
    for i, text in enumerate(_sources(path)):
        for outside in ("METHOD.md", "../shared", "shared/docs", "shared/seeds"):
            assert outside not in text, f"{path.name}: cell {i} points to {outside}; say it or link docs/method.md"


@pytest.mark.parametrize("stem", SHORT_PROSE)
def test_notebook_prose_is_short(stem):
    words = sum(len(text.split()) for text in _sources(NOTEBOOKS / f"{stem}.ipynb", "markdown"))
    assert words <= MAX_PROSE_WORDS, (
        f"{stem}: {words} words of markdown (> {MAX_PROSE_WORDS}); cut repetition, link docs/method.md for details"
    )


def test_method_summary_the_notebooks_link_is_there():
    linked = {path.name for path in PATHS if any("../docs/method.md" in t for t in _sources(path, "markdown"))}
    assert linked, "no notebook links docs/method.md"
    assert (ROOT / "docs" / "method.md").is_file()


def test_similarity_scale_puts_red_at_plus_one():
    """The notebooks' texts say red = similar, blue = opposite; check that against plotly's own colours."""
    from plotly.colors import get_colorscale, hex_to_rgb, unlabel_rgb

    from hico.plotting import SIMILARITY_SCALE, pair_similarity_map, similarity_coloraxis

    def rgb(colour):
        return hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)

    scale = get_colorscale(SIMILARITY_SCALE)
    (r_lo, _, b_lo), (r_hi, _, b_hi) = rgb(scale[0][1]), rgb(scale[-1][1])
    assert r_hi > b_hi and b_lo > r_lo
    assert similarity_coloraxis()["colorscale"] == SIMILARITY_SCALE
    drawn = pair_similarity_map([[1.0, 0.0], [0.0, 1.0]], ["a0", "b0"], "t").layout.coloraxis
    assert [c for _, c in drawn.colorscale] == [c for _, c in scale]
    assert (drawn.cmin, drawn.cmax) == (-1, 1)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_similarity_maps_use_the_shared_scale(path):
    code = "\n".join(_sources(path, "code"))
    assert "RdBu" not in code, f"{path.name}: names a similarity colour scale itself; use hico.plotting's"
    if path.stem in SIMILARITY_MAPS:
        assert any(name in code for name in ("SIMILARITY_SCALE", "similarity_coloraxis", "pair_similarity_map")), (
            f"{path.name}: draw its similarity maps on hico.plotting's SIMILARITY_SCALE"
        )


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
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch, capsys, request, _poll_in_slices):
    from nbclient import NotebookClient

    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))  # the kernel inherits these
    monkeypatch.setenv("HICO_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    nb = nbformat.read(path, as_version=4)
    if path.stem == "07_embeddings_umap":
        # Notebook 07 maps a run of the demo preset, made in the notebook when RUN is None: the session's demo run
        # (conftest.demo_run, checked by test_workflow) is that same run, so the notebook maps it here instead of
        # training it a second time (100 s). Run alone, 07 takes about 2 minutes and writes 59 MB of runs.
        cell = next(c for c in nb.cells if c.cell_type == "code" and "RUN = None" in c.source)
        cell.source = cell.source.replace("RUN = None", f"RUN = Path({str(request.getfixturevalue('demo_run'))!r})")
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    seconds = time.perf_counter() - start
    WRITTEN[path.stem] = (_bytes_under(tmp_path / "runs"), _bytes_under(tmp_path / "cache"))
    with capsys.disabled():
        runs_mb, cache_mb = (b / 1e6 for b in WRITTEN[path.stem])
        print(
            f"\n  {path.name} ran in {seconds:.1f} s, wrote {runs_mb:.1f} MB of runs, {cache_mb:.1f} MB of cache",
            end="",
        )
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    # The notebooks share one frame cache when run in a row, so it counts once.
    total = sum(r for r, _ in WRITTEN.values()) + max(c for _, c in WRITTEN.values())
    assert total <= WRITE_BUDGET_MB * 1e6, (
        f"the notebooks run so far wrote {total / 1e6:.0f} MB (> {WRITE_BUDGET_MB} MB); runs: "
        + ", ".join(f"{k} {r / 1e6:.0f} MB" for k, (r, _) in WRITTEN.items())
    )
