"""How long the app's Embeddings page takes to draw the maps of the three levels for about 1,000 frames.

Times, in one run: features of a checkpoint (a trained model's forward pass over the frames), the first maps
(UMAP of three levels with numba compiling: the app's first visit), maps of new features (numba warm, UMAP
not cached: a new checkpoint or epoch), the same maps again (UMAP read from its disk cache), and a checkpoint
mapped before, after a restart (its features and UMAP read from disk). Targets
(issue 5): a first UMAP under 30 s, a map of 1,000 frames from a cached checkpoint under 3 s.

    .venv/bin/python bench/embedding_map.py                       # a synthetic set of 63 videos x 16 frames
    .venv/bin/python bench/embedding_map.py --data ../shared/data/pocus --per-video 7
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="dataset folder (default: a synthetic set generated in a temp folder)")
    p.add_argument("--per-video", type=int, default=16, help="frames per video")
    p.add_argument("--size", type=int, default=64, help="image size the features are extracted at (the demo's)")
    args = p.parse_args()

    from hico.data import scan
    from hico.data.synth import write_dataset
    from hico.eval.features import Features, extract_features
    from hico.eval.maps import level_maps
    from hico.models import HiCoNet, ModelConfig

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = args.data or write_dataset(tmp / "videos", videos_per_class=21, n_frames=16, progress=False)
        videos = scan(data, size=128, cache_dir=tmp / "cache")
        videos.load_all(progress=False)

        def features(seed: int):
            torch.manual_seed(seed)
            model = HiCoNet(ModelConfig(init="random")).eval()
            t = time.perf_counter()
            f = extract_features(model, videos, size=args.size, per_video=args.per_video, progress=False)
            return f, time.perf_counter() - t

        f1, t_feat = features(0)
        f2, _ = features(1)
        timed = {}
        for name, f in (("first maps (numba compiles)", f1), ("maps of new features", f2), ("maps from cache", f2)):
            t = time.perf_counter()
            level_maps(f, cache_dir=tmp / "umap")
            timed[name] = time.perf_counter() - t
        f2.save(tmp / "features.npz")  # the app keeps a checkpoint's features on disk: after a restart, it reads
        t = time.perf_counter()  # them and their UMAP back instead of running the model over every frame again
        level_maps(Features.load(tmp / "features.npz"), cache_dir=tmp / "umap")
        timed["checkpoint after a restart"] = time.perf_counter() - t

    n = len(f1)
    print(f"{n} frames of {len(videos)} videos, features at {args.size} px, {torch.get_num_threads()} threads")
    print(f"  features of a checkpoint      {t_feat:6.2f} s")
    for name, s in timed.items():
        print(f"  {name:<29} {s:6.2f} s")
    first, new = timed["first maps (numba compiles)"], timed["maps of new features"]
    print(f"first maps / 30 s target: {first / 30:.2f}   new maps / 3 s target: {new / 3:.2f}   "
          f"features + new maps / 3 s: {(t_feat + new) / 3:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
