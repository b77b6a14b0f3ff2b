"""Figures of a record. Every figure's title states dataset, architecture, N and scale."""
from __future__ import annotations

import numpy as np

from . import metrics as M
from .analysis import caption, pair_caption  # noqa: F401  (figure titles; notebooks call plots.caption)


def _plt():
    # no matplotlib.use() here: it would override a notebook's inline backend; without a
    # display, matplotlib picks Agg by itself
    import matplotlib.pyplot as plt
    return plt


def _wrap(title, inches, fontsize=9):
    """Break a long title into lines that fit a figure ``inches`` wide."""
    import textwrap
    return "\n".join(textwrap.wrap(title, max(20, int(inches * 130 / fontsize))))


def tp_agreement_histograms(analysis, epochs=None):
    """TP-agreement histogram per recorded epoch, the exact null's pmf overlaid (Fig 3a).

    analysis: ``analysis.analyze(record, split)``; epochs: indices of the recorded epochs to
    show (default all)."""
    plt = _plt()
    a = analysis
    n_epochs = len(a.epochs)
    sel = list(range(n_epochs)) if epochs is None else [e % n_epochs for e in epochs]
    n = a.n_models
    counts, pmf = a.tp_agreement_hist[sel], a.null_pmf[sel]
    b_obs, b_ci, b_null = a.bimodality[sel], a.bimodality_ci[sel], a.null_bimodality[sel]
    k = len(sel)
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
        # any distribution on two values scores 0: then the score says nothing of modes
        values = np.count_nonzero(counts[i])
        score = ("undefined (one value)" if values == 1 else "0 (two values only)" if values == 2
                 else f"{b_obs[i]:.2f} [{b_ci[i, 0]:.2f}, {b_ci[i, 1]:.2f}]")
        ax.set_title(f"epoch {a.epochs[sel[i]]}: bimodality {score}\nnull {b_null[i]:.2f}", fontsize=8)
        ax.set_xlabel("TP-agreement")
        if i % cols == 0:
            ax.set_ylabel("fraction of examples")
    return _finish_grid(fig, axes, f"TP-agreement per epoch, null overlaid - {a.caption}")


def tp_agreement_map(analysis, also=()):
    """Epoch x TP-agreement map, observed beside the null (Fig 3b/4): colour = fraction of
    examples, one colour scale for every panel.  analysis: ``analysis.analyze(record, split)``;
    also: (title, analysis) pairs drawn between them, e.g. an independent collection."""
    plt = _plt()
    a = analysis
    n = a.n_models
    panels = [("observed", a.tp_agreement_hist / a.tp_agreement_hist.sum(1, keepdims=True))]
    panels += [(t, b.tp_agreement_hist / b.tp_agreement_hist.sum(1, keepdims=True)) for t, b in also]
    panels.append(("null (independent classifiers)", a.null_pmf))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.4), sharey=True)
    vmax = max(d.max() for _, d in panels)
    for ax, (title, data) in zip(axes, panels):
        im = ax.imshow(data.T, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=vmax,
                       extent=(-0.5, len(a.epochs) - 0.5, -0.5 / n, 1 + 0.5 / n))
        ax.set_xticks(range(len(a.epochs)), [str(e) for e in a.epochs])
        # the recorded epochs are often log-spaced; the columns are not
        ax.set_xlabel("epoch (evenly spaced columns)", fontsize=9)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("TP-agreement")
    title = _wrap(f"TP-agreement over training - {a.caption}", 4.5 * len(panels), 10)
    # room above the panels' own titles for every line of the figure's (before the colour bar
    # takes its share of the axes' space)
    fig.subplots_adjust(top=0.86 - 0.07 * title.count("\n"))
    fig.colorbar(im, ax=axes, label="fraction of examples")
    fig.suptitle(title, fontsize=10)
    return fig


REPORT_FIGURES = ("tp_agreement_hist", "tp_agreement_map", "models_needed")


