"""Chapters 1, 5 and 7's analyses on hand-built records."""
import numpy as np
import pytest

from agreebook import experiments as X, metrics as M, plots
from agreebook.config import TrainConfig
from agreebook.record import Record, RecordError
from agreebook.prepare import prepare_dataset
from agreebook.train import Runtime, train_collection


def _record(preds, labels, epochs=(1, 2, 3), classes=None):
    preds = np.asarray(preds, np.int16)
    meta = {"dataset": "toy", "arch": "hand", "classes": classes or [f"c{i}" for i in range(3)]}
    return Record({"test": preds}, {"test": np.asarray(labels)}, epochs, meta=meta)


def test_learning_order_by_accessibility_then_learning_epoch():
    labels = np.array([0, 0, 1, 1])
    # two models, three epochs.  ex0: right from epoch 1 (acc 1); ex1: right from 2 in both
    # (acc 2/3); ex2: right from 2 in one model, 3 in the other (acc 1/2); ex3: never (acc 0).
    right = np.array([[[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]],
                      [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]], bool)
    preds = np.where(right, labels, 1 - labels)
    rec = _record(preds, labels)
    np.testing.assert_array_equal(X.learning_order(rec, "test"), [0, 1, 2, 3])
    fl = X.first_and_last(rec, "test", per_class=1)
    assert [a.tolist() for a in fl[0]] == [[0], [1]] and [a.tolist() for a in fl[1]] == [[2], [3]]
    # ties in accessibility go to the earlier mean learning epoch
    right2 = np.array([[[0, 1], [1, 1], [1, 0]], [[0, 1], [1, 1], [1, 0]]], bool)  # both acc 2/3
    rec2 = _record(np.where(right2, 0, 1), [0, 0])
    np.testing.assert_array_equal(X.learning_order(rec2, "test"), [0, 1])  # ex1 is not right at the end
    # exact ties are drawn at random, not by index: over seeds, each of 20 tied examples comes first
    rec3 = _record(np.zeros((2, 3, 20), int), np.zeros(20, int))
    assert len({X.learning_order(rec3, "test", seed=s)[0] for s in range(200)}) == 20
    assert X.end_pools(rec3, "test").loc["c0", "at accessibility 1"] == 20


def test_induced_confusion_names_where_unlearned_examples_go():
    labels = np.array([0, 0, 0, 1, 1, 2])
    # class 0: ex2 is sent to class 2 by all 3 models; class 1: everything right
    preds = np.array([[[0, 0, 2, 1, 1, 2]]] * 3)
    t = X.induced_confusion(_record(preds, labels, epochs=(1,)), "test")
    assert t.loc["c0", "TPa < 0.5"] == 1 and t.loc["c0", "most predicted instead"] == "c2"
    assert t.loc["c0", "share of their wrong predictions"] == 1.0
    assert t.loc["c1", "most predicted instead"] == "-"


def test_minimum_bimodality_table_class_null_sees_through_a_class_bias():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 200)
    biased = np.zeros((6, 3, 400), np.int16)  # every model predicts class 0 everywhere
    shared = np.where(rng.random(400) < 0.5, labels, 1 - labels)  # one shared order of examples
    ordered = np.broadcast_to(shared, (6, 3, 400)).copy()
    rows = X.minimum_bimodality_table([("biased", Record({"train": biased, "test": biased},
                                                          {"train": labels, "test": labels}, (1, 2, 3),
                                                          meta={"n_classes": 2})),
                                       ("ordered", Record({"train": ordered, "test": ordered},
                                                          {"train": labels, "test": labels}, (1, 2, 3),
                                                          meta={"n_classes": 2}))])
    assert rows.loc[("biased", "test"), "epochs p<0.01"] == "3/3"  # the accuracy null is fooled
    assert rows.loc[("biased", "test"), "epochs p<0.01, class null"] == "0/3"
    assert rows.loc[("ordered", "test"), "epochs p<0.01, class null"] == "3/3"
    assert len(rows.columns) <= 11  # one row per (collection, split): a table that fits a page


def test_record_images_rebuild_the_trained_subset_and_refuse_foreign_records(tmp_path):
    cfg = TrainConfig(dataset="digits", arch="fc", n_models=2, epochs=(1,), train_size=100, test_size=50)
    rec = train_collection(cfg, tmp_path / "r", Runtime(progress=False))
    ds = prepare_dataset(cfg.resolved())
    np.testing.assert_array_equal(X.record_images(rec, "test"), ds.x_test)
    assert X.record_images(rec, "train").shape == (100, 8, 8, 1)
    with pytest.raises(RecordError, match="no training configuration"):
        X.record_images(Record({"test": rec.predictions["test"]}, {"test": rec.labels["test"]}, (1,)), "test")
    rec.meta["data_fingerprint"] = "0" * 64
    with pytest.raises(RecordError, match="differ from the data the record"):
        X.record_images(rec, "test")


