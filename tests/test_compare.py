"""Chapter 8's comparisons (agreebook.compare) on hand-made cases."""
import doctest

import numpy as np
import pandas as pd

from agreebook import compare as C


def test_docstring_examples_run():
    assert doctest.testmod(C).failed == 0


def test_rank_correlations_use_complete_pairs():
    rng = np.random.default_rng(0)
    x = rng.random(200)
    t = pd.DataFrame({"x": x, "noisy": x + 0.1 * rng.normal(size=200), "holes": np.where(np.arange(200) < 50, np.nan, -x)})
    rho, ci, n = C.rank_correlations(t, n_boot=200)
    assert rho.loc["x", "holes"] == -1 and n.loc["x", "holes"] == 150 and n.loc["x", "noisy"] == 200
    lo, hi = (float(v) for v in ci.loc["x", "noisy"].strip("[]").split(","))
    assert lo <= rho.loc["x", "noisy"] <= hi and 0.8 < lo


def test_shared_wrong_labels_against_the_networks_own_confusions():
    # class 0: networks confuse it with 1 on half the examples and with 2 on the other half;
    # people always prefer 1.  Observed: the half where the networks say 1; expected: 0.5
    n = 400
    y = np.zeros(n, int)
    wrong = np.where(np.arange(n) % 2 == 0, 1, 2)
    preds = np.broadcast_to(wrong, (5, 1, n)).copy()
    counts = np.tile([40, 9, 1], (n, 1))
    out = C.shared_wrong_labels(preds, y, counts, n_boot=200)
    assert out["n"] == n and out["observed"] == 0.5 and abs(out["expected"] - 0.5) < 1e-12
    # people following the networks example by example: observed 1, still expected 0.5
    counts2 = np.where(wrong[:, None] == np.arange(3), 9, 1)
    counts2[:, 0] = 40
    out2 = C.shared_wrong_labels(preds, y, counts2, n_boot=200)
    assert out2["observed"] == 1.0 and out2["ci"][0] == 1.0 and abs(out2["expected"] - 0.5) < 1e-12


def test_a_tie_among_peoples_wrong_labels_is_shared():
    y = np.zeros(10, int)
    preds = np.ones((3, 1, 10), int)                 # the networks say 1
    counts = np.tile([40, 5, 5], (10, 1))            # people: 1 and 2 tied
    out = C.shared_wrong_labels(preds, y, counts, n_boot=100)
    assert out["observed"] == 0.5 and out["expected"] == 0.5


def test_human_error_consistency_by_hand():
    # 4 images; networks: TP-agreement 1, 1, 0, 0.5; people: accuracy 1, 0.5, 0, 1
    y = np.zeros(4, int)
    preds = np.array([[[0, 0, 1, 0]], [[0, 0, 1, 1]]])        # 2 networks, 1 epoch
    counts = np.array([[10, 0], [5, 5], [0, 10], [10, 0]])
    a, h = np.array([1, 1, 0, 0.5]), np.array([1, 0.5, 0, 1])
    obs = np.mean(a * h + (1 - a) * (1 - h))                   # 0.75
    p, q = a.mean(), h.mean()                                 # 0.625 each
    exp = p * q + (1 - p) * (1 - q)
    out = C.human_error_consistency(preds, y, counts, n_boot=50)
    assert abs(out["estimate"][0] - (obs - exp) / (1 - exp)) < 1e-12
    assert out["ci"].shape == (1, 2)
    assert abs(out["estimate_max"][0] - (1 - abs(p - q) - exp) / (1 - exp)) < 1e-12  # p = q here: 1
    # two different people on one image: (r(r-1) + (n-r)(n-r-1)) / (n(n-1)); two networks likewise
    pp = np.array([1, (5 * 4 + 5 * 4) / 90, 1, 1])
    exp_pp = q * q + (1 - q) * (1 - q)
    assert abs(out["people"] - (pp.mean() - exp_pp) / (1 - exp_pp)) < 1e-12
    nn = np.array([1, 1, 1, 0])  # image 3: one of the two networks right, so two distinct ones disagree
    exp_nn = p * p + (1 - p) * (1 - p)
    assert abs(out["networks"][0] - (nn.mean() - exp_nn) / (1 - exp_nn)) < 1e-12
    # networks whose mistakes fall where people's are: near 1; on the other images: below 0
    rng = np.random.default_rng(0)
    hard = rng.random(500) < 0.3
    people = np.stack([np.where(hard, 15, 50), np.where(hard, 35, 0)], 1)
    same = np.broadcast_to(np.where(hard, 1, 0), (4, 2, 500))
    other = np.broadcast_to(np.where(np.roll(hard, 1) & ~hard, 1, 0), (4, 2, 500))
    assert C.human_error_consistency(same, np.zeros(500, int), people, n_boot=50)["estimate"].min() > 0.5
    assert C.human_error_consistency(other, np.zeros(500, int), people, n_boot=50)["estimate"].max() < 0