def models_needed(analysis, title):
    """How many models a collection needs: the split-half reliability of accessibility and the
    bimodality of TP-agreement (one line per recorded epoch with its bootstrap interval, its
    matched-accuracy null dashed: the null's score itself grows with n) for random subsets of
    n models.

    analysis: ``analysis.analyze(record, split)``, whose ``needed_*`` arrays it draws."""
    plt = _plt()
    a = analysis
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    n = a.needed_sizes
    ax1.plot(n, a.needed_reliability, "o-", ms=3.5, lw=1, label="mean over random subsets")
    if len(n):
        ax1.fill_between(n, *np.asarray(a.needed_reliability_range).T, alpha=0.25,
                         label="smallest to largest subset")
    ax1.axhline(0.95, color="tab:gray", ls="--", lw=0.8, label="0.95")
    ax1.set_xlabel("models n")
    ax1.set_ylabel("reliability of accessibility")
    ax1.set_ylim(min(0, np.nanmin(a.needed_reliability, initial=0)), 1.02)
    ax1.legend(fontsize=7)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(a.epochs)))
    for i, e in enumerate(a.epochs):
        ax2.plot(n, a.needed_bimodality[:, i], "o-", ms=2.5, lw=1, color=colors[i], label=f"epoch {e}")
        if len(n):
            ax2.fill_between(n, *np.asarray(a.needed_bimodality_ci)[:, i].T, color=colors[i], alpha=0.12, lw=0)
        ax2.plot(n, a.needed_null_bimodality[:, i], "--", lw=0.8, color=colors[i])
    ax2.plot([], [], "--", lw=0.8, color="tab:gray", label="null (dashed)")
    ax2.fill_between([], [], [], color="tab:gray", alpha=0.25, lw=0, label=f"{a.level:.0%} CI (examples)")
    ax2.set_xlabel("models n")
    ax2.set_ylabel("bimodality of TP-agreement\n(lower = more bimodal)")
    from matplotlib.ticker import MaxNLocator
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend(fontsize=7, ncol=2)
    fig.suptitle(_wrap(title, 9, 10), fontsize=10)
    fig.tight_layout()
    return fig


def save_report_figures(record, directory):
    """Write the per-epoch histograms, the map and the models-needed figure for each split as
    PNGs; returns the paths."""
    from pathlib import Path
    from .analysis import analyze
    from .io import _atomic
    plt = _plt()
    paths = []
    for split in record.labelled_splits:
        a = analyze(record, split)
        figures = (tp_agreement_histograms(a), tp_agreement_map(a), models_needed(a, f"How many models - {a.caption}"))
        for name, fig in zip(REPORT_FIGURES, figures):
            path = Path(directory) / f"{name}_{split}.png"
            _atomic(path, lambda f: fig.savefig(f, format="png", dpi=110))
            plt.close(fig)
            paths.append(path)
    return paths


def _finish_axes(fig, ax, title, legend_size=8):
    """The end of a one-axes figure: legend, title wrapped to the figure's width, layout."""
    ax.legend(fontsize=legend_size)
    ax.set_title(_wrap(title, fig.get_figwidth()), fontsize=9)
    fig.tight_layout()
    return fig


def _finish_grid(fig, axes, title):
    # the middle of a TP-agreement histogram is where a bimodal one is empty
    axes.flat[0].legend(fontsize=8, loc="best")  # least over the bars and the null's curve
    fig.suptitle(_wrap(title, fig.get_figwidth(), 10), fontsize=10)
    fig.tight_layout()
    return fig


def agreement_histograms(analysis):
    """Agreement histogram per recorded epoch, the matched-accuracy null overlaid (Fig 5).
    analysis: ``analysis.analyze(record, split)``."""
    plt = _plt()
    a = analysis
    n = a.n_models
    obs, null = a.agreement_hist, a.null_agreement_hist
    k = len(a.epochs)
    cols = min(k, 4)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        _agreement_bars(ax, obs[i], null[i], n)
        ax.set_title(f"epoch {a.epochs[i]}", fontsize=9)
        if i % cols == 0:
            ax.set_ylabel("fraction of examples")
    return _finish_grid(fig, axes, f"Agreement per epoch, null overlaid - {a.caption}")


def _agreement_bars(ax, o, q, n, label="observed", color="tab:blue", null_label="null"):
    """Bars of the observed fractions o (n + 1,) of examples at each Agreement k/n, the null's q."""
    x = np.arange(n + 1) / n
    ax.bar(x, o, width=0.8 / n, color=color, label=label)
    ax.plot(x, q, "o-", color="tab:red", ms=2.5, lw=1, label=null_label)
    ax.set_xlabel("Agreement")