def test_chapter_1_and_7_figures_draw(tmp_path):
    labels = np.repeat([0, 1, 2], 10)
    preds = np.random.default_rng(1).integers(0, 3, (4, 3, 30))
    rec = _record(preds, labels)
    images = np.random.default_rng(2).integers(0, 255, (30, 8, 8, 1), dtype=np.uint8)
    for fig in (plots.first_and_last_learned(rec, "test", images, X.first_and_last(rec, "test", per_class=2)),
                plots.tp_agreement_by_predicted_label(rec, "test"),
                plots.tp_agreement_dynamics(rec, "test", n_examples=5)):
        assert "N=4" in fig._suptitle.get_text() if fig._suptitle else "N=4" in fig.axes[0].get_title()
        fig.savefig(tmp_path / "f.png")


def test_largest_rise_share_by_hand():
    labels = np.zeros(3, int)
    tp = np.array([[0, 0, 1], [1, 0.5, 1], [1, 1, 1]])  # ex0 jumps 0->1; ex1 0->.5->1; ex2 always right
    preds = np.stack([np.where(tp >= 0.5, 0, 1), np.where(tp >= 1, 0, 1)]).astype(np.int16)
    rec = Record({"test": preds}, {"test": labels}, (1, 2, 3))
    np.testing.assert_allclose(X.largest_rise_share(rec, "test"), [1.0, 0.5])


def test_adaboost_stages_on_digits_and_the_early_stop_padding():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    res = X.adaboost_stages(x[:1000], y[:1000], x[1000:], y[1000:], n_learners=15)
    assert res["correct"].shape == (15, len(y) - 1000) and res["n_fitted"] == 15
    assert 0.8 < res["accuracy"][-1] <= 1  # a linear learner on digits' pixels
    acc = X.adaboost_accessibility(res["correct"])
    assert acc.shape == (len(y) - 1000,) and np.all((acc >= 0) & (acc <= 1))
    # 30 examples, 64 features: the first learner fits them perfectly and boosting stops
    small = X.adaboost_stages(x[:30], y[:30], x[1000:], y[1000:], n_learners=10)
    assert small["n_fitted"] < 10 and small["correct"].shape[0] == 10
    np.testing.assert_array_equal(small["correct"][-1], small["correct"][small["n_fitted"] - 1])


def test_adaboost_image_normalisation_ignores_each_images_scale():
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    img = x.reshape(-1, 8, 8, 1)
    shifted = img * np.linspace(0.5, 3, len(img))[:, None, None, None] + 7  # per-image contrast and brightness
    a = X.adaboost_stages(img[:800], y[:800], img[800:], y[800:], n_learners=5, normalize="image")
    b = X.adaboost_stages(shifted[:800], y[:800], shifted[800:], y[800:], n_learners=5, normalize="image")
    # equal up to rounding: a prediction may flip only where two classes' scores tie to ~1e-12
    assert (a["correct"] != b["correct"]).mean() < 0.002
    with pytest.raises(ValueError, match="normalize must be"):
        X.adaboost_stages(img[:50], y[:50], img[50:60], y[50:60], normalize="channel")


def test_stage_climb_hand_computed():
    out = X.stage_climb(np.array([[0, 0, 1, 1], [1, 0, 1, 1], [1, 0, 1, 1]], bool), n_boot=200)
    assert (out["first"], out["last"], out["best"], out["gain"]) == (0.5, 0.75, 0.75, 0.25)
    assert 0 <= out["gain_ci"][0] <= 0.25 <= out["gain_ci"][1] <= 1


def test_learner_comparison_same_and_independent_orders():
    rng = np.random.default_rng(0)
    n = 1500
    y = rng.integers(0, 2, n)
    easy = rng.random(n)
    right = np.stack([easy < q for q in (0.3, 0.5, 0.7)])  # (3 epochs, n): one shared order
    rec = Record({"test": np.where(np.broadcast_to(right, (4, 3, n)), y, 1 - y).astype(np.int16)}, {"test": y},
                 (1, 2, 3), meta={"n_classes": 2})
    other = rng.random((3, n)) < np.array([0.3, 0.5, 0.7])[:, None]  # the same accuracies, its own order
    t = X.learner_comparison(rec, {"copy": right, "other": other})
    assert t.loc["copy", "Pearson r"] == pytest.approx(1) and t.attrs["ceiling"] == pytest.approx(1)
    assert abs(t.loc["other", "Pearson r"]) < 0.1 and abs(t.loc["other", "partial r (final correctness out)"]) < 0.1
    assert X.different_order_verdict(t, "copy", 0.35)[0] == "not reproduced"
    word, text = X.different_order_verdict(t, "other", 0.35)
    assert word == "reproduced" and "the paper's 0.35" in text
    assert t.loc["networks, two halves", "partial r (final correctness out)"] == pytest.approx(1)
    d = X.stage_dynamics(np.array([[1, 0, 0, 1, 0], [1, 0, 1, 0, 1], [1, 0, 1, 1, 1]], bool))
    assert d == {"always right": 0.2, "never right": 0.2, "learned once and kept": 0.4, "flipping": pytest.approx(0.2)}


