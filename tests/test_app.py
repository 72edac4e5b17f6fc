"""The Streamlit workbench, driven by streamlit.testing (no browser): every page renders and works."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("streamlit")
from conftest import APP  # noqa: E402
from conftest import app_page as page  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from hico.runs import list_runs  # noqa: E402

SAMPLES = APP.parent / "data_samples"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("HICO_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HICO_RUNS", str(tmp_path / "runs"))


def test_main_opens_on_the_data_page():
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=120).run()
    assert not at.exception
    assert at.header[0].value == "Data"
    assert {m.label: m.value for m in at.metric} == {
        "classes": "3", "videos": "36", "frames": "576", "groups": "18", "unreadable": "0",
    }  # fmt: skip


def test_data_page_shows_a_pair_and_refuses_paths_outside_the_allowed_roots():
    at = page("data_page").run()
    assert not at.exception and len(at.subheader) == 2
    at.radio[0].set_value("uscl").run()
    assert not at.exception and any("mix weight" in c.value for c in at.caption)
    at.text_input[0].set_value("/etc").run()
    assert at.error and "outside the folders this app may read" in at.error[0].value


def test_data_page_refuses_index_rows_outside_the_dataset(escaping_dataset, files_read, monkeypatch):
    import sys

    root, outside = escaping_dataset
    monkeypatch.setattr(
        sys, "argv", [str(APP / "main.py"), str(root.parent)]
    )  # `streamlit run app/main.py -- allowed/`
    at = page("data_page")
    at.session_state["dataset"] = str(root)
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["videos"] == "1" and metrics["unreadable"] == "0"
    assert "4 rows of index.csv refused" in at.warning[0].value
    refused = at.expander[-1]
    assert refused.label == "4 refused rows" and all(p in refused.text[0].value for p in outside)
    assert files_read and all(p.resolve().is_relative_to(root.resolve()) for p in files_read)


@pytest.fixture
def stop_launched_runs(tmp_path):
    """Stop any run a test launched, even when the test fails before it does (a 50-epoch run would go on)."""
    from hico.runs import stop

    yield
    deadline = time.time() + 120
    while time.time() < deadline:  # a run still starting cannot be stopped yet: wait until it runs or fails
        states = {info.path: info.state for info in list_runs(tmp_path / "runs")}
        for path in [p for p, state in states.items() if state == "running"]:
            stop(path)
        if "starting" not in states.values():
            break
        time.sleep(0.5)


@pytest.mark.slow  # stop and resume of a launched run: half a minute
def test_train_page_launches_a_run_in_its_own_process_and_stops_it(tmp_path, stop_launched_runs):
    at = page("train_page").run()
    assert not at.exception
    assert "No runs yet" in at.info[0].value

    def knobs():
        return {n.label: n.value for n in at.number_input if n.label in ("lambda", "alpha", "beta", "temperature",
                                                                          "momentum", "queue size", "tau")}  # fmt: skip

    assert knobs() == {"lambda": 0.5, "alpha": 0.2, "beta": 0.2, "temperature": 0.5}  # hico's own knobs
    assert any("HiCo" in c.value for c in at.caption)  # the method's description
    at.selectbox[0].set_value("ucl").run()
    assert knobs() == {"temperature": 0.07, "momentum": 0.999, "queue size": 4096}  # MoCo's: no alpha, no beta
    at.selectbox[0].set_value("uscl").run()
    assert knobs() == {"lambda": 0.2, "temperature": 0.5}
    assert "cross-entropy" in [n for n in at.number_input if n.label == "lambda"][0].help  # USCL's own lambda
    at.number_input[0].set_value(50)  # epochs: long enough to be stopped while running
    at.button[0].click().run()  # the form's Launch button
    assert not at.exception and at.success, [e.value for e in at.error]
    run = list_runs(tmp_path / "runs")[0]
    deadline = time.time() + 120
    while list_runs(tmp_path / "runs")[0].state != "running" and time.time() < deadline:
        time.sleep(0.5)
    config = yaml.safe_load((run.path / "config.yaml").read_text())  # written by the run's process
    assert (config["name"], config["loss"]["lam"], config["loss"]["temperature"]) == ("uscl", 0.2, 0.5)
    assert (config["augment"]["size"], config["train"]["pairs_per_video"], config["train"]["lr"]) == (32, 8, 0.003)

    def stop_and_wait():
        at.run()
        stop = [b for b in at.button if b.label == "Stop"]
        assert stop, [m.value for m in at.markdown]
        stop[0].click().run()
        while list_runs(tmp_path / "runs")[0].state == "running" and time.time() < deadline:
            time.sleep(0.5)
        assert list_runs(tmp_path / "runs")[0].state == "interrupted"

    stop_and_wait()
    assert (run.path / "checkpoints" / "last.pt").is_file()
    at.run()
    [b for b in at.button if b.label == "Resume"][0].click().run()  # continues from last.pt, in its own process
    deadline = time.time() + 120
    while list_runs(tmp_path / "runs")[0].state != "running" and time.time() < deadline:
        time.sleep(0.5)
    stop_and_wait()
    log = (tmp_path / "runs" / ".logs" / f"{run.name}.log").read_text()
    assert log.count("interrupted: saved") == 2  # both parts of the run in one log
    at.run()
    [b for b in at.button if b.label == "Delete for good"][0].click().run()
    assert not run.path.exists() and list_runs(tmp_path / "runs") == []


def test_every_shipped_method_is_offered_where_methods_are_chosen():
    """The Train page lists methods and ablation rows apart, and the Compare page offers every method: both from
    hico/configs/, so a new method's YAML file is all the app needs."""
    from hico.config import method_names

    methods, rows = method_names(ablation=False), method_names(ablation=True)
    assert "byol" in methods and "hico-ablation-t1-local" in rows and not set(methods) & set(rows)
    at = page("train_page").run()
    assert at.selectbox[0].options == methods
    at.radio[0].set_value(at.radio[0].options[1]).run()
    assert at.selectbox[0].options == [r.removeprefix("hico-ablation-") for r in rows]
    at = page("compare_page").run()
    assert at.multiselect[0].options == [*methods, "random"]