def out_of_sample_agreement(record, results, scale=None):
    """Agreement on the test set and on out-of-sample inputs, each with the null that keeps every
    model's label frequencies on those inputs, and the paper's reference: N models assigning
    labels uniformly at random (Fig 7a; 20000 seeded draws).

    results: experiments.out_of_sample_agreement(record, ...)."""
    from .analysis import shares
    plt = _plt()
    k = len(results)
    n = record.n_models
    uniform = M.null_agreement(np.full((n, 1), 1 / record.n_classes), record.n_classes, 20000, 0)[0]
    fig, axes = plt.subplots(1, k, figsize=(3.4 * k, 2.8), squeeze=False, sharey=True)
    for ax, (split, (obs, null)) in zip(axes.flat, results.items()):
        _agreement_bars(ax, shares(obs[None], n)[0], shares(null[None], n)[0], n,
                        label=f"observed (mean {obs.mean():.2f})",
                        null_label=f"label-frequency null (mean {null.mean():.2f})")
        ax.plot(np.arange(n + 1) / n, shares(uniform[None], n)[0], "s--", color="tab:gray", ms=2, lw=0.8,
                label=f"random labels (mean {uniform.mean():.2f})")
        ax.set_title(split.replace("ood_", "out-of-sample: "), fontsize=9)
        ax.legend(fontsize=7, loc="best")  # least over the null's hump and the bars
    axes.flat[0].set_ylabel("fraction of examples")
    fig.suptitle(_wrap(f"Agreement at epoch {record.epochs[-1]} - {caption(record, None, scale)}", 3.4 * k, 10),
                 fontsize=10)
    fig.tight_layout()
    return fig