def test_half_split_correlation_of_identical_halves_is_one():
    labels = np.arange(20) % 2
    rng = np.random.default_rng(0)
    one = np.where(rng.random((1, 3, 20)) < 0.5, labels, 1 - labels)
    preds = np.concatenate([one, one, one, one]).astype(np.int16)  # members 0,2 == 1,3
    r, p = X.half_split_correlation(Record({"test": preds}, {"test": labels}, (1, 2, 3)), "test")
    assert r == pytest.approx(1.0)


def test_member_model_reproduces_the_collection_member_and_is_kept(tmp_path):
    from agreebook.member import penultimate_features
    from agreebook.train import member_model
    cfg = TrainConfig(dataset="digits", arch="fc", n_models=2, epochs=(1, 2), train_size=200, test_size=80)
    rec = train_collection(cfg, tmp_path, Runtime(progress=False))
    model, data = member_model(cfg, tmp_path, member=1)
    assert (tmp_path / "models" / "m0001.pt").exists()
    pred = model(data.nchw(data.x["test"])).argmax(1).numpy()
    np.testing.assert_array_equal(pred, rec.predictions["test"][1, -1])  # in-process, same seeds
    again, _ = member_model(cfg, tmp_path, member=1)  # loaded, not trained
    np.testing.assert_array_equal(penultimate_features(again, data, "test"), penultimate_features(model, data, "test"))
    assert penultimate_features(model, data, "train").shape == (200, 1024)


def test_one_analysis_per_record_read_by_every_table(monkeypatch):
    """The tables and the verdict of one record read one cached analysis; none recomputes it."""
    from agreebook import analysis as A
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    preds = np.where(rng.random((6, 3, 200)) < 0.6, labels, (labels + 1) % 3)
    rec = Record({"test": preds}, {"test": labels}, (1, 2, 3))
    calls = []
    real = A._analyze
    monkeypatch.setattr(A, "_analyze", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    table = X.epoch_table(rec, "test", by_class=True)
    X.bimodality_verdict(rec, "test")
    X.bimodality_verdict(rec, "test", null="class")
    X.minimum_bimodality_table([("a", rec)], splits=("test",))
    X.robustness_table([("a", rec)])
    plots.tp_agreement_histograms(A.analyze(rec, "test"))  # figures draw the analysis they are handed
    assert calls == ["test"] and A.analyze(rec, "test") is A.analyze(rec, "test")
    a = A.analyze(rec, "test")
    np.testing.assert_allclose(table["bimodality"], a.bimodality)
    assert {"bimodality 95% CI", "error consistency", "error consistency 95% CI"} <= set(table.columns)
    assert a.bimodality_ci.shape == (3, 2) and np.all(a.bimodality_ci[:, 0] <= a.bimodality)


def test_tables_carry_intervals():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 300)
    easy = rng.random(300)

    def collection(shift):  # models sharing each example's difficulty, improving per epoch
        right = rng.random((4, 3, 300)) < np.clip(easy + shift + 0.15 * np.arange(3)[None, :, None], 0, 1)
        return Record({"test": np.where(right, y, (y + 1) % 3)}, {"test": y}, (1, 2, 3), meta={"n_classes": 3})

    a, b = collection(-0.2), collection(-0.1)
    corr = X.tp_agreement_correlations(a, a)  # a collection against itself: r = rho = 1
    np.testing.assert_allclose(corr[["Pearson r", "Spearman rho"]].to_numpy(), 1.0)
    assert X.tp_agreement_correlations(a, b)["Pearson r"].gt(0.3).all()  # a shared difficulty
    t = X.matched_accuracy_table(a, b, "test", "A", "B")
    for key in ("both", "only A", "only B", "neither"):
        lo, hi = t.attrs["ci"][key].T
        assert np.all((lo <= t[key]) & (t[key] <= hi)) and t[f"{key} 95% CI"].str.startswith("[").all()