def test_human_reliability_reads_the_annotators_noise():
    rng = np.random.default_rng(1)
    y = np.zeros(3000, int)
    p = rng.beta(0.5, 0.5, 3000)               # images differ a lot: halves agree
    flat = np.full(3000, 0.9)                  # all images alike: halves share only noise
    many, few = [np.stack([r, n - r], 1) for r, n in ((rng.binomial(50, p), 50), (rng.binomial(50, flat), 50))]
    assert C.human_reliability(many, y) > 0.9
    assert abs(C.human_reliability(few, y)) < 0.1


def test_against_reference_gives_the_noise_ceiling_and_skips_constant_scores():
    t = pd.DataFrame({"a": np.arange(30.0), "flat": np.ones(30), "holes": np.r_[np.full(10, np.nan), np.arange(20.0)]})
    out = C.against_reference(t, np.arange(30.0), reliability={"a": 0.64}, reference_reliability=0.81, n_boot=50)
    assert list(out.index) == ["a", "holes"]  # a constant score has no rank correlation
    assert abs(out.loc["a", "noise ceiling"] - 0.72) < 1e-12 and abs(out.loc["a", "|rho| / ceiling"] - 1 / 0.72) < 1e-12
    assert out.loc["holes", "n"] == 20 and np.isnan(out.loc["holes", "noise ceiling"])


def test_binned_means_close_the_last_bin_and_drop_small_ones():
    x = np.r_[np.zeros(20), np.full(5, 0.55), np.ones(20)]
    y = np.r_[np.zeros(20), np.ones(5), np.ones(20)]
    t = C.binned_means(x, y, n_boot=50)
    assert t["bin"].tolist() == ["[0, 0.1)", "[0.9, 1]"] and t["n"].tolist() == [20, 20]
    assert t["mean"].tolist() == [0.0, 1.0] and (t["low"] <= t["mean"]).all()


def test_reliability_curves_table_and_target():
    rng = np.random.default_rng(2)
    shared = rng.random(300)
    pm = {"steady": shared + 0.05 * rng.normal(size=(6, 300)), "noise": rng.normal(size=(6, 300))}
    curves, table = C.reliability_curves(pm, target=0.9)
    assert list(curves["steady"]["sizes"]) == [2, 4, 6]  # even sizes: both halves whole
    assert table.loc["steady", "models to reach 0.9"] == 2 and np.isnan(table.loc["noise", "models to reach 0.9"])
    assert table.loc["steady", "reliability at N=6"] > 0.99 > 0.3 > table.loc["noise", "reliability at N=6"]


def test_shared_wrong_labels_null_keeps_the_classes_common_confusion():
    # every class-0 example: 3 of 5 networks say 1, the other two 2 or 3; people's common mistake
    # is 1 everywhere.  The match comes from the class's confusion alone: observed = expected
    rng = np.random.default_rng(0)
    n = 300
    preds = np.ones((5, 1, n), int)
    preds[3:, 0] = rng.integers(2, 4, size=(2, n))
    counts = np.tile([40, 6, 2, 2], (n, 1))
    out = C.shared_wrong_labels(preds, np.zeros(n, int), counts, n_boot=100)
    assert out["observed"] == 1.0 and out["expected"] == 1.0