def learning_epoch_by_accessibility(record, split, bins, scale=None):
    """Median learning epoch per 5% of the examples sorted by accessibility, with the median's
    interval as a box and the quartiles over (model, example) pairs as whiskers; the fraction
    never learned as grey bars (Fig 6).  bins: experiments.learning_epoch_by_accessibility."""
    plt = _plt()
    k = len(bins["n"])
    x = (np.arange(k) + 0.5) / k * 100
    w = 100 / k
    ep = np.asarray(record.epochs, float)
    top = ep[-1] * 1.5  # "not learned by the last recorded epoch" drawn above the axis' last tick
    clip = lambda v: np.where(np.isinf(v), top, v)  # noqa: E731
    med, lo, hi = clip(bins["median"]), clip(bins["ci"][:, 0]), clip(bins["ci"][:, 1])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax2 = ax.twinx()
    ax2.bar(x, bins["never"], width=0.9 * w, color="tab:gray", alpha=0.25, label="never learned (fraction of pairs)")
    ax2.set_ylim(0, 1)
    ax2.set_ylabel("fraction never learned")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.vlines(x, clip(bins["q25"]), clip(bins["q75"]), color="tab:blue", lw=1, alpha=0.6,
              label="quartiles over (model, example) pairs")
    ax.bar(x, hi - lo, bottom=lo, width=0.6 * w, color="tab:blue", alpha=0.35, label="95% CI of the median")
    ax.hlines(med, x - 0.3 * w, x + 0.3 * w, color="tab:orange", lw=2.5, label="median learning epoch")
    ax.set_yscale("log", base=2)
    ticks = [e for e in ep if e in (1, 2, 4, 8, 16, 32, 64, 128, 256) or e == ep[-1]]
    ax.set_yticks(ticks + [top], [f"{e:g}" for e in ticks] + ["never"])
    ax.set_ylim(ep[0] / 1.3, top * 1.3)
    ax.set_xlim(0, 100)
    ax.set_xlabel("examples sorted by accessibility, in bins of 5% (least accessible left)")
    ax.set_ylabel("learning epoch")
    held = f"; accessibility of {record.n_models - bins['models']} models, epochs of the other {bins['models']}" \
        if bins["models"] < record.n_models else ""
    ax.set_title(_wrap(f"Learning epoch by accessibility{held} - {caption(record, split, scale)}", 7), fontsize=9)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    fig.legend(h1 + h2, l1 + l2, fontsize=7, ncol=2, loc="lower center", frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def accessibility_scatter(a, b, label_a, label_b, title, corr=None, bins=0):
    """Accessibility of the same examples under two collections (Fig 8b-d, 24).

    corr: their ``stats.correlation`` (Pearson and Spearman with intervals), printed under
    the title; the figure computes none itself.  bins: with k > 0, also the mean of b with its
    standard error in k equal bins of a (the paper's Fig 11 matches each AdaBoost
    accessibility with the mean network accessibility and its standard error)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4))
    rng = np.random.default_rng(0)  # jitter only for the eye: accessibility is on a grid
    ax.scatter(a + rng.uniform(-0.01, 0.01, len(a)), b + rng.uniform(-0.01, 0.01, len(b)), s=4, alpha=0.35)
    if bins:
        which = np.minimum((np.asarray(a) * bins).astype(int), bins - 1)
        n = np.bincount(which, minlength=bins)
        ok = n >= 2
        mean = np.bincount(which, b, bins)[ok] / n[ok]
        sd = np.sqrt(np.maximum(np.bincount(which, np.asarray(b) ** 2, bins)[ok] / n[ok] - mean ** 2, 0))
        ax.errorbar((np.arange(bins)[ok] + 0.5) / bins, mean, yerr=sd / np.sqrt(n[ok] - 1), fmt="o-",
                    color="tab:red", ms=3, capsize=2, lw=1, label=f"mean {label_b} per bin, ± s.e.")
        ax.legend(fontsize=7, loc="lower right")
    ax.plot([0, 1], [0, 1], color="tab:gray", lw=0.8)
    ax.set_xlabel(f"accessibility: {label_a}")
    ax.set_ylabel(f"accessibility: {label_b}")
    note = "" if corr is None else (
        f"\nr = {corr['pearson']:.2f} [{corr['pearson_ci'][0]:.2f}, {corr['pearson_ci'][1]:.2f}], "
        f"rho = {corr['spearman']:.2f} [{corr['spearman_ci'][0]:.2f}, {corr['spearman_ci'][1]:.2f}]")
    ax.set_title(_wrap(f"{title}", 4.2) + note + f"\n{len(a)} examples", fontsize=9)
    fig.tight_layout()
    return fig


def correlation_matrix(m, title):
    """Accessibility correlations among collections (experiments.correlation_matrix): each
    pair's Pearson r, and under it the pair's noise ceiling; the diagonal gives each
    collection's split-half reliability.  The colour is r over the ceiling, the share of the
    agreement the collections' noise allows that the pair shows (r itself crowds near 1 and
    would colour every cell alike).  Beyond 8 collections the cells carry no text."""
    plt = _plt()
    k = len(m["labels"])
    side = min(1.3 * k + 2.4, 12)
    fig, ax = plt.subplots(figsize=(side, min(1.1 * k + 1.8, 11)))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = m["pearson"] / m["ceiling"]
    low = min(0.5, np.floor(np.nanmin(ratio) * 10) / 10) if np.isfinite(ratio).any() else 0.5
    im = ax.imshow(np.ma.masked_invalid(ratio), vmin=low, vmax=1, cmap="viridis")
    if k <= 8:
        for i in range(k):
            for j in range(k):
                if i == j:
                    text, color = f"rel.\n{m['reliability'][i]:.2f}", "black"
                else:
                    text = f"{m['pearson'][i, j]:.2f}\nceil. {m['ceiling'][i, j]:.2f}"
                    color = "black" if ratio[i, j] > low + 0.7 * (1 - low) else "white"
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(k), m["labels"], rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(k), m["labels"], fontsize=8)
    fig.colorbar(im, ax=ax, label="r / noise ceiling")
    fig.suptitle(_wrap(title + ". Each cell: the pair's Pearson r of accessibility and its noise ceiling, "
                       "coloured by r / ceiling; the diagonal: split-half reliability", side, 10), fontsize=10)
    fig.tight_layout()
    return fig


def bimodality_examples():
    """Pearson bimodality of reference distributions on [0, 1] (chapter 2)."""
    plt = _plt()
    x = np.linspace(0, 1, 11)
    cases = {"two equal spikes": np.where((x == 0) | (x == 1), 1.0, 0.0),
             "U-shaped": 1 / (0.05 + x * (1 - x)),
             "uniform": np.ones_like(x),
             "bell (binomial)": np.array([1, 10, 45, 120, 210, 252, 210, 120, 45, 10, 1], float)}
    fig, axes = plt.subplots(1, len(cases), figsize=(11, 2.4), sharey=False)
    for ax, (name, w) in zip(axes, cases.items()):
        w = w / w.sum()
        ax.bar(x, w, width=0.08)
        ax.set_title(f"{name}\nbimodality {M.bimodality_of_distribution(x, w):.2f}", fontsize=9)
        ax.set_xlabel("TP-agreement")
    fig.tight_layout()
    return fig


def accessibility_and_learning_epoch(record, split, scale=None):
    """Histogram of accessibility, and of the learning epoch over (model, example) pairs."""
    plt = _plt()
    preds, labels = record.predictions[split], record.labels[split]
    acc = M.accessibility(M.tp_agreement(preds, labels))
    le = M.learning_epoch(preds, labels, record.epochs)
    fig, axes = plt.subplots(1, 2, figsize=(9, 2.8))
    axes[0].hist(acc, bins=20, range=(0, 1))
    axes[0].set_xlabel("accessibility")
    axes[0].set_ylabel("examples")
    ticks = list(record.epochs) + ["never"]
    counts = [np.sum(le == e) for e in record.epochs] + [np.sum(np.isnan(le))]
    axes[1].bar(range(len(ticks)), np.array(counts) / le.size)
    axes[1].set_xticks(range(len(ticks)), [str(t) for t in ticks], rotation=90, fontsize=8)
    axes[1].set_xlabel("learning epoch (bars evenly spaced)")
    axes[1].set_ylabel("fraction of pairs")
    fig.suptitle(_wrap(f"Accessibility and learning epoch - {caption(record, split, scale)}", 9, 10), fontsize=10)
    fig.tight_layout()
    return fig


def dataset_samples(ds, per_class=6, max_classes=12, title=None):
    """A grid of training images, one row per class (Fig 12): what a dataset looks like."""
    plt = _plt()
    classes = list(range(min(ds.n_classes, max_classes)))
    fig, axes = plt.subplots(len(classes), per_class, figsize=(0.9 * per_class + 1.2, 0.9 * len(classes)),
                             squeeze=False)
    for row, c in zip(axes, classes):
        idx = np.flatnonzero(ds.y_train == c)[:per_class]
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(idx):
                _show(ax, ds.x_train[idx[j]])
        row[0].set_ylabel(str(ds.classes[c]), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title or f"{ds.name}: {len(ds.y_train)} training images, {ds.n_classes} classes", fontsize=10)
    fig.tight_layout()
    return fig


def _show(ax, img):
    """An (H, W, C) uint8 image: grey when C is 1, RGB when C is 3."""
    if img.shape[2] == 1:
        ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(img)


def first_and_last_learned(record, split, images, picks, scale=None):
    """Fig 1: per class, the images the collection learns first (left) and last (right).

    images: (n_examples, H, W, C) uint8 of the split (experiments.record_images); picks:
    {class: (first indices, last indices)} (experiments.first_and_last).  Each image is titled
    with its accessibility.
    """
    plt = _plt()
    per_class = max(max(len(f), len(l)) for f, l in picks.values())
    acc = M.accessibility(record.tp_agreement(split))
    names = record.meta.get("classes") or [str(c) for c in range(record.n_classes)]
    cols = 2 * per_class + 1
    fig, axes = plt.subplots(len(picks), cols, figsize=(0.95 * cols + 0.8, 1.05 * len(picks) + 0.5),
                             squeeze=False)
    for row, (c, (first, last)) in zip(axes, picks.items()):
        for j, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if j == per_class:
                ax.axis("off")
                continue
            k = j if j < per_class else j - per_class - 1
            group = first if j < per_class else last
            if k < len(group):
                _show(ax, images[group[k]])
                ax.set_title(f"{acc[group[k]]:.2f}", fontsize=7, pad=2)
        row[0].set_ylabel(str(names[c]), rotation=0, ha="right", va="center", fontsize=8)
    axes[0, per_class // 2].annotate("learned first", (0.5, 1.45), xycoords="axes fraction", ha="center",
                                     fontsize=9)
    axes[0, per_class + 1 + per_class // 2].annotate("learned last", (0.5, 1.45), xycoords="axes fraction",
                                                     ha="center", fontsize=9)
    fig.suptitle(_wrap(f"First and last learned, by accessibility - {caption(record, split, scale)}",
                       0.95 * cols + 0.8, 10), fontsize=10)
    fig.tight_layout()
    return fig


def tp_agreement_stacked(record, split, epochs=None, scale=None):
    """Fig 29: the TP-agreement histogram of every example at each recorded epoch (as Fig 3),
    each bar stacked by the examples' most frequent predicted label (the mode over the models,
    one colour a class).  epochs: indices of the recorded epochs to show (default all)."""
    plt = _plt()
    preds, labels = record.predictions[split], record.labels[split]
    n, k = record.n_models, record.n_classes
    names = record.meta.get("classes") or [str(c) for c in range(k)]
    sel = list(range(record.n_epochs)) if epochs is None else [e % record.n_epochs for e in epochs]
    cols = min(len(sel), 4)
    rows = -(-len(sel) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows + 0.6), squeeze=False, sharey=True)
    cmap = plt.get_cmap("tab10" if k <= 10 else "tab20")
    x = np.arange(n + 1) / n
    for ax, e in zip(axes.flat, sel):
        right = (preds[:, e] == labels).sum(0)
        _, top = M.mode(preds[:, e], return_label=True)
        bottom = np.zeros(n + 1)
        for c in range(k):
            h = np.bincount(right[top == c], minlength=n + 1) / len(labels)
            ax.bar(x, h, bottom=bottom, width=0.8 / n, color=cmap(c % cmap.N), label=names[c])
            bottom += h
        ax.set_title(f"epoch {record.epochs[e]} (accuracy {(preds[:, e] == labels).mean():.2f})", fontsize=9)
        ax.set_xlabel("TP-agreement", fontsize=8)
    for ax in axes.flat[len(sel):]:
        ax.axis("off")
    for r in range(rows):
        axes[r, 0].set_ylabel("fraction of examples", fontsize=8)
    handles, labs = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labs, title="most frequent predicted label", fontsize=8, title_fontsize=8,
               ncol=min(k, 10), loc="lower center", frameon=False)
    fig.suptitle(_wrap(f"TP-agreement stacked by the collection's most frequent label - {caption(record, split, scale)}",
                       fig.get_figwidth(), 10), fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight() + 0.02, 1, 1))
    return fig


def tp_agreement_by_predicted_label(record, split, classes=None, epoch_index=-1, scale=None):
    """Fig 29: for the examples of each true class, TP-agreement histograms stacked by each
    example's most frequent predicted label at the epoch (the mode over the models)."""
    plt = _plt()
    preds, labels = record.predictions[split][:, epoch_index], record.labels[split]
    n = record.n_models
    tpa = (preds == labels).mean(0)
    _, top = M.mode(preds, return_label=True)
    names = record.meta.get("classes") or [str(c) for c in range(record.n_classes)]
    classes = list(range(min(record.n_classes, 10))) if classes is None else list(classes)
    cmap = plt.get_cmap("tab10" if record.n_classes <= 10 else "tab20")
    cols = min(len(classes), 5)
    rows = -(-len(classes) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.7 * cols, 2.3 * rows + 0.45), squeeze=False, sharey=True)
    bins = np.arange(n + 2) / n - 0.5 / n
    for ax, c in zip(axes.flat, classes):
        mine = labels == c
        # every class in every panel, empty ones too: one colour a label, one legend for all
        ax.hist([tpa[mine & (top == k)] for k in range(record.n_classes)], bins=bins, stacked=True,
                color=[cmap(k % cmap.N) for k in range(record.n_classes)], label=[str(x) for x in names])
        ax.set_title(f"true class {names[c]}", fontsize=9)
        ax.set_xlabel("TP-agreement", fontsize=8)
    for ax in axes.flat[len(classes):]:
        ax.axis("off")
    for r in range(rows):
        axes[r, 0].set_ylabel("examples", fontsize=8)
    handles, labs = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labs, title="most frequent predicted label", fontsize=8, title_fontsize=8,
               ncol=min(record.n_classes, 10), loc="lower center", frameon=False)
    fig.suptitle(_wrap(f"TP-agreement at epoch {record.epochs[epoch_index]}, coloured by the most predicted label"
                       f" - {caption(record, split, scale)}", fig.get_figwidth(), 10), fontsize=10)
    fig.tight_layout(rect=(0, 0.45 / fig.get_figheight(), 1, 1))
    return fig