def test_claim_verdict_reads_the_informative_epochs_against_both_nulls():
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1, 2], 200)
    n, e = 8, 3
    # a shared order: example i is right in every model from the epoch its difficulty allows
    hard = rng.random(600)
    shared = np.stack([hard < q for q in (0.5, 0.6, 0.7)])
    right_shared = np.broadcast_to(shared, (n, e, 600))
    # independent models at the same accuracies, and a collection at the ceiling
    right_indep = rng.random((n, e, 600)) < np.array([0.5, 0.6, 0.7])[None, :, None]
    right_ceiling = rng.random((n, e, 600)) < 0.99

    def rec(right):
        preds = np.where(right, labels, (labels + 1) % 3).astype(np.int16)
        return Record({"test": preds}, {"test": labels}, (1, 2, 3), meta={"n_classes": 3})

    word, text = X.claim_verdict(rec(right_shared), "test", paper_bimodal=True)
    assert word == "reproduced" and "3 of the 3 informative epochs" in text
    assert X.claim_verdict(rec(right_shared), "test", paper_bimodal=False)[0] == "not reproduced"
    assert X.claim_verdict(rec(right_indep), "test", paper_bimodal=False)[0] == "reproduced"
    assert X.claim_verdict(rec(right_indep), "test", paper_bimodal=True)[0] == "not reproduced"
    word, text = X.claim_verdict(rec(right_ceiling), "test", paper_bimodal=False)
    assert word == "untestable" and "0 recorded epoch(s)" in text
    t = X.claim_table([("shared", rec(right_shared)), ("ceiling", rec(right_ceiling))], True, splits=("test",))
    assert t.loc[("shared", "test"), "verdict"] == "reproduced" and t.loc[("shared", "test"), "bimodal at"] == "3 of 3"
    assert t.loc[("ceiling", "test"), "verdict"] == "untestable" and t.loc[("ceiling", "test"), "bimodal at"] == "0 of 0"
    row = t.loc[("shared", "test")]
    lo, hi = (float(v) for v in row["95% CI"].strip("[]").split(","))
    assert lo - 0.005 <= row["bimodality"] <= hi + 0.005 and row["bimodality"] < row["null"]


def test_claim_verdict_leaves_a_score_whose_interval_spans_the_uniform_undecided():
    # TP-agreement spread evenly over 0/8..8/8 (models 0..c-1 right on an example with c): it
    # beats both nulls, and Pearson's score, 0.77, has an interval across the uniform's 0.8
    n, c = 8, np.repeat(np.arange(9), 60)
    labels = np.arange(len(c)) % 3
    right = np.broadcast_to((np.arange(n)[:, None] < c)[:, None, :], (n, 3, len(c)))
    rec = Record({"test": np.where(right, labels, (labels + 1) % 3).astype(np.int16)}, {"test": labels},
                 (1, 2, 3), meta={"n_classes": 3})
    counts = X.claim_counts(rec, "test", True)
    lo, hi = counts["best_ci"]
    assert lo < X.UNIFORM_BIMODALITY < hi and counts["below_null"] == counts["below_class_null"] == 3
    assert (counts["bimodal"], counts["undecided"]) == (0, 3)
    word, text = X.claim_verdict(rec, "test", paper_bimodal=True)
    assert word == "partly" and "at 0 of the 3 informative epochs, undecided at 3" in text
    assert X.claim_verdict(rec, "test", paper_bimodal=False)[0] == "partly"  # neither side firm
    assert X.claim_table([("even", rec)], True, splits=("test",)).loc[("even", "test"), "bimodal at"] == "0 of 3 (3 undecided)"


def test_synthetic_difficulties_from_the_generators():
    from scipy.stats import norm
    from agreebook.data import load_dataset
    cfg = TrainConfig(dataset="gaussian_0.05", arch="fc", n_models=2, epochs=(1,)).validate().resolved()
    ds = load_dataset("gaussian_0.05", seed=cfg.data_seed)
    meta = {"dataset": "gaussian_0.05", "config": cfg.to_dict(), "n_classes": 2}
    y = {"train": ds.y_train, "test": ds.y_test}
    rec = Record({s: np.zeros((2, 1, len(v)), np.int16) for s, v in y.items()}, y, (1,), meta=meta)
    bayes = X.gaussian_margins(rec, "test")
    # the best classifier's accuracy, Phi(0.05 sqrt(3072) / 2) = 0.917, within 3 sd of 1000 draws
    assert abs((bayes > 0).mean() - norm.cdf(0.05 * np.sqrt(3072) / 2)) < 3 * np.sqrt(0.917 * 0.083 / 1000)
    sample = X.gaussian_margins(rec, "test", direction="sample")
    assert 0.75 < (sample > 0).mean() < (bayes > 0).mean() + 0.02  # the plug-in is no better than Bayes
    strata = X.gaussian_strata(bayes, y["test"])
    assert strata.min() == 0 and strata.max() == 19 and np.bincount(strata).min() > 20
    # Gabor: every patch's offset in +-30 deg, a quarter of them past 22.5, half past 15
    cfg = TrainConfig(dataset="gabor", arch="small_st_vgg", n_models=2, epochs=(1,)).validate().resolved()
    ds = load_dataset("gabor", seed=cfg.data_seed)
    rec = Record({"test": np.zeros((2, 1, len(ds.y_test)), np.int16)}, {"test": ds.y_test}, (1,),
                 meta={"dataset": "gabor", "config": cfg.to_dict(), "n_classes": 12})
    off = X.gabor_parameters_of(rec)["offset"]
    assert np.abs(off).max() <= 30 and abs(np.mean(np.abs(off) > 15) - 0.5) < 0.05
    s = X.gabor_strata(rec, width=7.5, cycles=True)
    assert s.max() < 12 * 4 * 2 and len(np.unique(s)) > 80


