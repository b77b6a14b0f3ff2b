"""Figures of a record. Every figure's title states dataset, architecture, N and scale."""
from __future__ import annotations

import numpy as np

from . import metrics as M


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def caption(record, split=None, scale=None):
    m = record.meta
    parts = [f"{m.get('dataset', '?')}", f"{m.get('arch', '?')}", f"N={record.n_models}"]
    if split:
        parts.append(f"{split} ({record.predictions[split].shape[2]} examples)")
    if scale or m.get("scale"):
        parts.append(f"scale {scale or m.get('scale')}")
    return ", ".join(parts)


def tp_agreement_histograms(record, split, scale=None):
    """TP-agreement histogram per recorded epoch, the exact null's pmf overlaid (Fig 3a)."""
    plt = _plt()
    preds, labels = record.predictions[split], record.labels[split]
    n = record.n_models
    counts = M.tp_agreement_histogram(M.tp_agreement(preds, labels), n)
    pmf = M.null_tp_agreement(M.accuracies(preds, labels))
    k = len(record.epochs)
    cols = min(k, 4)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    x = np.arange(n + 1) / n
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        frac = counts[i] / counts[i].sum()
        ax.bar(x, frac, width=0.8 / n, color="tab:blue", label="observed")
        ax.plot(x, pmf[i], "o-", color="tab:red", ms=2.5, lw=1, label="null")
        ax.set_title(f"epoch {record.epochs[i]}", fontsize=9)
        ax.set_xlabel("TP-agreement")
        if i % cols == 0:
            ax.set_ylabel("fraction of examples")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"TP-agreement per epoch, null overlaid - {caption(record, split, scale)}", fontsize=10)
    fig.tight_layout()
    return fig


def tp_agreement_map(record, split, scale=None):
    """Epoch x TP-agreement map, observed beside the null (Fig 3b/4): colour = fraction of examples."""
    plt = _plt()
    preds, labels = record.predictions[split], record.labels[split]
    n = record.n_models
    counts = M.tp_agreement_histogram(M.tp_agreement(preds, labels), n)
    obs = counts / counts.sum(1, keepdims=True)
    null = M.null_tp_agreement(M.accuracies(preds, labels))
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    vmax = max(obs.max(), null.max())
    for ax, data, title in zip(axes, (obs, null), ("observed", "null (independent classifiers)")):
        im = ax.imshow(data.T, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=vmax,
                       extent=(-0.5, len(record.epochs) - 0.5, -0.5 / n, 1 + 0.5 / n))
        ax.set_xticks(range(len(record.epochs)), [str(e) for e in record.epochs])
        ax.set_xlabel("epoch")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("TP-agreement")
    fig.colorbar(im, ax=axes, label="fraction of examples")
    fig.suptitle(f"TP-agreement over training - {caption(record, split, scale)}", fontsize=10)
    return fig


def save_report_figures(record, directory, scale=None):
    """Write the per-epoch histograms and the map for each split as PNGs; returns the paths."""
    from pathlib import Path
    from .io import _atomic
    plt = _plt()
    paths = []
    for split in record.splits:
        for name, fn in (("tp_agreement_hist", tp_agreement_histograms), ("tp_agreement_map", tp_agreement_map)):
            fig = fn(record, split, scale)
            path = Path(directory) / f"{name}_{split}.png"
            _atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
            plt.close(fig)
            paths.append(path)
    return paths
