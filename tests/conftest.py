"""Shared fixtures: tiny media files written on the fly, the tiny-run settings, one tiny synthetic set, one short
demo run, one tiny study and one full demo run for the whole session, and the location of the real data."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

# One thread per process unless the caller says otherwise: the tests' tensors are tiny, and on a busy 2-core
# machine torch's second thread waits for a core at every operation (a tiny run took 7x longer with 2 threads under
# load). Set before torch is imported; subprocesses (the app's runs, the notebooks' kernels) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

TINY_RUN = (
    "model.init=random",
    "augment.size=32",
    "data.working_size=48",
    "train.batch_size=8",
    "train.pairs_per_video=2",
    "train.log_every=1",
)
"""Overrides that make a pretraining run on :func:`tiny_data` take seconds on a 2-core CPU; a test adds what it
checks (epochs, held-out videos, k-NN, checkpoints) after them."""

DEMO_TINY = (*TINY_RUN, "train.epochs=2", "train.knn_frames_per_video=2")
"""``hico pretrain --preset demo`` on data_samples/ in seconds: 2 epochs (snapshots at epochs 0, 1 and 2), 2 frames
per video for the k-NN features, and the rest of :data:`TINY_RUN`."""


@contextmanager
def scratch(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A folder for a module-scoped fixture, removed when the fixture ends (its runs hold hundreds of MB of
    checkpoints; pytest itself would keep them until the session ends)."""
    path = factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_clip(path: Path, frames: np.ndarray, codec: str = "mpeg4", fps: int = 10) -> Path:
    """Encode (T, H, W) or (T, H, W, 3) uint8 frames into a clip with PyAV (container from the suffix)."""
    import av

    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=25 if codec.startswith("mpeg") and codec != "mpeg4" else fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p" if codec != "gif" else "rgb8"
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_image(path: Path, arr: np.ndarray) -> Path:
    """Save a grey (H, W), RGB (H, W, 3) or RGBA (H, W, 4) uint8 array with Pillow."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def ramp(n: int, h: int = 40, w: int = 48) -> np.ndarray:
    """n frames whose brightness encodes their number: frame i is the constant 20 + 15 * i."""
    return np.stack([np.full((h, w), 20 + 15 * i, np.uint8) for i in range(n)])


def fake_run(root, data, labelled, pretrained, seed=0):
    """A pretraining run directory as ``hico pretrain`` leaves it, as far as evaluation reads it: config.yaml,
    backbone.pt (a random network drawn from ``seed``), checkpoints/epoch_0001.pt, labelled_videos.json."""
    import json

    import torch

    from hico.models import HiCoNet, ModelConfig
    from hico.models.checkpoint import export_backbone

    root.mkdir(parents=True)
    (root / "config.yaml").write_text(f"name: fake\ndata:\n  path: {data}\n")
    torch.manual_seed(seed)
    net = HiCoNet(ModelConfig(init="random"))
    export_backbone(net, root / "backbone.pt")
    export_backbone(net, root / "checkpoints" / "epoch_0001.pt")
    record = {"dataset": str(data.resolve()), "videos": sorted(labelled), "pretrained_videos": sorted(pretrained)}
    (root / "labelled_videos.json").write_text(json.dumps(record))
    return root


APP = ROOT / "app"


def load_bench(name: str):
    """The script ``bench/<name>.py`` as a module (bench/ is not a package), registered in ``sys.modules`` (its
    dataclasses look their module up there)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _one_page(app_dir: str, module: str) -> None:  # the source of a one-page app (AppTest.from_function)
    import importlib
    import sys
    from pathlib import Path

    for p in (app_dir, str(Path(app_dir).parent)):
        if p not in sys.path:
            sys.path.insert(0, p)
    importlib.import_module(module).page()


def app_page(module: str, timeout: float = 120):
    """An AppTest of one page of the workbench, ``app/<module>.py``'s ``page()``, alone (not run yet)."""
    from streamlit.testing.v1 import AppTest

    return AppTest.from_function(_one_page, args=(str(APP), module), default_timeout=timeout)


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``streamlit run app/main.py`` process of :func:`streamlit_server`; ``output`` is what it printed, once it
    has stopped."""

    def __init__(self, proc, port: int) -> None:
        self.proc, self.port, self.output = proc, port, ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # the app serves 127.0.0.1 only (app/.streamlit/config.toml)


@contextmanager
def streamlit_server(cwd: Path, env: dict[str, str], *flags: str) -> Iterator[Server]:
    """Start the workbench as a user would (``streamlit run app/main.py`` in ``cwd``), wait until it answers its
    health check (or fail the test with what it printed), and stop it on the way out."""
    import subprocess
    import time
    import urllib.request

    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP / "main.py"), "--server.port", str(port), *flags]
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    server = Server(proc, port)
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=1)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    proc.kill()
                    pytest.fail(f"the server did not start: {proc.stdout.read()[-2000:]}")
                time.sleep(0.5)
        yield server
    finally:
        proc.terminate()
        server.output = proc.communicate(timeout=20)[0]


@pytest.fixture(autouse=True)
def _keep_main_module() -> Iterator[None]:
    """Put ``sys.modules["__main__"]`` back after each test.

    Streamlit's AppTest runs its script as ``__main__`` and leaves it there; a later
    ``multiprocessing`` spawn would then re-run that script in every child and die.
    """
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A synthetic set of 3 classes x 6 videos x 4 frames at 48 px, written once per session. Read it only."""
    from hico.data.synth import write_dataset

    root = tmp_path_factory.mktemp("tiny")
    return write_dataset(root / "set", videos_per_class=6, n_frames=4, size=48, seed=1, progress=False)


