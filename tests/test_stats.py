"""agreebook.stats: hand-computed cases, and intervals checked against simulation."""
import numpy as np
import pytest
from scipy import stats as sps

from agreebook import metrics as M
from agreebook import stats as S
from tolerance import ULPS64


def _independent(n_models, n_examples, p, rng, n_epochs=1):
    """Correctness of independent models (prediction 1 = right, label 1)."""
    right = rng.random((n_models, n_epochs, n_examples)) < p
    return right.astype(np.int16), np.ones(n_examples, np.int16)


def _shared_difficulty(n_models, n_epochs, n_examples, rng):
    """Models that share each example's difficulty (right with probability ``easy``, one draw
    per example): predictions and labels, 1 = right."""
    easy = rng.random(n_examples)
    right = rng.random((n_models, n_epochs, n_examples)) < easy
    return right.astype(np.int16), np.ones(n_examples, np.int16)


def _coverage(interval, truth, reps, seed):
    """The share of ``reps`` seeded repetitions whose interval(rng, r) -> (lo, hi) holds truth."""
    rng = np.random.default_rng(seed)
    return np.mean([lo <= truth <= hi for lo, hi in (interval(rng, r) for r in range(reps))])


def _pair(rho, n):
    return lambda rng: rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], size=n).T


def test_bootstrap_with_one_example_a_block_is_the_ordinary_bootstrap():
    bs = S.Bootstrap(50, n_boot=300, seed=1)
    assert bs.n_blocks == 50 and np.all(bs.sizes == 1)
    assert np.all(bs.weights.sum(1) == 50)  # every draw has n examples
    x = np.arange(50.0)
    total, draws = bs.sums(x)
    assert total == x.sum()
    # draw b's total, summed example by example: each example counted as often as its block is
    by_hand = [sum(x[i] * bs.weights[b, bs.block[i]] for i in range(50)) for b in range(300)]
    np.testing.assert_allclose(draws, by_hand)


def test_block_bootstrap_counts_have_the_binomial_spread_when_blocks_are_uneven():
    """1500 examples in 1000 blocks (sizes 1 and 2): a draw's raw count is over a random number
    of examples; rescaled to n it has the ordinary bootstrap's sd, sqrt(n p (1 - p))."""
    x = (np.arange(1500) % 10 != 0).astype(float)  # p = 0.9
    bs = S.Bootstrap(1500, n_boot=4000, seed=2)
    assert set(bs.sizes) == {1.0, 2.0}
    _, draws = bs.sums(x)
    sd = np.std(draws * 1500 / bs.drawn)
    assert abs(sd / np.sqrt(1500 * 0.9 * 0.1) - 1) < 0.06  # 4000 draws: the sd's own error ~1%


def test_block_bootstrap_keeps_the_variance_of_the_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40000)
    out = S.mean_ci(x[None], n_boot=2000, seed=3)  # 40000 examples in 1000 blocks
    width = np.diff(out["ci"][0])[0]
    want = 2 * 1.96 * x.std() / np.sqrt(len(x))
    assert abs(width / want - 1) < 0.1  # 2000 draws: the width's own error is ~3%


def test_bimodality_ci_of_identical_models_is_a_point():
    p = np.zeros((6, 2, 100), np.int16)
    p[:, :, :30] = 1
    out = S.bimodality_ci(p, np.ones(100, np.int16), n_boot=200)
    np.testing.assert_allclose(out["estimate"], M.bimodality(M.tp_agreement(p, np.ones(100)), axis=1))
    assert out["estimate"][0] == pytest.approx(0, abs=ULPS64)
    assert np.all(out["ci"][:, 0] <= out["estimate"]) and np.all(out["estimate"] <= out["ci"][:, 1])
    assert out["resampled"] == "examples"


@pytest.mark.parametrize("n_models,p,n", [(10, 0.7, 2000), (5, 0.5, 300)])
def test_bimodality_ci_covers_the_true_value_of_independent_models(n_models, p, n):
    """The true bimodality of independent models at accuracy p is that of Binomial(N, p)/N."""
    truth = M.bimodality_of_distribution(np.arange(n_models + 1) / n_models,
                                         sps.binom.pmf(np.arange(n_models + 1), n_models, p))
    ci = lambda rng, r: S.bimodality_ci(*_independent(n_models, n, p, rng), n_boot=500, seed=r)["ci"][0]
    # measured 0.93 in 300 repetitions for both settings; 200 repetitions: sd 0.015
    assert 0.88 <= _coverage(ci, truth, 200, 11) <= 0.99


