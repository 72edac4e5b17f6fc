"""The data layer on files made here: layouts, frame order, colour models, corrupt inputs, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from conftest import load_bench, ramp, write_clip, write_image

from hico.data import DatasetError, scan
from hico.data.cache import FrameCache, source_key
from hico.data.decode import natural_key


def frame_means(frames: np.ndarray) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(1)


def test_natural_sort_orders_numbers_numerically():
    names = ["frame_10.png", "frame_2.png", "frame_1.png", "frame_100.png", "frame_20.png"]
    assert sorted(names, key=natural_key) == [
        "frame_1.png",
        "frame_2.png",
        "frame_10.png",
        "frame_20.png",
        "frame_100.png",
    ]


def test_frame_folder_is_read_in_numeric_order(tmp_path):
    frames = ramp(12)
    for i, f in enumerate(frames):  # written in a shuffled order, names without zero padding
        write_image(tmp_path / "covid" / "v1" / f"{i}.png", f)
    os.utime(tmp_path / "covid" / "v1" / "10.png")  # newer mtime must not matter either
    ds = scan(tmp_path, size=16)
    assert [v.video_id for v in ds.videos] == ["covid/v1"]
    got = frame_means(ds.frames(0))
    np.testing.assert_allclose(got, 20 + 15 * np.arange(12), atol=0.5)


@pytest.mark.parametrize(
    ("suffix", "codec"), [(".mp4", "mpeg4"), (".avi", "mpeg4"), (".mov", "mpeg4"), (".mpeg", "mpeg1video")]
)
def test_clips_of_each_container_load_in_order(tmp_path, suffix, codec):
    write_clip(tmp_path / "regular" / f"clip{suffix}", ramp(10, 48, 64), codec=codec)
    ds = scan(tmp_path, size=32).load_all(progress=False)
    assert ds.unreadable == []
    frames = ds.frames(0)
    assert frames.shape == (10, 32, 32) and frames.dtype == np.uint8
    assert np.all(np.diff(frame_means(frames)) > 5), "frames out of order"


def test_gif_clip_loads(tmp_path):
    from PIL import Image

    imgs = [Image.fromarray(f) for f in ramp(6, 30, 30)]
    path = tmp_path / "pneumonia" / "anim.gif"
    path.parent.mkdir(parents=True)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=100, loop=0)
    ds = scan(tmp_path, size=16).load_all(progress=False)
    assert ds.n_frames(0) == 6
    assert np.all(np.diff(frame_means(ds.frames(0))) > 5)


def test_grey_rgb_rgba_and_any_size_frames_load(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "a" / "grey.png", rng.integers(0, 255, (50, 70), np.uint8))
    write_image(tmp_path / "a" / "rgb.jpg", rng.integers(0, 255, (33, 20, 3), np.uint8))
    write_image(tmp_path / "a" / "rgba.png", rng.integers(0, 255, (64, 64, 4), np.uint8))
    write_image(tmp_path / "a" / "big.png", rng.integers(0, 255, (900, 1200, 3), np.uint8))
    ds = scan(tmp_path, size=24).load_all(progress=False)
    assert len(ds) == 4 and ds.unreadable == []
    for i in range(4):
        assert ds.frames(i).shape == (1, 24, 24)
        assert ds.videos[i].kind == "image"


def test_rgb_frame_becomes_its_luma(tmp_path):
    write_image(tmp_path / "a" / "red.png", np.tile(np.array([200, 0, 0], np.uint8), (8, 8, 1)))
    frame = scan(tmp_path, size=8).frames(0)
    # ITU-R 601 luma of pure red 200: 0.299 * 200 = 59.8
    assert abs(int(frame[0, 4, 4]) - 60) <= 1


def test_mixed_layouts_and_unlabelled_root_files(tmp_path):
    write_clip(tmp_path / "covid" / "c1.mp4", ramp(5))
    for i in range(3):
        write_image(tmp_path / "covid" / "folder_video" / f"{i}.jpg", ramp(3)[i])
    write_image(tmp_path / "regular" / "still.png", ramp(1)[0])
    write_clip(tmp_path / "loose.avi", ramp(4))
    (tmp_path / ".hidden").mkdir()
    write_image(tmp_path / ".hidden" / "x.png", ramp(1)[0])
    ds = scan(tmp_path, size=16).load_all(progress=False)
    kinds = {v.video_id: (v.label, v.kind) for v in ds.videos}
    assert kinds == {
        "covid/c1": ("covid", "clip"),
        "covid/folder_video": ("covid", "frames"),
        "regular/still": ("regular", "image"),
        "loose": ("unlabelled", "clip"),
    }
    assert ds.summary()["frames"] == 5 + 3 + 1 + 4


def test_index_csv_overrides_folder_names_and_groups(tmp_path):
    write_clip(tmp_path / "clips" / "a.mp4", ramp(4))
    write_clip(tmp_path / "clips" / "b.mp4", ramp(4))
    for i in (2, 0, 1):
        write_image(tmp_path / "frames" / f"f{i}.png", ramp(3)[i])
    (tmp_path / "index.csv").write_text(
        "file,video_id,class,split_group,extra\n"
        "clips/a.mp4,A,covid,p1,x\n"
        "clips/b.mp4,B,regular,p1,x\n"
        "frames/f2.png,C,regular,p2,x\n"
        "frames/f0.png,C,regular,p2,x\n"
        "frames/f1.png,C,regular,p2,x\n"
    )
    ds = scan(tmp_path, size=16).load_all(progress=False)
    got = {v.video_id: (v.label, v.group, len(v.files)) for v in ds.videos}
    assert got == {"A": ("covid", "p1", 1), "B": ("regular", "p1", 1), "C": ("regular", "p2", 3)}
    c = next(i for i, v in enumerate(ds.videos) if v.video_id == "C")
    assert np.all(np.diff(frame_means(ds.frames(c))) > 5)


def test_index_without_split_group_falls_back_to_patient_then_video(tmp_path):
    write_clip(tmp_path / "a.mp4", ramp(3))
    write_clip(tmp_path / "b.mp4", ramp(3))
    (tmp_path / "index.csv").write_text("file,video_id,class,patient_id\na.mp4,A,x,P9\nb.mp4,B,y,\n")
    ds = scan(tmp_path, size=16)
    assert {v.video_id: v.group for v in ds.videos} == {"A": "P9", "B": "B"}


def test_index_missing_column_is_a_one_line_error(tmp_path):
    (tmp_path / "index.csv").write_text("file,video\na.mp4,A\n")
    with pytest.raises(DatasetError, match="missing column 'video_id'") as e:
        scan(tmp_path)
    assert "\n" not in str(e.value)


def test_index_row_for_missing_file_is_reported_not_fatal(tmp_path):
    write_clip(tmp_path / "a.mp4", ramp(3))
    (tmp_path / "index.csv").write_text("file,video_id,class\na.mp4,A,x\ngone.mp4,B,x\n")
    ds = scan(tmp_path, size=16)
    assert [v.video_id for v in ds.videos] == ["A"]
    assert [p.name for p, _ in ds.unreadable] == ["gone.mp4"]


def test_index_rows_outside_the_root_are_refused_and_never_read(escaping_dataset, files_read):
    root, outside = escaping_dataset
    ds = scan(root, size=16).load_all(progress=False)
    assert [v.video_id for v in ds.videos] == ["good"] and ds.unreadable == []
    assert [p for p, _ in ds.refused] == outside  # the paths as written, in index order
    for (path, reason), line in zip(ds.refused, range(10, 14), strict=True):
        assert reason == f"index.csv, line {line}: {path} is outside the dataset folder (refused, not read)"
    assert ds.summary()["refused"] == outside
    assert files_read and all(p.resolve().is_relative_to(root.resolve()) for p in files_read)
    assert ds.with_classes(["covid"]).refused == ds.refused


def test_index_with_only_outside_rows_is_a_one_line_error(tmp_path):
    (tmp_path / "index.csv").write_text("file,video_id,class\n/etc/passwd,A,x\n")
    with pytest.raises(DatasetError, match="1 refused, first: index.csv, line 2: /etc/passwd is outside") as e:
        scan(tmp_path)
    assert "\n" not in str(e.value)


def test_corrupt_files_are_reported_by_path_and_skipped(tmp_path):
    write_clip(tmp_path / "covid" / "good.mp4", ramp(4))
    (tmp_path / "covid" / "garbage.mp4").write_bytes(os.urandom(2000))
    (tmp_path / "covid" / "empty.avi").write_bytes(b"")
    (tmp_path / "covid" / "text.jpg").write_text("not an image")
    good = (tmp_path / "covid" / "good.mp4").read_bytes()
    (tmp_path / "covid" / "truncated_header.mov").write_bytes(good[:50])
    ds = scan(tmp_path, size=16).load_all(progress=False)
    assert [v.video_id for v in ds.videos] == ["covid/good"]
    bad = sorted(p.name for p, _ in ds.unreadable)
    assert bad == ["empty.avi", "garbage.mp4", "text.jpg", "truncated_header.mov"]
    for path, reason in ds.unreadable:
        assert str(path) in reason and "\n" not in reason


@pytest.mark.parametrize("make", ["missing", "file", "empty", "no_videos"])
def test_unusable_roots_raise_one_line_errors(tmp_path, make):
    root = tmp_path / "ds"
    if make == "file":
        root.write_text("x")
    elif make in ("empty", "no_videos"):
        root.mkdir()
        if make == "no_videos":
            (root / "covid").mkdir()
            (root / "covid" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError) as e:
        scan(root)
    assert str(root) in str(e.value) and "\n" not in str(e.value)


def test_disk_cache_serves_epoch_two_without_decoding(tmp_path, monkeypatch):
    write_clip(tmp_path / "data" / "c" / "v.mp4", ramp(6))
    cache_dir = tmp_path / "cache"
    first = scan(tmp_path / "data", size=16, cache_dir=cache_dir).load_all(progress=False).frames(0).copy()

    import hico.data.cache as cache_mod

    def boom(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(cache_mod, "read_source", boom)
    again = scan(tmp_path / "data", size=16, cache_dir=cache_dir)  # a new process would start like this
    np.testing.assert_array_equal(again.frames(0), first)
    assert isinstance(again.frames(0), np.memmap)  # memory-mapped: workers share the page cache
    assert not list(cache_dir.rglob(".tmp-*"))


def test_memory_cache_decodes_once(tmp_path, monkeypatch):
    write_clip(tmp_path / "c" / "v.mp4", ramp(3))
    import hico.data.cache as cache_mod

    calls = []
    real = cache_mod.read_source
    monkeypatch.setattr(cache_mod, "read_source", lambda *a: calls.append(1) or real(*a))
    ds = scan(tmp_path, size=16)
    for _ in range(3):
        ds.frames(0)
    assert len(calls) == 1


def test_frames_stats_the_source_files_once(tmp_path, monkeypatch):
    """frames(i) of a frame folder looks at its files on the first call only (a training step calls it for
    every pair; each call used to stat every frame file), also through a subset."""
    for j in range(5):
        write_image(tmp_path / "c" / "v" / f"{j}.png", ramp(1)[0])
    ds = scan(tmp_path, size=16)
    files = {str(f) for f in ds.videos[0].files}
    assert len(files) == 5
    stats, real = [], os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: (str(p) in files and stats.append(p)) or real(p, *a, **k))
    first = ds.frames(0)  # the cache key and the decode look at every file
    assert len(stats) >= 5
    n = len(stats)
    for _ in range(3):
        assert ds.frames(0) is first
        assert ds.subset([0]).frames(0) is first
    assert len(stats) == n


def test_cache_key_changes_with_content_and_size(tmp_path):
    f = write_clip(tmp_path / "v.mp4", ramp(3))
    k1 = source_key([f], 16)
    assert source_key([f], 32) != k1
    write_clip(f, ramp(4))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert source_key([f], 16) != k1


def test_stale_cache_entry_is_not_served_after_the_file_changes(tmp_path):
    root, cache_dir = tmp_path / "d", tmp_path / "cache"
    f = write_clip(root / "c" / "v.mp4", ramp(3))
    assert scan(root, size=16, cache_dir=cache_dir).n_frames(0) == 3
    write_clip(f, ramp(5))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert scan(root, size=16, cache_dir=cache_dir).n_frames(0) == 5


def test_working_size_is_validated():
    with pytest.raises(ValueError, match="working size"):
        FrameCache(4)


def test_with_classes_filters_and_names_unknown_class(tmp_path):
    write_image(tmp_path / "covid" / "a.png", ramp(1)[0])
    write_image(tmp_path / "viral" / "b.png", ramp(1)[0])
    ds = scan(tmp_path, size=8)
    assert [v.label for v in ds.with_classes(["covid"]).videos] == ["covid"]
    with pytest.raises(DatasetError, match="unknown class 'flu'"):
        ds.with_classes(["flu"])


def test_files_are_untouched(tmp_path):
    f = write_clip(tmp_path / "c" / "v.mp4", ramp(3))
    before = (f.read_bytes(), f.stat().st_mtime_ns)
    scan(tmp_path, size=16, cache_dir=tmp_path / "cache").load_all(progress=False)
    assert (f.read_bytes(), f.stat().st_mtime_ns) == before
    assert sorted(p.name for p in Path(tmp_path / "c").iterdir()) == ["v.mp4"]


def test_pool_videos_links_every_video_under_its_source_name_without_labels(tiny_data, tmp_path, capsys):
    """bench/pool_videos.py: two datasets become one, classed by source, patients kept apart, ids unchanged; a
    video id in both sources is a one-line error (exit 2)."""
    pool_videos = load_bench("pool_videos")
    other = tmp_path / "clips"
    write_clip(other / "covid" / "c1.mp4", ramp(5))
    write_clip(other / "regular" / "r1.mp4", ramp(4))
    (other / "index.csv").write_text(
        "file,video_id,class,split_group\ncovid/c1.mp4,c1,covid,covid_p00\nregular/r1.mp4,r1,regular,solo\n"
    )
    first = {v.video_id: v for v in scan(tiny_data, cache_dir=None).videos}
    assert "covid_p00" in {v.group for v in first.values()}  # a patient name both sources use
    assert pool_videos.main([str(tmp_path / "pool"), str(tiny_data), str(other)]) == 0
    pooled = scan(tmp_path / "pool", cache_dir=None)
    assert len(pooled.videos) == len(first) + 2 and pooled.classes == sorted([tiny_data.name, "clips"])
    by_id = {v.video_id: v for v in pooled.videos}
    for vid, video in first.items():
        assert by_id[vid].label == tiny_data.name and by_id[vid].group == video.group
        assert [f.read_bytes() for f in by_id[vid].files] == [f.read_bytes() for f in video.files]
    assert by_id["c1"].group == "clips:covid_p00" and by_id["r1"].group == "solo"  # covid_p00: the first source's
    assert pooled.load_all(progress=False).frames(len(first)).shape[0] == 5
    assert pool_videos.main([str(tmp_path / "again"), str(other), str(other / ".." / "clips")]) == 2
    assert pool_videos.main([str(tmp_path / "twice"), str(other), str(tiny_data), str(tmp_path / "pool")]) == 2
    assert not (tmp_path / "twice").exists()  # the ids in both were found before anything was linked
    assert pool_videos.main([str(tmp_path / "pool"), str(other)]) == 2  # not empty
    assert capsys.readouterr().err.count("pool_videos: error:") == 3