def test_original_labels_of_a_random_label_record():
    cfg = TrainConfig(dataset="digits", arch="small_st_vgg", n_models=2, epochs=(1,), random_labels=True,
                      train_size=500).validate().resolved()
    ds = prepare_dataset(cfg)
    meta = {"config": cfg.to_dict(), "n_classes": 10}
    rec = Record({"train": np.zeros((2, 1, 500), np.int16)}, {"train": ds.y_train}, (1,), meta=meta)
    y = X.original_labels(rec, "train")
    np.testing.assert_array_equal(y, prepare_dataset(cfg.replace(random_labels=False)).y_train)
    assert 0.05 < np.mean(y == ds.y_train) < 0.15  # a uniform label is the true one 1 time in 10
    with pytest.raises(RecordError, match="random labels"):
        X.original_labels(Record({"train": rec.predictions["train"]}, {"train": y}, (1,),
                                 meta={"config": cfg.replace(random_labels=False).to_dict()}), "train")


def test_neighbour_label_agreement_by_hand(monkeypatch):
    imgs = np.array([[0, 0, 100], [0, 5, 100], [100, 0, 0], [100, 5, 0]], np.uint8)[:, :, None, None]  # two pairs
    rec = Record({"train": np.zeros((2, 1, 4), np.int16)}, {"train": np.array([0, 0, 1, 0])}, (1,))
    monkeypatch.setattr(X, "record_images", lambda record, split, data_root=None: imgs)
    np.testing.assert_array_equal(X.neighbour_label_agreement(rec, "train", k=1), [1, 1, 0, 0])


def test_difficulty_profile_by_hand():
    labels = np.zeros(4, np.int64)
    right = np.array([[[1, 1, 0, 0]], [[1, 0, 0, 0]]], bool)  # 2 models, 1 epoch
    rec = Record({"test": np.where(right, 0, 1).astype(np.int16)}, {"test": labels}, (1,))
    t = X.difficulty_profile(rec, "test", [0.0, 1.0, 2.0, 3.0], [0, 2, 4])
    np.testing.assert_allclose(t["mean TPa, epoch 1"], [0.75, 0.0])
    assert t["examples"].tolist() == [2, 2]


def test_correlation_table_one_row_a_pair_against_its_ceiling():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    easy = rng.random(400)

    def collection(difficulty):  # 8 models; each example right with a probability set by its difficulty
        right = rng.random((8, 2, 400)) < np.clip(difficulty + np.array([0.0, 0.1])[None, :, None], 0, 1)
        return Record({"test": np.where(right, y, (y + 1) % 3)}, {"test": y}, (1, 2), meta={"n_classes": 3})

    results = [("a", collection(easy)), ("b", collection(easy)), ("c", collection(rng.random(400)))]
    m = X.correlation_matrix(results, "test")
    t = X.correlation_table(results, "test", matrix=m)
    # three collections, three pairs, and the same columns whatever their number
    assert list(t.index) == ["a vs b", "a vs c", "b vs c"]
    assert [c for c in t.columns if c.startswith("reliability")] == ["reliability A", "reliability B"]
    np.testing.assert_allclose(t.loc["a vs c", ["reliability A", "reliability B"]].to_numpy(float),
                               m["reliability"][[0, 2]])
    ceiling = np.sqrt(m["reliability"][0] * m["reliability"][1])
    assert t.loc["a vs b", "noise ceiling"] == pytest.approx(ceiling)
    # a shared difficulty reaches its ceiling within noise; another difficulty is near 0
    assert 0.85 < t.loc["a vs b", "r / ceiling"] < 1.15
    assert abs(t.loc["a vs c", "Pearson r"]) < 0.15