def test_mean_ci_covers_the_mean_of_tp_agreement():
    ci = lambda rng, r: S.mean_ci(M.tp_agreement(*_independent(8, 400, 0.6, rng)), n_boot=500, seed=r)["ci"][0]
    assert 0.90 <= _coverage(ci, 0.6, 200, 5) <= 0.99


def test_correlation_matches_scipy_and_ranks_on_ties():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 6, 300) / 5  # a lattice with ties, like accessibility
    b = np.clip(a + rng.normal(0, 0.3, 300), 0, 1)
    out = S.correlation(a, b, n_boot=300)
    assert out["pearson"] == pytest.approx(sps.pearsonr(a, b).statistic, rel=ULPS64)
    assert out["spearman"] == pytest.approx(sps.spearmanr(a, b).statistic, rel=ULPS64)
    assert out["pearson_p"] == pytest.approx(sps.pearsonr(a, b).pvalue, rel=ULPS64)
    for key in ("pearson", "spearman"):
        lo, hi = out[f"{key}_ci"]
        assert lo < out[key] < hi
    x = np.arange(100.0)
    assert S.correlation(x, x ** 3, n_boot=100)["spearman"] == pytest.approx(1.0)


def test_spearman_ci_covers_rho_s_where_the_correlation_is_high():
    """Re-ranking every draw: an interval from fixed ranks measured 0.88x the width at rho 0.95."""
    rho_s = 6 / np.pi * np.arcsin(0.9 / 2)  # Spearman's rho of a bivariate normal
    ci = lambda rng, r: S.correlation(*_pair(0.9, 200)(rng), n_boot=400, seed=r)["spearman_ci"]
    assert 0.89 <= _coverage(ci, rho_s, 150, 12) <= 0.99


def test_correlation_of_a_constant_is_nan_not_zero():
    a = np.ones(100)
    a[0] = 2.0  # constant in about 37% of draws
    b = np.random.default_rng(0).random(100)
    out = S.correlation(np.ones(100), b, n_boot=100)
    assert np.isnan(out["pearson"]) and np.isnan(out["pearson_ci"]).all()
    lo, hi = S.correlation(a, b, n_boot=400)["pearson_ci"]
    assert abs(hi) > 1e-3  # the draws where a is constant are dropped, not counted as r ~ 1e-8


def test_correlation_ci_covers_rho():
    ci = lambda rng, r: S.correlation(*_pair(0.5, 300)(rng), n_boot=500, seed=r)["pearson_ci"]
    assert 0.90 <= _coverage(ci, 0.5, 200, 8) <= 0.99


def test_spearman_brown_by_hand():
    assert S.spearman_brown(0.5) == pytest.approx(2 / 3)
    assert S.spearman_brown(0.5, 3) == pytest.approx(1.5 / 2)
    assert S.spearman_brown(1.0) == 1.0 and S.spearman_brown(0.0) == 0.0
    # negative half correlations count as 0: 3r/(1+2r) would give +9 at r = -0.6
    assert S.spearman_brown(-0.6, 3) == 0.0 and S.spearman_brown(-1.0) == 0.0


def test_split_half_reliability_of_an_odd_collection_by_hand():
    """Five models: halves of two, one model left out, corrected by 5/2 = 2.5."""
    rng = np.random.default_rng(7)
    p, _ = _shared_difficulty(5, 2, 200, rng)
    y = [1] * 200  # a list: labels are checked like everywhere else
    out = S.split_half_reliability(p, y, n_splits=6, seed=1)
    r = np.clip(out["half_r"], 0, 1)
    np.testing.assert_allclose(out["reliability"], np.mean(2.5 * r / (1 + 1.5 * r)))


def test_subset_pass_does_not_depend_on_the_chunk_size(monkeypatch):
    rng = np.random.default_rng(5)
    p, y = _shared_difficulty(7, 3, 300, rng)
    whole = S.models_needed(p, y, n_draws=3)
    monkeypatch.setattr(S, "_CHUNK", 37)  # 300 examples in 9 chunks, the last one short
    chunked = S.models_needed(p, y, n_draws=3)
    for key in ("reliability", "bimodality", "null_bimodality", "bimodality_ci"):
        np.testing.assert_allclose(chunked[key], whole[key], rtol=ULPS64)


