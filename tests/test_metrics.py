import numpy as np
import pytest
from scipy import stats

from agreebook import metrics as M
from tolerance import ULPS64


def test_tp_agreement_and_agreement_by_hand():
    # 4 models, 1 epoch, 3 examples; labels 0, 1, 2.
    preds = np.array([[[0, 1, 0]], [[0, 2, 1]], [[0, 2, 1]], [[1, 1, 3]]], np.int16)
    labels = np.array([0, 1, 2])
    np.testing.assert_allclose(M.tp_agreement(preds, labels), [[0.75, 0.5, 0.0]])
    np.testing.assert_allclose(M.agreement(preds), [[0.75, 0.5, 0.5]])
    np.testing.assert_allclose(M.accuracies(preds, labels), [[2 / 3], [1 / 3], [1 / 3], [1 / 3]])
    # ties in the vote go to the smallest label: example 1 is 1,2,2,1 -> 1; example 2 is 0,1,1,3 -> 1
    np.testing.assert_array_equal(M.majority_vote(preds), [[0, 1, 1]])


def test_mode_matches_bincount_on_random_data():
    rng = np.random.default_rng(1)
    p = rng.integers(0, 7, size=(13, 20000)).astype(np.int16)  # spans several chunks
    count, label = M.mode(p, return_label=True)
    for i in rng.integers(0, p.shape[1], 300):
        bc = np.bincount(p[:, i])
        assert count[i] == bc.max()
        assert label[i] == np.argmax(bc)