TINY_STUDY = ("--methods", "simclr", "random", "--label-fractions", "0.25", "1", "--protocols", "knn", "probe",
              "--folds", "3", "--size", "32", "--epochs", "1", "--pairs-per-video", "2", "--batch-size", "8",
              "--frames-per-video", "2", "--bootstrap", "50", "--no-progress")  # fmt: skip
"""``hico study`` options (with ``--pretrain-data``, ``--eval-data`` and ``--out``) of a study of seconds."""


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """A finished study folder: :data:`TINY_STUDY` on data_samples/, made once per session. Read it only."""
    from hico.cli import SAMPLES, main

    root = tmp_path_factory.mktemp("study")
    argv = [
        "study",
        *TINY_STUDY,
        "--pretrain-data",
        str(SAMPLES),
        "--eval-data",
        str(SAMPLES),
        "--out",
        str(root / "tiny"),
    ]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HICO_CACHE", str(root / "cache"))
        assert main(argv) == 0
    return root / "tiny"


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Path:
    """A runs folder holding one finished run, ``tiny``: the demo preset with :data:`DEMO_TINY`, pretrained once
    per session. Read it only: a test that adds to a run copies it into its own ``tmp_path`` first."""
    from hico.cli import main

    root = tmp_path_factory.mktemp("runs")
    argv = ["pretrain", "--preset", "demo", "--out", str(root / "tiny"), "--no-progress"]
    for item in DEMO_TINY:
        argv += ["--set", item]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HICO_CACHE", str(root.parent / "cache"))
        assert main(argv) == 0
    return root


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """``hico pretrain --preset demo`` on data_samples/ in full (30 epochs, about 100 s on a quiet 2-core CPU), made
    once per session: test_workflow checks that it learns and evaluates it, and the notebook test maps it in
    notebook 07 (whose own run is this preset). Read it only."""
    from hico.cli import main

    root = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HICO_CACHE", str(root / "cache"))
        assert main(["pretrain", "--preset", "demo", "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


ESCAPING_ROWS = ("../../elsewhere/x.jpg", "ABS", "link.jpg", "/etc/passwd")
"""The index rows of :func:`escaping_dataset` that point outside its root ("ABS": an absolute path)."""


@pytest.fixture
def escaping_dataset(tmp_path) -> tuple[Path, list[str]]:
    """A dataset under ``tmp_path/allowed/ds`` whose index.csv names, besides one good 8-frame video inside it,
    a real image outside it by ``../..``, another by its absolute path, one through a symbolic link inside the
    root, and ``/etc/passwd``. Returns (root, the four outside paths as written in the index)."""
    root = tmp_path / "allowed" / "ds"
    for i in range(8):
        write_image(root / "good" / f"{i}.png", ramp(8)[i])
    x = write_image(tmp_path / "elsewhere" / "x.jpg", ramp(1)[0])
    y = write_image(tmp_path / "elsewhere" / "y.jpg", ramp(1)[0])
    (root / "link.jpg").symlink_to(x)
    rows = [str(y) if r == "ABS" else r for r in ESCAPING_ROWS]
    lines = ["file,video_id,class,split_group"] + [f"good/{i}.png,good,covid,p1" for i in range(8)]
    lines += [f"{r},bad{k},regular,p{k + 2}" for k, r in enumerate(rows)]
    (root / "index.csv").write_text("\n".join(lines) + "\n")
    return root, rows


@pytest.fixture
def files_read(monkeypatch) -> list[Path]:
    """Every file the frame cache fingerprints or decodes during the test (hico.data.cache is spied on)."""
    from hico.data import cache

    seen: list[Path] = []
    key, read = cache.source_key, cache.read_source

    def spy_key(files, size):
        seen.extend(Path(f) for f in files)
        return key(files, size)

    def spy_read(files, size, *args, **kwargs):
        seen.extend(Path(f) for f in files)
        return read(files, size, *args, **kwargs)

    monkeypatch.setattr(cache, "source_key", spy_key)
    monkeypatch.setattr(cache, "read_source", spy_read)
    return seen