def test_split_half_reliability_identical_one_independent_zero():
    p = np.zeros((6, 3, 90), np.int16)
    p[:, :, ::4] = 1
    assert S.split_half_reliability(p, np.ones(90, np.int16))["reliability"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    preds, labels = _independent(10, 5000, 0.7, rng, n_epochs=2)
    out = S.split_half_reliability(preds, labels, n_splits=10)
    assert abs(out["reliability"]) < 0.05  # independent models share no difficulty: r ~ N(0, 1/sqrt(n))
    assert out["half_r"].shape == (10,)


def test_split_half_reliability_by_hand():
    """Four models, one split [0, 1] vs [2, 3]: the halves' accessibility and 2r/(1+r)."""
    rng = np.random.default_rng(1)
    p = (rng.random((4, 2, 60)) < 0.5).astype(np.int16)
    y = np.ones(60, np.int16)
    out = S.split_half_reliability(p, y, n_splits=20, seed=4)
    rs = []
    for a, b in [([0, 1], [2, 3]), ([0, 2], [1, 3]), ([0, 3], [1, 2])]:
        r = np.corrcoef(M.accessibility(M.tp_agreement(p[a], y)), M.accessibility(M.tp_agreement(p[b], y)))[0, 1]
        rs.append(r)
    # every split of 4 models is one of these 3 (up to the halves' order, which r ignores)
    assert all(min(abs(h - r) for r in rs) < ULPS64 for h in out["half_r"])
    np.testing.assert_allclose(S.spearman_brown(out["half_r"]).mean(), out["reliability"])


def test_models_needed_grows_with_n_and_ends_at_the_whole_collection():
    rng = np.random.default_rng(3)
    preds, labels = _shared_difficulty(16, 3, 800, rng)
    out = S.models_needed(preds, labels, n_draws=4)
    assert out["sizes"][0] == 2 and out["sizes"][-1] == 16
    # the null of n independent models: its bimodality grows with n, toward 2 - 2/n
    assert out["null_bimodality"][0, 0] < out["null_bimodality"][-1, 0]
    assert np.all(np.diff(out["reliability"][1:]) > -0.02) and out["reliability"][-1] > out["reliability"][0]
    # a subset of all 16 models is the collection itself: its bimodality exactly
    np.testing.assert_allclose(out["bimodality"][-1], M.bimodality(M.tp_agreement(preds, labels), axis=1))
    assert out["bimodality_range"].shape == (len(out["sizes"]), 3, 2)
    # and its interval is the whole collection's: the same examples, the same bootstrap draws
    np.testing.assert_allclose(out["bimodality_ci"][-1], S.bimodality_ci(preds, labels)["ci"], rtol=ULPS64)
    lo, hi = np.moveaxis(out["bimodality_ci"], -1, 0)
    assert np.all((lo <= out["bimodality"] + ULPS64) & (out["bimodality"] <= hi + ULPS64))
    assert S.reliability_reached(out, 0.0) == 2
    assert S.reliability_reached(out, 1.01) is None
    with pytest.raises(ValueError, match="sizes"):
        S.models_needed(preds, labels, sizes=[1, 4])


def test_error_consistency_matches_cohens_kappa_and_bounds():
    from sklearn.metrics import cohen_kappa_score
    rng = np.random.default_rng(4)
    preds, labels = _shared_difficulty(3, 2, 500, rng)
    out = S.error_consistency(preds, labels, n_boot=200)
    for e in range(2):
        want = [cohen_kappa_score(preds[i, e] == 1, preds[j, e] == 1) for i, j in [(0, 1), (0, 2), (1, 2)]]
        assert out["estimate"][e] == pytest.approx(np.mean(want), rel=ULPS64)
        assert out["pairwise"][e, 0, 1] == pytest.approx(want[0], rel=ULPS64)
        assert out["ci"][e, 0] < out["estimate"][e] < out["ci"][e, 1]
    assert np.isnan(out["pairwise"][0, 1, 1])
    same = np.repeat(preds[:1], 4, axis=0)
    np.testing.assert_allclose(S.error_consistency(same, labels, n_boot=50)["estimate"], 1.0)


def test_error_consistency_of_independent_models_is_zero_within_its_ci():
    means = []

    def ci(rng, r):
        out = S.error_consistency(*_independent(6, 1000, 0.8, rng), n_boot=400, seed=r)
        means.append(out["estimate"][0])
        return out["ci"][0]
    assert 0.88 <= _coverage(ci, 0.0, 100, 9) <= 0.99
    assert abs(np.mean(means)) < 0.01


def test_error_consistency_has_no_interval_without_shared_errors():
    """Three independent models at 0.9995 on 50000 examples share ~0.01 errors a pair: no draw can
    show fewer than none, so an interval would exclude 0 for independent models."""
    rng = np.random.default_rng(1)
    preds, labels = _independent(3, 50000, 0.9995, rng)
    out = S.error_consistency(preds, labels, n_boot=100)
    assert out["few_errors"][0] and np.isnan(out["ci"][0]).all() and np.isfinite(out["estimate"][0])


def test_matched_accuracy_ci_brackets_the_counts():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 400)
    a = np.where(rng.random((5, 3, 400)) < np.array([0.5, 0.7, 0.9])[:, None], labels, (labels + 1) % 3)
    b = np.where(rng.random((5, 3, 400)) < np.array([0.5, 0.7, 0.8])[:, None], labels, (labels + 1) % 3)
    out = S.matched_accuracy_ci(a.astype(np.int16), b.astype(np.int16), labels, tolerance=0.05, n_boot=300)
    for key in ("both", "only_a", "only_b", "neither"):
        assert np.all(out[f"{key}_ci"][:, 0] <= out[key]) and np.all(out[key] <= out[f"{key}_ci"][:, 1])
    total = out["both"] + out["only_a"] + out["only_b"] + out["neither"]
    assert np.all(total == 400)


