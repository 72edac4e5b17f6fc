"""Did a run learn? The four signs a classroom looks for, read from a finished run folder.

1. the training loss (``con``) against its chance level ln(2N-1) (:func:`hico.methods.chance_level`);
2. the mean cosine similarity of held-out positive pairs against that of negative pairs (``holdout_pos_sim``,
   ``holdout_neg_sim`` of the epoch records), before training and at the end;
3. and 4. a k-NN and a linear probe of the held-out videos, fitted on the training videos' frames, on the features
   the run kept before training (epoch 0: the random initialisation it started from) and at its last epoch.

The probe's L2 strength is chosen by a grouped cross-validation of the training videos alone
(:func:`hico.eval.probe.choose_C`): the held-out videos are only ever scored. ``hico pretrain`` prints
:func:`format_signs` at the end of a run that held videos out (``train.holdout``), as the demo preset does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hico.eval.features import Features


def held_out_accuracy(features: Features, k: int = 10) -> dict[str, dict[str, float]]:
    """Per level, ``{"knn", "linear", "C"}``: k-NN and linear-probe frame accuracy on the held-out videos
    (``features.meta["holdout"]``, video indices), both fitted on the other videos' frames only.

    Raises:
        ValueError: the features name no held-out videos, or every video is held out.
    """
    from hico.eval.knn import level_knn_accuracy
    from hico.eval.probe import fit_linear

    held = np.isin(features.video, features.meta.get("holdout") or [])
    if not held.any() or held.all():
        raise ValueError("these features name no held-out videos (meta['holdout']) and no others to fit on")
    knn = level_knn_accuracy(features, np.unique(features.video[~held]), np.unique(features.video[held]), k=k)
    y = features.labels
    out = {}
    for level, x in features.levels.items():
        x = np.asarray(x, dtype=np.float32)
        model = fit_linear(x[~held], y[~held], C=None, groups=features.groups[~held])[0]
        out[level] = {
            "knn": knn[level],
            "linear": float(np.mean(model.predict(x[held]) == y[held])),
            "C": float(model[-1].C),
        }
    return out


def signs_of_learning(run: str | Path) -> dict:
    """The four signs of one finished run (see the module docstring), or what of them its files hold.

    Returns ``{"chance", "loss_first", "loss_last", "pos_sim": (before, after), "neg_sim": (before, after),
    "epochs": (first, last), "held_out": {"before": held_out_accuracy, "after": ...}}``; a sign the run did not
    record (no held-out videos, no kept features) is None.
    """
    from hico.methods import chance_level
    from hico.train.rundir import read_config, read_metrics

    run = Path(run)
    records = read_metrics(run)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    out: dict = {
        "chance": chance_level(read_config(run), "con"),
        "loss_first": steps[0].get("con") if steps else None,
        "loss_last": steps[-1].get("con") if steps else None,
        "pos_sim": None,
        "neg_sim": None,
        "epochs": (epochs[0]["epoch"], epochs[-1]["epoch"]) if epochs else None,
        "held_out": None,
    }
    if epochs and "holdout_pos_sim" in epochs[0] and "holdout_pos_sim" in epochs[-1]:
        out["pos_sim"] = (epochs[0]["holdout_pos_sim"], epochs[-1]["holdout_pos_sim"])
        out["neg_sim"] = (epochs[0]["holdout_neg_sim"], epochs[-1]["holdout_neg_sim"])
    kept = sorted((run / "features").glob("epoch_*.npz"))
    if len(kept) >= 2:
        first, last = Features.load(kept[0]), Features.load(kept[-1])
        if first.meta.get("holdout") and first.meta.get("epoch") == 0:
            out["held_out"] = {"before": held_out_accuracy(first), "after": held_out_accuracy(last)}
            out["feature_epochs"] = (first.meta.get("epoch"), last.meta.get("epoch"))
    return out


def format_signs(signs: dict) -> str:
    """A few lines for a terminal: each sign, before -> after."""
    lines = ["did it learn?"]
    if signs["loss_last"] is not None and signs["chance"]:
        lines.append(
            f"  loss (con): {signs['loss_first']:.2f} at the first step -> {signs['loss_last']:.2f} at the last; "
            f"chance level {signs['chance']:.2f} ({100 * (1 - signs['loss_last'] / signs['chance']):.0f} % below it)"
        )
    if signs["pos_sim"] is not None:
        (p0, p1), (n0, n1) = signs["pos_sim"], signs["neg_sim"]
        lines.append(
            f"  held-out pairs, cosine similarity: positives {p0:.2f} -> {p1:.2f}, negatives {n0:.2f} -> {n1:.2f} "
            f"(gap {p0 - n0:.2f} -> {p1 - n1:.2f})"
        )
    if signs["held_out"] is not None:
        before, after = signs["held_out"]["before"], signs["held_out"]["after"]
        e0, e1 = signs["feature_epochs"]
        for kind, name in (("knn", "k-NN"), ("linear", "linear probe")):
            cells = ", ".join(f"{lv} {before[lv][kind]:.2f} -> {after[lv][kind]:.2f}" for lv in after)
            lines.append(f"  held-out videos, {name} (epoch {e0}, random init -> epoch {e1}): {cells}")
    if len(lines) == 1:
        lines.append("  (this run kept no held-out monitor: set train.holdout > 0)")
    return "\n".join(lines)