def tp_agreement_dynamics(record, split, n_examples=12, seed=0, scale=None):
    """Fig 30: TP-agreement of single examples over the recorded epochs, for examples drawn
    evenly across accessibility (seeded), coloured by their accessibility."""
    plt = _plt()
    tpa = record.tp_agreement(split)
    acc = M.accessibility(tpa)
    order = np.argsort(acc, kind="stable")
    rng = np.random.default_rng(seed)
    # one example from each of n_examples equal slices of the accessibility order
    slices = np.array_split(order, n_examples)
    picks = [int(rng.choice(s)) for s in slices if len(s)]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    cmap = plt.get_cmap("viridis")
    for i in picks:
        ax.plot(range(record.n_epochs), tpa[:, i], "o-", ms=3, lw=1, color=cmap(acc[i]))
    ax.set_xticks(range(record.n_epochs), [str(e) for e in record.epochs])
    ax.set_xlabel("epoch")
    ax.set_ylabel("TP-agreement")
    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, 1))
    fig.colorbar(sm, ax=ax, label="accessibility")
    ax.set_title(_wrap(f"TP-agreement of {len(picks)} examples over training - {caption(record, split, scale)}", 5),
                 fontsize=9)
    fig.tight_layout()
    return fig


def accuracy_by_stage(curves, title, x=None, xlabel="weak learners", reference=None):
    """Fig 31: test accuracy against the number of boosting stages, one line per curve (or
    against ``x``, e.g. the recorded epochs, with markers).

    curves: {label: (n_stages,) accuracies}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for label, acc in curves.items():
        if x is None:
            ax.plot(np.arange(1, len(acc) + 1), acc, label=label)
        else:
            ax.plot(x, acc, "o-", ms=3, label=label)
    if x is not None:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(x), [str(int(v)) for v in x])
    if reference is not None:  # (value, label): e.g. the networks' final accuracy
        ax.axhline(reference[0], color="tab:gray", ls="--", lw=1, label=reference[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test accuracy")
    return _finish_axes(fig, ax, title)


def matched_accuracy(table, label_a, label_b, title):
    """Fig 8a: examples correct for both, only A, only B, at matched ensemble accuracy.

    table: experiments.matched_accuracy_table.  x is the stronger ensemble's accuracy; shaded,
    each count's 95% bootstrap interval; pairs past the weaker one's last epoch are marked with
    a dashed line."""
    plt = _plt()
    acc_a, acc_b = table[f"accuracy {label_a}"].to_numpy(), table[f"accuracy {label_b}"].to_numpy()
    x = np.maximum(acc_a, acc_b)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    n = (table["both"] + table[f"only {label_a}"] + table[f"only {label_b}"] + table["neither"]).to_numpy()
    for key, style in (("both", "o-"), (f"only {label_a}", "s-"), (f"only {label_b}", "^-")):
        line, = ax.plot(x, table[key].to_numpy() / n, style, ms=3.5, lw=1, label=f"correct for {key}")
        lohi = table.attrs.get("ci", {}).get(key)  # (pairs, 2) counts, beside the printed "[lo, hi]"
        if lohi is not None:
            ax.fill_between(x, lohi[:, 0] / n, lohi[:, 1] / n, color=line.get_color(), alpha=0.18, lw=0)
    past = table["past weaker's end"].to_numpy()
    if past.any():
        ax.axvline(x[past].min(), color="tab:gray", ls="--", lw=0.8)
        ax.annotate("weaker one at its end", (x[past].min(), 0.97), xycoords=ax.get_xaxis_transform(), rotation=90,
                    fontsize=7, ha="right", va="top", color="tab:gray")
    ax.set_xlabel("ensemble accuracy (the stronger collection)")
    ax.set_ylabel("fraction of examples")
    return _finish_axes(fig, ax, title)


def bimodality_over_training(table, title):
    """Fig 9a: observed (solid, with its 95% bootstrap interval shaded) and null (dotted)
    bimodality per epoch, one colour per collection.

    table: experiments.bimodality_over_training."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for k, (label, rows) in enumerate(table.groupby("collection", sort=False)):
        color = f"C{k}"
        ax.plot(rows["epoch"], rows["bimodality"], "o-", color=color, ms=3, label=f"{label}")
        ax.fill_between(rows["epoch"], rows["lo"], rows["hi"], color=color, alpha=0.18, lw=0)
        ax.plot(rows["epoch"], rows["null bimodality"], ":", color=color, label=f"{label}: null")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("bimodality (lower = more bimodal)")
    return _finish_axes(fig, ax, title, legend_size=7)