def test_order_verdict_reads_r_against_the_ceiling():
    def matrix(r01, r02, r12, rel=(0.9, 0.9, 0.9)):
        r = np.array([[np.nan, r01, r02], [r01, np.nan, r12], [r02, r12, np.nan]])
        ceiling = np.sqrt(np.outer(rel, rel))
        ci = np.stack([r - 0.01, r + 0.01], -1)  # each r's 95% interval
        return {"labels": ["a", "b", "c"], "pearson": r, "ceiling": ceiling, "ci": ci,
                "correlations": {(0, 1): {}, (0, 2): {}, (1, 2): {}}}

    # ceilings 0.9, so the threshold is 0.81
    word, text = X.order_verdict(matrix(0.88, 0.85, 0.83), "one order")
    assert word == "reproduced" and "3 of 3" in text and "lowest for b vs c" in text and "ceilings of 0.900," in text
    assert "wholly above the threshold in 3, wholly below in 0" in text
    assert X.order_verdict(matrix(0.88, 0.85, 0.81), "one order")[0] == "partly"  # [0.80, 0.82] undecided
    assert X.order_verdict(matrix(0.88, 0.85, 0.5), "one order")[0] == "partly"  # 1 of 3 below
    assert X.order_verdict(matrix(0.88, 0.5, 0.5), "one order")[0] == "not reproduced"  # 2 of 3 below
    word, text = X.order_verdict(matrix(0.88, 0.5, 0.5), "one order", pairs=[("b", "a")], paper_low=0.8)
    assert word == "reproduced" and "accessibility r 0.880 [0.87, 0.89]" in text and "0.8 in 1 of 1" in text
    with pytest.raises(ValueError, match="two different collections"):
        X.order_verdict({"labels": ["a"], "pearson": np.full((1, 1), np.nan), "ceiling": np.full((1, 1), np.nan),
                         "correlations": {}}, "one order")
    with pytest.raises(ValueError, match=r"unknown collection\(s\) \['z'\]"):
        X.order_verdict(matrix(0.88, 0.85, 0.81), "one order", pairs=[("a", "z")])
    # a collection without split-half reliability gives no ceiling: its pairs are left out
    word, text = X.order_verdict(matrix(0.88, 0.85, 0.81, rel=(0.9, 0.9, 0.0)), "one order")
    assert word == "reproduced" and "accessibility r 0.880 [" in text and "2 pair(s) without a positive ceiling" in text
    assert X.order_verdict(matrix(0.88, 0.85, 0.81, rel=(0.0, 0.0, 0.0)), "one order")[0] == "untestable"


def test_superset_verdict_reads_the_order_past_the_weakers_end():
    rng = np.random.default_rng(4)
    n, y = 2000, np.zeros(2000, int)
    rank = rng.permutation(n) / n  # each example's difficulty: lower is learned earlier

    def rec(thresholds, order):  # 3 identical members, right on the examples below each epoch's threshold
        right = np.stack([order < t for t in thresholds])
        return Record({"test": np.broadcast_to(np.where(right, 0, 1), (3, *right.shape)).astype(np.int16)},
                      {"test": y}, tuple(range(1, len(thresholds) + 1)), meta={"n_classes": 2})

    weak = rec([0.2, 0.3, 0.3], rank)
    shared = rec([0.2, 0.3, 0.4, 0.5, 0.6], rank)  # learns the weak one's examples, then more
    independent = rec([0.2, 0.3, 0.4, 0.5, 0.6], rng.permutation(n) / n)
    word, text = X.superset_verdict(shared, weak, X.matched_accuracy_table(shared, weak, "test", "S", "W"))
    assert word == "untestable"  # it already knows everything W knows by the first row past W's end
    # S learns W's easiest tenth late (as if at difficulty 0.35-0.45), but before the examples W never knew
    later = rec([0.2, 0.3, 0.4, 0.5, 0.6], np.where(rank < 0.1, rank + 0.35, rank))
    word, text = X.superset_verdict(later, weak, X.matched_accuracy_table(later, weak, "test", "S", "W"))
    assert word == "reproduced" and "learns 100% of the" in text and "all of them: yes" in text, text
    halves = X.half_collections(later)
    assert [h.n_models for h in halves] == [2, 1] and np.array_equal(halves[1].predictions["test"][0],
                                                                     later.predictions["test"][1])
    ref = X.matched_accuracy_table(*halves, "test", "even", "odd")
    word, text = X.superset_verdict(later, weak, X.matched_accuracy_table(later, weak, "test", "S", "W"), reference=ref)
    assert "(two halves of one collection: 0.000)" in text  # identical members agree on every example
    word, text = X.superset_verdict(independent, weak, X.matched_accuracy_table(independent, weak, "test", "S", "W"))
    assert word == "not reproduced", text
    with pytest.raises(ValueError, match="pass the stronger collection first"):
        X.superset_verdict(weak, shared, X.matched_accuracy_table(weak, shared, "test", "W", "S"))


def test_protocol_table_compares_the_common_epochs():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 300)
    easy = rng.random(300)

    def rec(epochs, protocol):  # models sharing each example's difficulty, improving per epoch
        p = np.clip(easy[None, None] - 0.3 + 0.1 * np.asarray(epochs)[None, :, None], 0, 1)
        right = rng.random((6, len(epochs), 300)) < p
        return Record({"test": np.where(right, y, (y + 1) % 3)}, {"test": y}, epochs,
                      meta={"n_classes": 3, "protocol": protocol})

    traj, retrain = rec((1, 2, 3, 4), "trajectory"), rec((2, 4), "retrain")
    t = X.protocol_table(traj, retrain)
    assert list(t.index) == [2, 4] and (t["TPa Pearson r"] > 0.5).all()  # one difficulty behind both
    np.testing.assert_allclose(t["trajectory accuracy"], traj.accuracies("test").mean(0)[[1, 3]])
    assert t.attrs["accessibility"]["pearson"] > 0.5
    with pytest.raises(ValueError, match="trajectory record first"):
        X.protocol_table(retrain, traj)
    with pytest.raises(ValueError, match="no common recorded epoch"):
        X.protocol_table(traj, rec((5,), "retrain"))


