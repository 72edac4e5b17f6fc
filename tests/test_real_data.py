"""The real lung-ultrasound sets in ../shared/data: every clip loads, counts match their index.csv.

Skipped when ../shared/data is absent. Frames are decoded at a small working size into a temporary cache
(never into the repository).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from hico.cli import main
from hico.data import scan
from hico.data.splits import kfold_splits

pytestmark = pytest.mark.real_data
SIZE = 32


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("real_cache")


def index_rows(root: Path) -> list[dict]:
    with open(root / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize(("name", "n_files"), [("pocus", 156), ("covid_blues", 362)])
def test_a_sample_of_clips_decodes_to_the_index_counts(shared_data, tmp_path, name, n_files):
    """The fast lane's check of the real data: the index, and every 25th clip decoded (all of them: below)."""
    root = shared_data / name
    rows = index_rows(root)
    assert len(rows) == n_files
    ds = scan(root, size=SIZE, cache_dir=tmp_path)
    assert len(ds) == n_files
    assert Counter(v.label for v in ds.videos) == Counter(r["class"] for r in rows)
    expected = {r["video_id"]: int(r["n_frames"]) for r in rows}
    for i in range(0, len(ds), 25):
        f = ds.frames(i)
        assert len(f) == expected[ds.videos[i].video_id]
        assert f.dtype == np.uint8 and f.shape[1:] == (SIZE, SIZE) and f.std() > 0


@pytest.mark.slow  # decodes all 518 clips: half a minute
@pytest.mark.parametrize(("name", "n_files"), [("pocus", 156), ("covid_blues", 362)])
def test_every_clip_loads_and_counts_match_the_index(shared_data, real_cache, name, n_files):
    root = shared_data / name
    rows = index_rows(root)
    assert len(rows) == n_files
    ds = scan(root, size=SIZE, cache_dir=real_cache).load_all(progress=False)
    assert ds.unreadable == []
    assert len(ds) == n_files
    assert Counter(v.label for v in ds.videos) == Counter(r["class"] for r in rows)
    group_col = "split_group" if "split_group" in rows[0] else "patient_id"
    assert ds.summary()["groups"] == len({r[group_col] for r in rows})
    # every clip decodes to exactly the frame count the index records
    expected = {r["video_id"]: int(r["n_frames"]) for r in rows}
    got = {v.video_id: ds.n_frames(i) for i, v in enumerate(ds.videos)}
    assert got == expected
    for i in range(0, len(ds), 37):
        f = ds.frames(i)
        assert f.dtype == np.uint8 and f.shape[1:] == (SIZE, SIZE) and f.std() > 0


def test_pocus_formats_all_present(shared_data):
    suffixes = Counter(Path(r["file"]).suffix.lower() for r in index_rows(shared_data / "pocus"))
    assert {".mp4", ".avi", ".mpeg", ".mov", ".gif", ".jpg", ".png"} <= set(suffixes)


def test_pocus_folds_keep_patients_apart(shared_data, real_cache):
    ds = scan(shared_data / "pocus", size=SIZE, cache_dir=real_cache).with_classes(["covid", "pneumonia", "regular"])
    rows = {r["video_id"]: r["split_group"] for r in index_rows(shared_data / "pocus")}
    groups = np.array([rows[v.video_id] for v in ds.videos])  # from the index, not from the dataset object
    for tr, te in kfold_splits(ds.labels, ds.groups, k=5, seed=0):
        assert set(groups[tr]).isdisjoint(groups[te])


@pytest.mark.slow  # decodes every POCUS clip (after the test above, from its cache)
def test_scan_json_on_pocus(shared_data, real_cache, capsys):
    code = main(
        ["data", "scan", str(shared_data / "pocus"), "--json", "--size", str(SIZE), "--cache-dir", str(real_cache)]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    rows = index_rows(shared_data / "pocus")
    assert out == {
        "videos": 156,
        "frames": sum(int(r["n_frames"]) for r in rows),
        "classes": dict(sorted(Counter(r["class"] for r in rows).items())),
        "groups": len({r["split_group"] for r in rows}),
        "unreadable": [],
        "refused": [],
    }