def rank_correlation_map(rho, title):
    """Spearman's rho among per-example scores (``compare.rank_correlations``), each cell
    printed, coloured on a -1..1 scale: a difficulty score (forgetting events, EL2N, the
    learning epoch) correlates negatively with an ease score (accessibility, confidence)."""
    plt = _plt()
    labels = list(rho.index)
    k = len(labels)
    side = min(0.75 * k + 3.2, 12)
    fig, ax = plt.subplots(figsize=(side, min(0.6 * k + 2.6, 10)))
    im = ax.imshow(rho.to_numpy(float), vmin=-1, vmax=1, cmap="RdBu_r")
    for i in range(k):
        for j in range(k):
            v = rho.iloc[i, j]
            ax.text(j, i, "" if not np.isfinite(v) else f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(v) and abs(v) > 0.6 else "black")
    short = [lab.replace(" (median)", "").replace("area under the margin", "AUM") for lab in labels]
    ax.set_xticks(range(k), short, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(k), short, fontsize=8)
    fig.colorbar(im, ax=ax, label="Spearman's rho")
    ax.set_title(_wrap(title, side), fontsize=9)
    fig.tight_layout()
    return fig


def binned_reference(curves, xlabel, ylabel, title, reference=None):
    """The mean of an outside reference in bins of a score (``compare.binned_means`` tables),
    one line per {label: table}, with 95% intervals; reference: (label, value) drawn as a
    horizontal line (e.g. the mean over all examples)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.8))
    for label, t in curves.items():
        mid = (t["from"] + t["to"]) / 2
        ax.errorbar(mid, t["mean"], yerr=[t["mean"] - t["low"], t["high"] - t["mean"]], fmt="o-", ms=3, capsize=2,
                    lw=1, label=label)
    if reference is not None:
        ax.axhline(reference[1], color="tab:gray", lw=0.8, ls="--", label=reference[0])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(0, 1)
    return _finish_axes(fig, ax, title, legend_size=7)


def reliability_curves(curves, title, target=0.9):
    """Split-half reliability (Spearman-Brown corrected) of each score against the number of
    models averaged (``compare.reliability_curves``), the range over the random splits shaded."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.8, 3.9))
    for name, c in curves.items():
        line, = ax.plot(c["sizes"], c["reliability"], "o-", ms=3, lw=1, label=name)
        ax.fill_between(c["sizes"], c["range"][:, 0], c["range"][:, 1], color=line.get_color(), alpha=0.12, lw=0)
    ax.axhline(target, color="tab:gray", lw=0.8, ls="--", label=f"reliability {target:g}")
    ax.set_xlabel("models in the collection")
    ax.set_ylabel("split-half reliability")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
    return _finish_axes(fig, ax, title, legend_size=7)


def kappa_over_epochs(epochs, lines, title):
    """Error consistency (kappa) over the recorded epochs, {label: (estimate, ci)}, each with its
    95% interval; 0 = mistakes placed as independently as chance allows."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.4, 3.6))
    x = np.arange(len(epochs))
    for label, (est, ci) in lines.items():
        line, = ax.plot(x, est, "o-", ms=3, lw=1, label=label)
        ax.fill_between(x, ci[:, 0], ci[:, 1], color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(0, color="tab:gray", lw=0.8)
    ax.set_xticks(x, [str(e) for e in epochs])
    ax.set_xlabel("epoch (evenly spaced columns)")
    ax.set_ylabel("error consistency (kappa)")
    return _finish_axes(fig, ax, title, legend_size=7)