def test_pair_caption_names_both_collections_once_the_data():
    y = np.zeros(4, int)
    a = Record({"test": np.zeros((3, 2, 4), np.int16)}, {"test": y}, (1, 2), meta={"dataset": "toy", "arch": "cnn"})
    b = Record({"test": np.zeros((2, 3, 4), np.int16)}, {"test": y}, (1, 2, 3), meta={"dataset": "toy", "arch": "fc"})
    assert plots.pair_caption(a, b, "test", "cpu") == \
        "toy, cnn (N=3, epochs 1,2) vs fc (N=2, epochs 1-3), test (4 examples), scale cpu"
    assert plots.caption(a, "test", "cpu") == "toy, cnn, N=3, epochs 1,2, test (4 examples), scale cpu"


def test_epoch_table_says_why_a_kappa_interval_is_missing():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    right = rng.random((4, 2, 400)) < np.array([0.5, 0.98])[None, :, None]  # few shared errors at epoch 2
    rec = Record({"test": np.where(right, y, (y + 1) % 3).astype(np.int16)}, {"test": y}, (1, 2), meta={"n_classes": 3})
    t = X.epoch_table(rec, "test")
    assert t.loc[1, "error consistency 95% CI"].startswith("[")
    assert np.isfinite(t.loc[2, "error consistency"]) and t.loc[2, "error consistency 95% CI"] == "none: < 5 shared errors"


def test_out_of_sample_verdict_reads_both_claims():
    rng = np.random.default_rng(0)
    n, k, m = 6, 3, 600
    y = rng.integers(0, k, m)
    one = lambda labels: np.broadcast_to(labels, (n, 1, m)).astype(np.int16)  # noqa: E731
    half = np.where(np.arange(n)[:, None, None] < 4, y, (y + 1) % k).astype(np.int16)  # 4 of 6 agree
    indep = rng.integers(0, k, (n, 1, m)).astype(np.int16)  # uniform random labels, independent
    def record(**ood):
        preds = {"test": one(y), **{f"ood_{s}": v for s, v in ood.items()}}
        labels = {"test": y, **{f"ood_{s}": np.full(m, -1) for s in ood}}
        return Record(preds, labels, [1], meta={"n_classes": k})
    rec = record(noise=indep, fashion_mnist=half)
    res = X.out_of_sample_agreement(rec, n_null=5000)
    assert list(res) == ["test", "ood_fashion_mnist", "ood_noise"]  # most to least natural
    t = X.out_of_sample_table(rec, res, n_boot=500)
    np.testing.assert_allclose(t["mean Agreement"], [1, 4 / 6, M.agreement(indep)[0].mean()])
    np.testing.assert_allclose(t["random labels (paper's reference)"], M.agreement(indep)[0].mean(), atol=0.02)
    for split in t.index:
        lo, hi = (float(v) for v in t.loc[split, "95% CI"].strip("[]").split(","))
        assert lo - 5e-4 <= t.loc[split, "mean Agreement"] <= hi + 5e-4  # the CI is printed to 3 places
    word, lines = X.out_of_sample_verdict(t)
    assert word == {"above random": "not reproduced", "order": "reproduced"} and "1 of the 2 out-of-sample" in lines[0]  # noise is at random labels
    # noise on which every model gives one label: Agreement 1, the highest, against the order
    word, lines = X.out_of_sample_verdict(X.out_of_sample_table(rec := record(noise=one(np.zeros(m, int)),
                                                                            fashion_mnist=half),
                                                                X.out_of_sample_agreement(rec, n_null=5000), n_boot=500))
    assert word["order"] == "not reproduced" and "ood_fashion_mnist below ood_noise" in lines[1]
    assert word["above random"] == "reproduced" and "2 of the 2" in lines[0]
    # one out-of-sample set (text): the order is read between its two ends only
    rec = record(noise=indep)
    word, lines = X.out_of_sample_verdict(X.out_of_sample_table(rec, X.out_of_sample_agreement(rec, n_null=5000), n_boot=500))
    assert word["order"] == "partly" and "only its two ends" in lines[1]