def test_train_page_warns_when_an_epoch_has_few_steps():
    at = page("train_page").run()
    assert not at.warning  # the demo scale: 29 videos trained on (a fifth held out) x 8 pairs / 16 = 14 steps
    at.radio[1].set_value(at.radio[1].options[1]).run()  # paper scale: one pair per video, batch 32
    assert "Raise pairs per video to 12" in at.warning[0].value  # 29 x 12 / 32 = 10 steps


def test_train_page_demo_button_launches_the_demo_preset(tmp_path, stop_launched_runs):
    at = page("train_page").run()
    assert "No runs yet" in at.info[0].value
    [b for b in at.button if b.label == "Launch the demo preset"][0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (run,) = list_runs(tmp_path / "runs")
    deadline = time.time() + 120
    while not (run.path / "config.yaml").is_file() and time.time() < deadline:
        time.sleep(0.5)
    config = yaml.safe_load((run.path / "config.yaml").read_text())
    assert (config["name"], config["train"]["epochs"], config["augment"]["size"]) == ("hico", 30, 32)
    assert Path(config["data"]["path"]).resolve() == SAMPLES.resolve()
    at.run()
    assert [b for b in at.button if b.label == "Launch the demo preset"]  # still there once runs exist


def test_curves_page_empty_then_plots_a_run(tiny_runs, monkeypatch):
    at = page("curves_page").run()
    assert "No runs yet" in at.info[0].value
    monkeypatch.setenv("HICO_RUNS", str(tiny_runs))
    at = page("curves_page").run()
    assert not at.exception
    assert at.multiselect[0].value == ["tiny"]
    charts = at.get("plotly_chart")
    assert len(charts) == 6
    sims = [json.loads(c.proto.spec) for c in charts if "cosine" in c.proto.spec]
    assert [t["name"] for t in sims[0]["data"]] == ["tiny: positive pairs", "tiny: negatives"]
    assert all(len(t["y"]) == 3 for t in sims[0]["data"])  # before training, epochs 1 and 2


def maps_component(at: AppTest):
    """The Embeddings page's maps component: (its session-state key, the payload it was given)."""
    import json

    def walk(node):
        for child in getattr(node, "children", {}).values():
            if getattr(child, "type", None) == "component_instance":
                yield child
            yield from walk(child)

    (element,) = walk(at._tree)
    assert element.proto.component_name == "level_maps.level_maps"
    return element.proto.id.split("-", 2)[2], json.loads(element.proto.json_args)["payload"]


def test_curves_page_compares_fine_tuning_convergence_with_a_random_init(tiny_runs, tmp_path):
    import json
    import shutil

    from hico.cli import main

    run = tmp_path / "runs" / "tiny"  # HICO_RUNS: the tiny run without its checkpoints (backbone.pt is enough)
    shutil.copytree(tiny_runs / "tiny", run, ignore=shutil.ignore_patterns("checkpoints", "finetune"))
    at = page("curves_page").run()
    assert len(at.get("plotly_chart")) == 6 and any("Figure 1c" in c.value for c in at.caption)
    for spec, out in ((run, run / "finetune" / "ft"), ("random", tmp_path / "runs" / "finetune-random" / "ft")):
        argv = ["finetune", "--backbone", str(spec), "--data", str(SAMPLES), "--out", str(out), "--folds", "2",
                "--epochs", "2", "--size", "32", "--frames-per-video", "4", "--test-frames-per-video", "4",
                "--no-progress"]  # fmt: skip
        assert main(argv) == 0
    at = page("curves_page").run()
    assert not at.exception
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    [figure] = [f for f in figures if "Figure 1c" in f["layout"]["title"]["text"]]
    assert [t["name"] for t in figure["data"]] == ["tiny", "random init"]
    folds = json.loads((run / "finetune" / "ft" / "results.json").read_text())["folds"]
    pooled = sum(f["n_test_frames"] * f["history"][1]["test_accuracy"] for f in folds) / sum(
        f["n_test_frames"] for f in folds
    )
    assert figure["data"][0]["x"] == [1, 2] and figure["data"][0]["y"][1] == pytest.approx(pooled)


def test_embeddings_page_maps_the_three_levels_over_epochs_and_checkpoints(tiny_runs, monkeypatch):
    assert "No run to map" in page("embeddings_page").run().info[0].value
    monkeypatch.setenv("HICO_RUNS", str(tiny_runs))
    at = page("embeddings_page", timeout=180).run()
    assert not at.exception, at.exception
    assert [m.value.split(" · ")[0] for m in at.markdown if "k-NN" in m.value] == [
        "**local**",
        "**medium**",
        "**global**",
    ]
    key, maps = maps_component(at)
    n = len(maps["text"])
    assert [level["name"] for level in maps["levels"]] == ["local", "medium", "global"]
    assert all(len(level["x"]) == len(level["y"]) == n for level in maps["levels"])
    assert sorted(r for g in maps["groups"] for r in g["rows"]) == list(range(n))  # every frame in one trace
    assert [g["name"] for g in maps["groups"]] == ["covid", "pneumonia", "regular"] and maps["legend"]
    assert len(maps["thumbs"]) == n and all(t.startswith("data:image/jpeg;base64,") for t in maps["thumbs"])
    assert all(" · frame " in t for t in maps["text"])

    assert at.select_slider[0].options == ["0", "1", "2"]  # epoch checkpoints: before training, 1, 2
    assert [s.label for s in at.slider] == ["Frames per video"]  # maps of the checkpoint's features
    at.select_slider[0].set_value(0).run()
    before = maps_component(at)[1]
    assert not at.exception and before["key"] != maps["key"]
    for level, last in zip(before["levels"], maps["levels"], strict=True):  # aligned on the last epoch's map:
        xy, last_xy = np.array([level["x"], level["y"]]), np.array([last["x"], last["y"]])  # same centre and spread
        assert np.allclose(xy.mean(1), last_xy.mean(1), atol=1e-2) and not np.allclose(xy, last_xy, atol=1e-2)
        spread, last_spread = (np.linalg.norm(a - a.mean(1, keepdims=True)) for a in (xy, last_xy))
        assert spread == pytest.approx(last_spread, rel=1e-3)
    at.session_state[maps_component(at)[0]] = {"row": 3, "level": "local"}  # what a click on frame 3 sends
    at.run()
    assert not at.exception and at.subheader[0].value == "The frame and its nearest neighbours"
    assert [c.value for c in at.caption][:3] == ["local level", "medium level", "global level"]

    at.selectbox[1].set_value("final backbone").run()
    assert not at.exception and maps_component(at)[1]["levels"][0]["name"] == "local"
    at.radio[0].set_value("video").run()
    assert not at.exception
    videos = maps_component(at)[1]
    assert not videos["legend"] and len(videos["groups"]) == len({t.split(" · ")[1] for t in videos["text"]})


def test_embeddings_epoch_slider_falls_back_to_the_kept_features(tiny_runs, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_runs / "tiny", tmp_path / "runs" / "old", ignore=shutil.ignore_patterns("epoch_*.pt"))
    at = page("embeddings_page", timeout=180).run()  # HICO_RUNS is tmp_path/runs
    assert not at.exception, at.exception
    assert at.selectbox[1].value == "epochs during training"
    assert at.select_slider[0].options == ["0", "1", "2"] and not at.slider  # the k-NN features of those epochs
    assert len(maps_component(at)[1]["text"]) == 72  # 36 videos x train.knn_frames_per_video=2


def test_embeddings_keep_a_checkpoints_features_on_disk(tiny_runs, tmp_path, monkeypatch):
    import hico.eval.features

    monkeypatch.syspath_prepend(str(APP))
    import embeddings_page  # the app's module (the AppTest runs below use this same one)

    embeddings_page.snapshot_maps.clear()  # earlier tests may have mapped the same checkpoint in memory
    monkeypatch.setenv("HICO_RUNS", str(tiny_runs))
    cached = tmp_path / "cache" / "app" / "features"  # HICO_CACHE is tmp_path/cache
    at = page("embeddings_page", timeout=180).run()
    before = set(cached.glob("*.npz"))
    at.selectbox[1].set_value("final backbone").run()
    assert not at.exception and len(set(cached.glob("*.npz")) - before) == 1
    maps = maps_component(at)[1]
    embeddings_page.snapshot_maps.clear()  # as after a restart: nothing in memory

    def refuse(*args, **kwargs):
        raise AssertionError("features extracted again instead of read from the disk cache")

    monkeypatch.setattr(hico.eval.features, "extract_features", refuse)
    at = page("embeddings_page", timeout=180).run()
    at.selectbox[1].set_value("final backbone").run()
    assert not at.exception, at.exception
    assert maps_component(at)[1]["levels"] == maps["levels"]


def test_thumbnails_are_the_frames():
    import base64
    import io
    import sys

    from PIL import Image

    sys.path.insert(0, str(APP))
    from level_maps import thumbnail_uris

    frame = np.tile(np.arange(128, dtype=np.uint8) * 2, (128, 1))  # a horizontal ramp, 0 -> 254
    (uri,) = thumbnail_uris([frame])
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))
    assert img.shape == (64, 64)
    assert abs(int(img[:, 0].mean()) - 1) <= 4 and abs(int(img[:, -1].mean()) - 252) <= 4  # dark left, light right


