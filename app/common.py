"""What the app's pages share: the allowed dataset roots, the cached dataset, the session's choices."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import streamlit as st

from hico.runs import PROJECT_ROOT, runs_root  # noqa: F401 (the pages import runs_root from here)

SAMPLES = PROJECT_ROOT / "data_samples"
WORKING_SIZE = 128  # the app shows and trains at small sizes: frames are cached at this size


def _warm_up() -> None:  # torch + torchvision take seconds to import: do it while the first page draws
    import importlib

    for name in ("hico.demo", "hico.runs", "hico.eval.features"):
        importlib.import_module(name)


threading.Thread(target=_warm_up, name="hico-warm-up", daemon=True).start()  # once: this module is imported once


def command_line_paths() -> list[Path]:
    """Paths given after ``--`` on the command line (``streamlit run app/main.py -- /data/videos``)."""
    return [Path(a).expanduser().resolve() for a in sys.argv[1:] if not a.startswith("-")]


def allowed_roots() -> list[Path]:
    """Dataset folders must be inside one of these: the project, the home folder, paths from the command line."""
    return [PROJECT_ROOT, Path.home().resolve(), *command_line_paths()]


def check_dataset_path(text: str) -> Path:
    """The resolved dataset folder named by ``text``; ValueError (one line) when it is outside the allowed roots
    or not a folder."""
    path = Path(text.strip() or SAMPLES).expanduser().resolve()
    if not any(path == root or root in path.parents for root in allowed_roots()):
        roots = ", ".join(str(r) for r in allowed_roots())
        raise ValueError(
            f"{path} is outside the folders this app may read ({roots}); "
            "start it with `streamlit run app/main.py -- PATH` to allow PATH"
        )
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder")
    return path


@st.cache_resource(show_spinner="Reading the videos (decoded once, then cached)...", max_entries=4)
def load_dataset(path: str):
    """The dataset at ``path``, every video decoded at :data:`WORKING_SIZE` (cached across reruns and sessions)."""
    from hico.data import scan
    from hico.data.cache import default_cache_dir

    videos = scan(path, size=WORKING_SIZE, cache_dir=default_cache_dir())
    videos.load_all(progress=False)
    if not videos.videos:
        raise ValueError(f"no readable video in {path} ({len(videos.unreadable)} unreadable files)")
    return videos


def dataset_path() -> Path:
    """The dataset chosen on the Data page (default ``data_samples/``)."""
    return Path(st.session_state.get("dataset", str(SAMPLES)))


def readable_runs(all_runs: list) -> list:
    """The runs whose files can be read; each unreadable one (a corrupt config.yaml or status.json) is shown as a
    warning with its reason, so that one broken run never hides the others."""
    for info in all_runs:
        if info.state == "unreadable":
            st.warning(f"**{info.name}** is unreadable: {info.error}")
    return [info for info in all_runs if info.state != "unreadable"]