def test_record_at_epochs_keeps_those_epochs_only():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    p = rng.integers(0, 3, (4, 3, 50)).astype(np.int16)
    rec = Record({"test": p}, {"test": y}, (1, 2, 4), meta={"n_classes": 3})
    sub = rec.at_epochs([1, 4])
    np.testing.assert_array_equal(sub.epochs, [1, 4])
    np.testing.assert_array_equal(sub.predictions["test"], p[:, [0, 2]])
    np.testing.assert_array_equal(sub.tp_agreement("test"), rec.tp_agreement("test")[[0, 2]])
    with pytest.raises(RecordError, match=r"epochs \[3\] are not recorded"):
        rec.at_epochs([1, 3])


def test_within_class_r_removes_what_the_classes_explain():
    rng = np.random.default_rng(0)
    n = 1200
    y = np.repeat([0, 1, 2], n // 3)
    ease = np.array([0.15, 0.5, 0.85])[y]  # the classes differ in difficulty, nothing else is shared

    def collection():
        q = np.clip(ease + rng.normal(0, 0.1, n), 0, 1)  # each collection's own order within a class
        right = rng.random((6, 3, n)) < q
        return Record({"test": np.where(right, y, (y + 1) % 3).astype(np.int16)}, {"test": y}, (1, 2, 3),
                      meta={"n_classes": 3})

    t = X.correlation_table([("a", collection()), ("b", collection())], within_class=True)
    assert t["Pearson r"].iloc[0] > 0.7 and abs(t["within-class r"].iloc[0]) < 0.1
    assert t["within-class 95% CI"].iloc[0].startswith("[")
    assert "within-class r" not in X.correlation_table([("a", collection()), ("b", collection())]).columns
    # partialling out the final TP-agreement: the classes' ease shows there too, so little is left
    f = X.correlation_table([("a", collection()), ("b", collection())], final_out=True)
    assert abs(f["partial r (final correctness out)"].iloc[0]) < f["Pearson r"].iloc[0]


def test_forgetting_and_class_emergence_tables_hand_computed():
    y = np.array([0, 0, 1, 1])
    # 2 models, 3 epochs: example 0 learned and kept; example 1 learned by both at epoch 1, lost by both at 2
    # (forgotten by the collection); examples 2, 3 (class 1) learned at epoch 3 only
    p = np.array([[[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 1]],
                  [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 1, 1]]], np.int16)
    rec = Record({"train": p}, {"train": y}, (1, 2, 3), meta={"n_classes": 2, "classes": ["a", "b"]})
    table, s = X.forgetting_table(rec, "train")
    assert list(table.index) == [2, 3] and table.loc[2, "pairs right -> wrong"] == 0.25
    assert table.iloc[:, -1].tolist() == [1, 0]
    assert (s["events"], s["never"], s["learned"], s["forgotten"], s["forgotten_for_good"]) == (0.25, 0.75, 4, 1, 1)
    # the example-conditional null: example 1 has TPa 1 then 0: one expected event for each model
    assert s["null_by_example"] == pytest.approx(0.25)
    t = X.class_emergence_table(rec, "train", n_boot=100)
    assert t["examples at TPa 1"].tolist() == [2, 1, 3]
    assert t.loc[1, "share a"] == 1 and t.loc[1, "classes spanned at TPa 1"] == 1
    assert t.attrs["change"][0] == pytest.approx(M.effective_classes([0, 1, 1], 2) - 1)
    obs, chance, pval = t.attrs["first_vs_random"]  # epoch 1: 2 examples, both of class a
    assert obs == 1 and 1 < chance < 2 and 0 < pval <= 1


def test_curriculum_table_and_verdict():
    from scipy import stats as sps
    y = np.arange(100) % 2

    def rec(accs):  # one model per accuracy, right on the first acc*100 examples at both epochs
        right = np.stack([[np.arange(100) < a * 100] * 2 for a in accs])
        return Record({"test": np.where(right, y, 1 - y).astype(np.int16)}, {"test": y}, (1, 2), meta={"n_classes": 2})

    plain, easy, same = rec([0.5, 0.52, 0.54]), rec([0.6, 0.63, 0.64]), rec([0.5, 0.52, 0.54])
    t = X.curriculum_table({"plain": plain, "easy": easy, "same": same})
    d, (lo, hi) = t.attrs["last"]["easy"]
    diffs = np.array([0.1, 0.11, 0.1])  # member by member: paired
    half = sps.t.ppf(0.975, 2) * diffs.std(ddof=1) / np.sqrt(3)
    assert d == pytest.approx(diffs.mean()) and (lo, hi) == (pytest.approx(d - half), pytest.approx(d + half))
    assert X.curriculum_verdict(t)[0] == "not reproduced"  # a clear benefit
    word, text = X.curriculum_verdict(t, "same")
    assert word == "reproduced" and "+0.000" in text and "ruled out" in text


def test_verdict_numbers_round_as_the_tables_do():
    import pandas as pd
    v = 0.9485  # stored just above 0.9485: "%.3f" gives 0.949, DataFrame.round 0.948
    assert X._r(v) == f"{pd.DataFrame({'a': [v]}).round(3)['a'][0]:.3f}" == "0.948"