def test_evaluate_page_probes_and_fine_tunes(tiny_runs, tmp_path):
    import shutil

    run = tmp_path / "runs" / "tiny"  # HICO_RUNS: a copy of the session's run, which fine-tuning adds to
    shutil.copytree(tiny_runs / "tiny", run, ignore=shutil.ignore_patterns("checkpoints"))
    at = page("evaluate_page", timeout=180).run()
    assert not at.exception
    assert at.selectbox[0].value == "tiny"
    at.select_slider[0].set_value(32)  # px, the run's size (default 64)
    at.button[0].click().run()  # the probe
    assert not at.exception, at.exception
    levels = list(at.dataframe[0].value["level"])
    assert levels[:3] == ["local", "medium", "global"] and levels[3].startswith("chance")
    assert 33.3 <= at.dataframe[0].value["linear %"].iloc[3] <= 50  # 3 classes of 12 videos each (rounded %)
    assert any("**tiny** on `" in m.value and "data_samples" in m.value for m in at.markdown)  # what and where
    labelled = json.loads((tiny_runs / "tiny" / "labelled_videos.json").read_text())["videos"]
    assert labelled  # the demo preset is HiCo: a softened CE on some videos' labels
    shown = [c.value for c in at.caption]
    assert any(f"label_overlap {len(labelled)} " in c and "pretrained_on_test_videos" in c for c in shown), shown
    assert "C per fold" not in at.dataframe[0].value.columns  # C = 1, as hico probe
    at.selectbox[1].set_value("auto").run()
    at.button[0].click().run()
    assert not at.exception, at.exception
    from hico.eval.probe import C_GRID

    for cell in at.dataframe[0].value["C per fold"].iloc[:3]:  # local, medium, global: the C each of 3 folds chose
        assert len(cell.split(", ")) == 3 and {float(c) for c in cell.split(", ")} <= set(C_GRID), cell
    at.number_input[1].set_value(2)  # fine-tuning: 2 folds
    at.number_input[2].set_value(1)  # x 1 epoch
    [b for b in at.button if b.label == "Launch fine-tuning"][0].click().run()
    assert at.success, [e.value for e in at.error]
    results = run / "finetune"
    deadline = time.time() + 300
    while not list(results.glob("*/results.json")) and time.time() < deadline:
        time.sleep(1)
    at.run()
    table = [d for d in at.dataframe if "protocol" in d.value.columns]
    assert table and len(table[0].value) == 3
    assert [len(d.value) for d in at.dataframe if "class" in d.value.columns] == [3]  # per class
    assert [len(d.value) for d in at.dataframe if "fold" in d.value.columns] == [2]  # per fold
    assert {"Download finetune.csv", "Download per_class.csv", "Download per_fold.csv"} <= {
        b.proto.label for b in at.get("download_button")
    }
    (path,) = results.glob("*/results.json")
    progress = json.loads((path.parent / "progress.json").read_text())  # what the page's bar showed while it ran
    assert (progress["fold"], progress["folds"], progress["epoch"], progress["epochs"]) == (2, 2, 1, 1)
    tested = {v for fold in json.loads(path.read_text())["folds"] for v in fold["test_videos"]}
    assert tested and not tested & set(labelled)
    assert any(f"label_overlap {len(labelled)} " in c.value for c in at.caption)  # the fine-tuning's, this time
    assert any("2 folds × 1 epochs" in m.value for m in at.markdown)
    # A result on another dataset is not shown as this dataset's (the page once showed it whatever was chosen).
    other = json.loads(path.read_text())
    path.write_text(json.dumps({**other, "data": str(tmp_path / "elsewhere")}))
    at.run()
    assert not [d for d in at.dataframe if "protocol" in d.value.columns]
    assert any("No fine-tuning results of this backbone on" in c.value for c in at.caption)