def test_format_p_says_how_it_was_obtained():
    assert S.format_p(1 / 2001, 2000) == "≤ 0.0005 (0 of 2000 null draws as low)"
    assert S.format_p(1 / 301, 300) == "≤ 0.0034 (0 of 300 null draws as low)"  # rounded up, never below p
    assert S.p_floor(3000) >= 1 / 3001
    assert S.format_p(0.0123, 2000) == "0.0123 (2000 null draws)"
    assert S.format_p(0.2) == "0.2"
    assert S.format_p(None) == "n/a"


def test_error_consistency_interval_from_a_subsample_matches_the_full_bootstrap(monkeypatch):
    """Above MAX_BOOT_EXAMPLES the interval comes from a subsample, its deviations shrunk by
    sqrt(m / n): its width matches the full bootstrap's, the estimate is the whole sample's."""
    rng = np.random.default_rng(4)
    preds, labels = _shared_difficulty(5, 1, 8000, rng)
    full = S.error_consistency(preds, labels, n_boot=800, seed=1)
    monkeypatch.setattr(S, "MAX_BOOT_EXAMPLES", 2000)
    sub = S.error_consistency(preds, labels, n_boot=800, seed=1)
    assert sub["estimate"][0] == pytest.approx(full["estimate"][0], rel=ULPS64)
    w_full, w_sub = np.diff(full["ci"][0])[0], np.diff(sub["ci"][0])[0]
    assert abs(w_sub / w_full - 1) < 0.2  # 800 draws from 2000 examples: the width's own error ~5-10%
    assert sub["ci"][0, 0] < sub["estimate"][0] < sub["ci"][0, 1]


def test_partial_correlation_against_the_closed_form():
    rng = np.random.default_rng(3)
    z = rng.normal(size=3000)
    a = 0.8 * z + rng.normal(size=3000)
    b = 0.5 * z + 0.4 * a + rng.normal(size=3000)
    r = np.corrcoef([a, b, z])
    closed = (r[0, 1] - r[0, 2] * r[1, 2]) / np.sqrt((1 - r[0, 2] ** 2) * (1 - r[1, 2] ** 2))
    out = S.partial_correlation(a, b, z, n_boot=300)
    np.testing.assert_allclose(out["r"], closed, rtol=ULPS64 * 1e3)
    assert out["ci"][0] < closed < out["ci"][1]
    # nothing partialled out but a constant: Pearson's r
    np.testing.assert_allclose(S.partial_correlation(a, b, np.zeros((3000, 0)), n_boot=50)["r"], r[0, 1], rtol=ULPS64 * 1e3)
