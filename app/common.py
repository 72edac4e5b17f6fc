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


MAIN_SCRIPT = Path(__file__).resolve().parent / "main.py"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")


def exposure_problem() -> str | None:
    """Why this server would expose the workbench beyond this machine without being asked to, or None.

    ``app/.streamlit/config.toml`` binds 127.0.0.1 and turns usage statistics off, and Streamlit reads it
    whatever the working folder. A Streamlit that does not read a config file beside the script (an older
    version), started from another folder, falls back to its defaults: every network interface, statistics on.
    An address or statistics setting the user made (flag, environment variable, config file) is respected.
    """
    from streamlit import config

    how = (
        "Restart it with `make run`, or `streamlit run app/main.py --server.address 127.0.0.1 "
        "--browser.gatherUsageStats false`; to serve other machines on purpose, pass --server.address 0.0.0.0."
    )
    address = config.get_option("server.address")
    if address not in LOCAL_ADDRESSES and not config.is_manually_set("server.address"):
        return f"This server listens on every network interface, which nobody asked for: nothing is shown. {how}"
    if config.get_option("browser.gatherUsageStats") and not config.is_manually_set("browser.gatherUsageStats"):
        return f"This server sends usage statistics, which nobody asked for: nothing is shown. {how}"
    return None


def command_line_paths() -> list[Path]:
    """Paths given after ``--`` on the command line (``streamlit run app/main.py -- /data/videos``).

    Streamlit sets ``sys.argv`` to the script and these arguments; in any other process (a test runner) the
    arguments are not the app's, and there are none.
    """
    if not sys.argv or Path(sys.argv[0]).resolve() != MAIN_SCRIPT:
        return []
    return [Path(a).expanduser().resolve() for a in sys.argv[1:] if not a.startswith("-")]


def default_dataset() -> Path:
    """The dataset the app opens on: the first folder given on the command line, else ``data_samples/``."""
    return next((p for p in command_line_paths() if p.is_dir()), SAMPLES)


def allowed_roots() -> list[Path]:
    """Dataset folders must be inside one of these: the project, the home folder, paths from the command line."""
    return [PROJECT_ROOT, Path.home().resolve(), *command_line_paths()]


def check_dataset_path(text: str) -> Path:
    """The resolved dataset folder named by ``text``; ValueError (one line) when it is outside the allowed roots
    or not a folder."""
    path = Path(text.strip() or default_dataset()).expanduser().resolve()
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
    from hico.data import load_dataset as read_dataset
    from hico.data.cache import default_cache_dir

    return read_dataset(path, size=WORKING_SIZE, cache_dir=default_cache_dir(), progress=False)


def dataset_path() -> Path:
    """The dataset chosen on the Data page; in a new session (a reload), the one in the URL's ``?dataset=``, else
    :func:`default_dataset`. The URL is kept naming it, so a reload of any page keeps the dataset."""
    chosen = st.session_state.get("dataset")
    if chosen is None:
        chosen = str(default_dataset())
        if asked := st.query_params.get("dataset"):
            try:
                chosen = str(check_dataset_path(asked))
            except ValueError:
                pass  # a URL naming a folder the app may not read opens on the default
    choose_dataset(Path(chosen))
    return Path(chosen)


def choose_dataset(path: Path) -> None:
    """Make ``path`` the session's dataset (what the Train and Evaluate pages use) and name it in the URL."""
    st.session_state["dataset"] = str(path)
    if st.query_params.get("dataset") != str(path):
        st.query_params["dataset"] = str(path)


def readable_runs(all_runs: list) -> list:
    """The runs whose files can be read; each unreadable one (a corrupt config.yaml or status.json) is shown as a
    warning with its reason, so that one broken run never hides the others."""
    for info in all_runs:
        if info.state == "unreadable":
            st.warning(f"**{info.name}** is unreadable: {info.error}")
    return [info for info in all_runs if info.state != "unreadable"]