def test_curves_page_shows_the_terms_of_each_runs_method(tmp_path):
    """USCL's ce and MoCo's moco are plotted (the page once listed HiCo's terms only)."""
    import json

    for name, kind, term in (("uscl-run", "uscl", "ce"), ("moco-run", "moco", "moco")):
        run = tmp_path / "runs" / name
        run.mkdir(parents=True)
        config = {"name": kind, "loss": {"kind": kind}, "train": {"epochs": 2}}
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        records = [{"kind": "step", "epoch": 1, "step": 1, "lr": 0.1, "total": 2.0, term: 1.5}]
        records += [{"kind": "epoch", "epoch": e, "step": e, "train_total": 2.0, f"train_{term}": 1.5} for e in (1, 2)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    at = page("curves_page").run()
    assert not at.exception
    at.multiselect[0].set_value(["uscl-run", "moco-run"]).run()
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    (terms,) = [f for f in figures if f["layout"]["title"]["text"].startswith("Loss terms")]
    assert {t["name"] for t in terms["data"] if t.get("showlegend", True)} == {"uscl-run: ce", "moco-run: moco"}
    assert all("cross-entropy" in t["hovertext"] for t in terms["data"] if t["name"] == "uscl-run: ce")


def _fake_run(root: Path, name: str, config: dict, epochs: list[dict]) -> None:
    """A run directory with ``config`` and one step plus the given epoch records (train_* keys) in metrics.jsonl."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    records = [{"kind": "step", "epoch": 1, "step": s, "lr": 0.1, "total": 9.0} for s in (1, 2)]
    records += [{"kind": "epoch", "epoch": e, "step": e, **r} for e, r in enumerate(epochs, start=1)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _curves_of_two_hico_runs(tmp_path) -> AppTest:
    """Two HiCo runs (batch 8 and 16, no labels: soft_ce always 0, global_medium switched off and logged as 0)."""
    terms = ["local", "medium", "global", "global_local", "soft_ce"]
    for name, batch in (("run-a", 8), ("run-b", 16)):
        config = {"loss": {"kind": "hico", "lam": 0.5, "terms": terms}, "train": {"batch_size": batch},
                  "data": {"label_rate": 0.0}}  # fmt: skip
        epoch = {"train_total": 9.0, "train_con": 8.0, "train_local": 2.0, "train_medium": 2.0, "train_global": 2.0,
                 "train_global_local": 4.0, "train_global_medium": 0.0, "train_soft_ce": 0.0}  # fmt: skip
        _fake_run(tmp_path / "runs", name, config, [epoch, epoch])
    at = page("curves_page").run()
    at.multiselect[0].set_value(["run-a", "run-b"]).run()
    assert not at.exception
    return at


def test_curves_page_one_colour_per_run_terms_by_dash_zero_terms_left_out(tmp_path):
    """Two runs: every trace of a run has the run's colour, its terms differ by dash, the legend lists runs x terms
    drawn (once 14 entries with reused colours), and terms that are always 0 are not drawn."""
    at = _curves_of_two_hico_runs(tmp_path)
    figures = {
        json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")
    }
    terms = next(f for t, f in figures.items() if t.startswith("Loss terms"))
    shown = [t for t in terms["data"] if t.get("showlegend", True)]
    drawn = ("con", "local", "medium", "global", "global_local")
    assert sorted(t["name"] for t in shown) == sorted(f"{r}: {term}" for r in ("run-a", "run-b") for term in drawn)
    colours = {r: {t["line"]["color"] for t in terms["data"] if t["name"].startswith(r)} for r in ("run-a", "run-b")}
    assert all(len(c) == 1 for c in colours.values()) and colours["run-a"] != colours["run-b"]
    for run in ("run-a", "run-b"):
        dashes = [t["line"].get("dash", "solid") for t in shown if t["name"].startswith(run)]
        assert len(set(dashes)) == len(drawn) and "dot" not in dashes  # dotted: the chance levels


def test_curves_page_draws_each_runs_chance_level(tmp_path):
    """A dotted line in the run's colour at ln(2N - 1) (peer terms), 2 ln(2N - 1) (a cross term, two InfoNCE) and
    at the total's lam * 3 ln(2N - 1) + (1 - lam) * 2 ln(2N - 1) (one cross term on), N = train.batch_size."""
    import math

    at = _curves_of_two_hico_runs(tmp_path)
    figures = {
        json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")
    }
    terms = next(f for t, f in figures.items() if t.startswith("Loss terms"))
    loss = next(f for t, f in figures.items() if t.startswith("Training loss"))
    for run, n in (("run-a", 8), ("run-b", 16)):
        chance = math.log(2 * n - 1)
        con = 0.5 * 3 * chance + 0.5 * 2 * chance
        dotted = [t for t in terms["data"] if t["line"].get("dash") == "dot" and t["name"].startswith(run)]
        assert sorted(round(t["y"][0], 6) for t in dotted) == sorted(round(v, 6) for v in (chance, 2 * chance, con))
        assert all(t["y"][0] == t["y"][1] and t["showlegend"] is False for t in dotted)
        (total,) = [t for t in loss["data"] if t["line"].get("dash") == "dot" and t["name"].startswith(run)]
        assert total["y"] == [pytest.approx(con), pytest.approx(con)]
    assert any("chance" in c.value and "ln(2N - 1)" in c.value for c in at.caption)


def test_curves_page_titles_fit_and_no_deprecation_is_logged(tmp_path):
    """Chart titles are short enough not to be cut off on a half-width chart (once "k-NN accuracy of held-out
    videos, per level (epoch 0: before traini"), and drawing logs no Streamlit deprecation (use_container_width
    flooded the server log every 2 s while curves were live)."""
    import logging
    import warnings

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("streamlit.deprecation_util")  # streamlit loggers do not propagate
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            at = _curves_of_two_hico_runs(tmp_path)
    finally:
        logger.removeHandler(handler)
    assert not [r.getMessage() for r in records]
    assert not [
        str(w.message) for w in caught if issubclass(w.category, DeprecationWarning) and "streamlit" in w.filename
    ]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert len(titles) == 5 and all(len(t) <= 40 for t in titles), titles


def test_compare_page_draws_a_studys_curves_table_and_f1(tiny_study, tmp_path):
    """The Compare page lists a study under HICO_RUNS/studies, draws one line per method (with its band) per
    protocol, the gap to random init with its paired interval, the table and the F1 per class, and offers the
    CSV."""
    import shutil

    shutil.copytree(tiny_study, tmp_path / "runs" / "studies" / "tiny")
    at = page("compare_page").run()
    assert not at.exception
    assert [t.label for t in at.tabs] == ["k-NN on frozen features", "linear probe on frozen features"]
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    for chart in charts:
        figure = json.loads(chart.proto.spec)
        named = sorted(trace["name"] for trace in figure["data"] if trace.get("name"))
        assert named == ["random", "simclr"]
        assert len(figure["data"]) == 4  # a line and a band per method
    frames = at.dataframe
    table = frames[-1].value
    assert len(table) == 2 * 2 * 2  # methods x fractions x protocols
    assert sum(any(str(c).startswith("F1 ") for c in f.value.columns) for f in frames) == 2  # one per protocol
    paired = [f.value for f in frames if "95% paired CI" in f.value.columns]  # simclr - random, per fraction
    assert len(paired) == 2 and all(list(t["method"]) == ["simclr", "simclr"] for t in paired)
    assert at.get("download_button")


@pytest.mark.slow  # a real study in its own process: a minute
def test_compare_page_starts_a_study_in_its_own_process(tmp_path):
    import os
    import signal

    from hico import runs

    at = page("compare_page").run()
    assert "No study yet" in at.info[0].value
    at.multiselect[0].set_value(["simclr", "random"])
    at.multiselect[1].set_value([1.0])
    at.multiselect[2].set_value(["knn"])
    at.number_input[0].set_value(1)  # pretraining epochs
    at.button[0].click().run()  # the form's "Start the study"
    assert not at.exception and at.success, [e.value for e in at.error]
    (info,) = runs.list_studies(tmp_path / "runs")
    try:
        deadline = time.time() + 300
        while runs.study_info(info.path).state == "running" and time.time() < deadline:
            time.sleep(1)
        done = runs.study_info(info.path)
        assert (done.state, done.done, done.total) == ("finished", 2, 2), runs.log_path(info.path).read_text()[-2000:]
    finally:
        pid = int(runs.log_path(info.path).with_suffix(".pid").read_text())
        if runs.pid_alive(pid):
            os.killpg(pid, signal.SIGTERM)
    at = page("compare_page").run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