@pytest.mark.parametrize("n_models", [2, 7, 8])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int64])
def test_agreement_with_labels_equals_the_sorted_count(n_models, dtype):
    # with labels, examples at least half the models get right skip the sort; exactly half
    # (a tie between the label and another class) is the boundary case
    rng = np.random.default_rng(n_models)
    labels = rng.integers(0, 5, 9000)
    right = rng.random((n_models, 3, 9000)) < rng.random(9000)
    preds = np.where(right, labels, rng.integers(0, 5, (n_models, 3, 9000))).astype(dtype)
    preds[:, :, 0] = labels[0]  # everyone right
    preds[: n_models // 2, :, 1] = labels[1]  # half right, the rest on one other label
    preds[n_models // 2:, :, 1] = (labels[1] + 1) % 5
    by_sort = M.agreement(preds)
    np.testing.assert_array_equal(M.agreement(preds, labels), by_sort)
    np.testing.assert_array_equal(M.agreement(preds, labels, M.correct_counts(preds, labels)), by_sort)
    counts = np.stack([np.bincount(preds[:, 2, i].astype(np.int64), minlength=5).max() for i in range(300)])
    np.testing.assert_array_equal(by_sort[2, :300] * n_models, counts)


def test_mode_of_some_columns():
    p = np.random.default_rng(3).integers(0, 4, (9, 10000)).astype(np.int16)
    cols = np.array([5, 0, 9999, 4096, 17])
    count, label = M.mode(p, return_label=True)
    c2, l2 = M.mode(p, return_label=True, columns=cols)
    np.testing.assert_array_equal(c2, count[cols])
    np.testing.assert_array_equal(l2, label[cols])


def test_parallel_map_keeps_the_order():
    assert M.parallel_map(lambda x: x * x, range(50)) == [x * x for x in range(50)]
    assert M.parallel_map(str, []) == []


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    from agreebook import stats as S
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 3000)
    p = np.where(rng.random((6, 5, 3000)) < rng.random(3000), y, rng.integers(0, 4, (6, 5, 3000))).astype(np.int16)

    def everything():
        return (M.agreement(p, y), M.majority_vote(p), M.accuracies(p, y), M.correct_counts(p, y),
                M.class_accuracies(p, y), S.error_consistency(p, y, n_boot=200)["ci"])

    monkeypatch.setattr(M.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    many = everything()
    monkeypatch.setattr(M, "MAX_THREADS", 1)
    for a, b in zip(many, everything()):
        np.testing.assert_array_equal(a, b)


def test_single_model_agreement_is_one():
    p = np.random.default_rng(0).integers(0, 5, (1, 2, 50))
    np.testing.assert_array_equal(M.agreement(p), 1.0)


def test_bimodality_reference_values():
    assert M.bimodality(np.array([0.0, 1.0] * 500)) == pytest.approx(0.0, abs=ULPS64)
    # uniform on [0,1]: kurtosis 1.8, skewness 0
    u = np.linspace(0, 1, 200001)
    assert M.bimodality(u) == pytest.approx(0.8, abs=1e-4)
    g = np.random.default_rng(0).standard_normal(400000)
    assert M.bimodality(g) == pytest.approx(2.0, abs=0.03)
    # against scipy's definitions
    x = np.random.default_rng(2).gamma(2.0, size=5000)
    want = stats.kurtosis(x, fisher=False) - stats.skew(x) ** 2 - 1
    assert M.bimodality(x) == pytest.approx(want, rel=ULPS64)
    assert np.isnan(M.bimodality(np.ones(10)))
    # axis handling
    both = np.stack([x, g[:5000]])
    np.testing.assert_allclose(M.bimodality(both, axis=1), [M.bimodality(x), M.bimodality(g[:5000])])


def test_bimodality_of_distribution_equals_sample_version():
    x = np.array([0, 0, 1, 3, 3, 3, 4])
    counts = np.bincount(x, minlength=5)
    assert M.bimodality_of_distribution(np.arange(5), counts) == pytest.approx(M.bimodality(x))


def test_identical_models_give_binary_tpa_and_full_agreement():
    rng = np.random.default_rng(3)
    one = rng.integers(0, 10, size=(1, 4, 500))
    preds = np.repeat(one, 8, axis=0)
    labels = rng.integers(0, 10, 500)
    tpa = M.tp_agreement(preds, labels)
    assert set(np.unique(tpa)) <= {0.0, 1.0}
    np.testing.assert_array_equal(M.agreement(preds), 1.0)
    # two spikes: bimodality 0
    np.testing.assert_allclose(M.bimodality(tpa, axis=1), 0.0, atol=ULPS64)


def test_poisson_binomial_is_exact():
    acc = np.array([[0.2, 0.9], [0.5, 0.9], [0.7, 0.9]])
    pmf = M.null_tp_agreement(acc)
    # brute force over the 8 outcomes
    from itertools import product
    for e in range(2):
        want = np.zeros(4)
        for bits in product([0, 1], repeat=3):
            pr = np.prod([a if b else 1 - a for a, b in zip(acc[:, e], bits)])
            want[sum(bits)] += pr
        np.testing.assert_allclose(pmf[e], want, atol=ULPS64)
    # equal accuracies: binomial
    acc = np.full((10, 1), 0.3)
    np.testing.assert_allclose(M.null_tp_agreement(acc)[0], stats.binom.pmf(np.arange(11), 10, 0.3), atol=ULPS64)


def test_independent_models_are_close_to_the_null():
    rng = np.random.default_rng(4)
    n_models, n_examples, n_classes = 20, 20000, 10
    acc = np.linspace(0.4, 0.8, n_models)
    labels = rng.integers(0, n_classes, n_examples)
    correct = rng.random((n_models, n_examples)) < acc[:, None]
    wrong = (labels + rng.integers(1, n_classes, (n_models, n_examples))) % n_classes
    preds = np.where(correct, labels, wrong)[:, None, :]
    tpa = M.tp_agreement(preds, labels)
    observed_acc = M.accuracies(preds, labels)
    test = M.bimodality_test(tpa, observed_acc, n_draws=500, seed=0)
    # the sample bimodality of 20000 examples spreads by about 0.04 around the exact value
    assert test["observed"][0] == pytest.approx(test["null"][0], abs=0.1)
    assert test["p_value"][0] > 0.01
    # the histogram matches the exact null pmf
    hist = M.tp_agreement_histogram(tpa, n_models)[0] / n_examples
    np.testing.assert_allclose(hist, M.null_tp_agreement(observed_acc)[0], atol=0.01)
    # Agreement: observed mean close to the simulated null's mean
    null = M.null_agreement(observed_acc, n_classes, n_samples=20000, seed=1)
    assert M.agreement(preds).mean() == pytest.approx(null.mean(), abs=0.005)


def test_bimodal_collection_rejects_the_null():
    rng = np.random.default_rng(5)
    n_models, n_examples = 10, 5000
    easy = rng.random(n_examples) < 0.7  # every model right on easy examples, wrong on the rest
    preds = np.where(easy, 1, 0)[None, None, :].repeat(n_models, 0)
    flip = rng.random(preds.shape) < 0.05
    preds = np.where(flip, 1 - preds, preds)
    labels = np.ones(n_examples, np.int64)
    tpa = M.tp_agreement(preds, labels)
    test = M.bimodality_test(tpa, M.accuracies(preds, labels), n_draws=500, seed=0)
    assert test["observed"][0] < 0.3 < test["null"][0]
    assert test["p_value"][0] == pytest.approx(1 / 501)


def test_null_bimodality_matches_binomial_formula():
    # Binomial(n, p) / n: skew^2 = (1-2p)^2/(npq), kurtosis = 3 + (1-6pq)/(npq)
    n, p = 25, 0.35
    q = 1 - p
    want = 3 + (1 - 6 * p * q) / (n * p * q) - (1 - 2 * p) ** 2 / (n * p * q) - 1
    assert M.null_bimodality(np.full((n, 1), p))[0] == pytest.approx(want, rel=ULPS64)


def test_null_agreement_extremes_and_seed():
    acc = np.array([[1.0, 0.0]] * 5)
    sim = M.null_agreement(acc, n_classes=2, n_samples=100, seed=0)
    np.testing.assert_array_equal(sim, 1.0)  # all right, or all wrong with one wrong class
    acc = np.full((6, 1), 0.5)
    a = M.null_agreement(acc, 10, 1000, seed=7)
    np.testing.assert_array_equal(a, M.null_agreement(acc, 10, 1000, seed=7))
    assert not np.array_equal(a, M.null_agreement(acc, 10, 1000, seed=8))


def test_accessibility_and_learning_epoch():
    labels = np.array([1, 1, 1, 1])
    # one model, 4 recorded epochs; columns are examples
    preds = np.array([[[0, 1, 1, 1],
                       [1, 0, 1, 0],
                       [1, 1, 1, 1],
                       [1, 1, 1, 0]]])
    np.testing.assert_allclose(M.learning_epoch(preds, labels, [1, 2, 4, 8])[0], [2, 4, 1, np.nan])
    tpa = M.tp_agreement(preds, labels)
    np.testing.assert_allclose(M.accessibility(tpa), [0.75, 0.75, 1.0, 0.5])
    with pytest.raises(ValueError, match="epochs"):
        M.learning_epoch(preds, labels, [1, 2])


def test_accessibility_correlation():
    rng = np.random.default_rng(6)
    a = rng.random(1000)
    b = a + 0.1 * rng.standard_normal(1000)
    r, p = M.accessibility_correlation(a, b)
    assert r == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert p < 1e-100
    with pytest.raises(ValueError):
        M.accessibility_correlation(a, b[:10])


def test_matched_accuracy_comparison_by_hand():
    labels = np.zeros(10, np.int64)

    def collection(n_correct_per_epoch):
        # identical members so the vote is that member; first k examples correct
        rows = [np.where(np.arange(10) < k, 0, 1) for k in n_correct_per_epoch]
        return np.array(rows)[None].repeat(3, axis=0)

    a = collection([2, 5, 9])      # stronger: 0.2, 0.5, 0.9
    b = collection([2, 5, 6])      # weaker, converges at 0.6
    out = M.matched_accuracy_comparison(a, b, labels, tolerance=0.01)
    assert out["stronger"] == "a"
    np.testing.assert_array_equal(out["epoch_index_a"], [0, 1, 2])
    np.testing.assert_array_equal(out["epoch_index_b"], [0, 1, 2])  # last: past b's final epoch
    np.testing.assert_array_equal(out["both"], [2, 5, 6])
    np.testing.assert_array_equal(out["only_a"], [0, 0, 3])
    np.testing.assert_array_equal(out["only_b"], [0, 0, 0])
    np.testing.assert_array_equal(out["neither"], [8, 5, 1])
    # swapping the arguments swaps the roles
    out2 = M.matched_accuracy_comparison(b, a, labels)
    assert out2["stronger"] == "b"
    np.testing.assert_array_equal(out2["only_b"], [0, 0, 3])


def test_input_validation():
    with pytest.raises(ValueError, match="n_models, n_epochs, n_examples"):
        M.tp_agreement(np.zeros((3, 4)), np.zeros(4))
    with pytest.raises(ValueError, match="labels"):
        M.tp_agreement(np.zeros((2, 3, 4), int), np.zeros(5))
    with pytest.raises(ValueError, match="integer"):
        M.agreement(np.zeros((2, 3, 4)))


def test_class_null_explains_a_collection_that_predicts_one_class():
    # 3 classes, every model says class 0 for everything: TP-agreement is 1 on class 0 and 0
    # elsewhere, extremely "bimodal" against the accuracy null but exactly the class null.
    labels = np.repeat([0, 1, 2], [40, 30, 30])
    preds = np.zeros((5, 2, 100), np.int16)
    recall = M.class_accuracies(preds, labels)
    assert recall.shape == (5, 2, 3)
    np.testing.assert_allclose(recall[..., 0], 1.0)
    np.testing.assert_allclose(recall[..., 1:], 0.0)
    pmf = M.null_tp_agreement_by_class(preds, labels)
    np.testing.assert_allclose(pmf[:, [0, 5]], [[0.6, 0.4]] * 2)
    np.testing.assert_allclose(pmf.sum(1), 1.0)
    acc = M.accuracies(preds, labels)
    tpa = M.tp_agreement(preds, labels)
    assert np.all(M.bimodality_test(tpa, acc)["p_value"] < 0.01)  # the accuracy null is fooled
    strict = M.bimodality_test(tpa, acc, null_pmf=pmf)
    np.testing.assert_allclose(strict["null"], strict["observed"])
    assert np.all(strict["p_value"] > 0.5)


def test_class_null_equals_accuracy_null_when_recall_is_the_same_on_every_class():
    labels = np.repeat([0, 1], 10)
    right = np.zeros((3, 1, 20), bool)
    for m, k in enumerate([2, 5, 8]):  # model m is right on the first k examples of each class
        right[m, 0, :k] = right[m, 0, 10:10 + k] = True
    preds = np.where(right, labels, 1 - labels).astype(np.int16)
    np.testing.assert_allclose(M.null_tp_agreement_by_class(preds, labels),
                               M.null_tp_agreement(M.accuracies(preds, labels)))


def test_class_null_skips_a_class_without_examples_and_mixes_by_class_share():
    # classes 0 and 2 hold 3 and 1 examples, class 1 none; 2 models, 1 epoch
    labels = np.array([0, 0, 0, 2])
    preds = np.array([[[0, 0, 1, 2]], [[0, 1, 1, 0]]], np.int16)  # recalls: (2/3, 1), (1/3, 0)
    recall = M.class_accuracies(preds, labels, n_classes=3)
    np.testing.assert_allclose(recall[:, 0, [0, 2]], [[2 / 3, 1], [1 / 3, 0]])
    assert np.isnan(recall[:, :, 1]).all()
    a, b = 2 / 3, 1 / 3  # class 0: Poisson-binomial of (2/3, 1/3); class 2: (1, 0) -> exactly 1 right
    class0 = [(1 - a) * (1 - b), a * (1 - b) + (1 - a) * b, a * b]
    np.testing.assert_allclose(M.null_tp_agreement_by_class(preds, labels)[0],
                               0.75 * np.array(class0) + 0.25 * np.array([0, 1, 0]))


def test_group_null_absorbs_a_known_difficulty_but_not_a_shared_order():
    rng = np.random.default_rng(3)
    n_models, n = 10, 2000
    labels = np.zeros(n, np.int64)
    stratum = np.repeat([0, 1], n // 2)  # an easy and a hard half of the data
    p = np.where(stratum == 0, 0.9, 0.2)
    # independent models, right with the stratum's probability: a shared *difficulty* only
    indep = rng.random((n_models, 1, n)) < p
    # models that share an order within each stratum too: one latent draw for all of them
    shared = np.broadcast_to(rng.random(n) < p, (n_models, 1, n))
    for right, beats_group_null in ((indep, False), (shared, True)):
        preds = np.where(right, labels, 1).astype(np.int16)
        tpa = M.tp_agreement(preds, labels)
        acc = M.accuracies(preds, labels)
        by_class = M.bimodality_test(tpa, acc, seed=0, null_pmf=M.null_tp_agreement_by_class(preds, labels))
        by_group = M.bimodality_test(tpa, acc, seed=0, null_pmf=M.null_tp_agreement_by_group(preds, labels, stratum))
        assert by_class["p_value"][0] < 0.01  # one class: the class null cannot see the strata
        assert (by_group["p_value"][0] < 0.01) == beats_group_null
    # the class null is the group null with the labels as groups
    preds = rng.integers(0, 3, (4, 2, 300)).astype(np.int16)
    y = rng.integers(0, 3, 300)
    np.testing.assert_allclose(M.null_tp_agreement_by_class(preds, y), M.null_tp_agreement_by_group(preds, y, y))


def test_mistake_agreement_and_its_nulls():
    rng = np.random.default_rng(0)
    n, m, k = 6, 3000, 5
    y = rng.integers(0, k, m)
    wrong = rng.random((n, 1, m)) < 0.5
    # independent wrong labels, uniform among the other classes: observed = both nulls
    indep = np.where(wrong, (y + rng.integers(1, k, (n, 1, m))) % k, y)
    obs = M.mistake_agreement(indep, y, k)
    for confusion in (True, False):
        null = M.null_mistake_agreement(indep, y, k, n_draws=10, confusion=confusion)
        np.testing.assert_array_equal(np.isnan(null), np.isnan(obs))
        assert abs(np.nanmean(obs) - np.nanmean(null)) < 0.01
    # every wrong model gives the same wrong label, one per example: 1, far above the nulls
    shared = np.where(wrong, (y + 1 + rng.integers(0, k - 1, m)) % k, y)
    ok = ~np.isnan(M.mistake_agreement(shared, y, k))
    assert (M.mistake_agreement(shared, y, k)[ok] == 1).all()
    assert np.nanmean(M.null_mistake_agreement(shared, y, k, n_draws=10)) < 0.75
    # a shared class confusion (every model says y + 1) is in the confusion-matched null, not the uniform
    confused = np.where(wrong, (y + 1) % k, y)
    assert np.nanmean(M.null_mistake_agreement(confused, y, k, n_draws=5)) == 1
    assert np.nanmean(M.null_mistake_agreement(confused, y, k, n_draws=5, confusion=False)) < 0.75


def test_forgetting_events_effective_classes_and_the_null():
    y = np.array([0, 1, 2])
    p = np.array([[[0, 1, 2], [1, 1, 2], [0, 0, 2], [1, 1, 2]]])  # 1 model, 4 epochs
    np.testing.assert_array_equal(M.forgetting_events(p, y), [[2, 1, 0]])
    acc = np.array([[0.5, 0.5, 1.0]])
    np.testing.assert_allclose(M.null_forgetting_events(acc), [0.25])
    assert M.effective_classes([0, 0, 0], 3) == 1
    np.testing.assert_allclose(M.effective_classes([0, 1, 2, 0, 1, 2], 3), 3, rtol=ULPS64)
    assert np.isnan(M.effective_classes([], 3))
    # independent draws at each epoch: forgetting events match the null on average
    rng = np.random.default_rng(0)
    acc = np.array([[0.3, 0.6, 0.8, 0.9]])
    y = rng.integers(0, 4, 20000)
    p = np.where(rng.random((1, 4, 20000)) < acc[:, :, None], y, (y + 1) % 4)
    assert abs(M.forgetting_events(p, y).mean() - M.null_forgetting_events(acc)[0]) < 0.02
