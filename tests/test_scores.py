"""The field's difficulty scores (agreebook.scores) against hand-computed cases."""
import doctest

import numpy as np
import pytest

from agreebook import compare as C, metrics as M, scores as SC


def test_docstring_examples_run():
    assert doctest.testmod(SC).failed == 0


def test_outputs_from_logits_by_hand():
    z = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]])  # two examples, three classes
    y = np.array([1, 0])
    out = SC.outputs_from_logits(z, y)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(out["probability"], [p[0, 1], p[1, 0]])
    np.testing.assert_allclose(out["other_probability"], [p[0, 0], p[1, 2]])
    np.testing.assert_allclose(out["logit_margin"], [1.0, -3.0])
    e0 = np.sqrt(p[0, 0] ** 2 + (1 - p[0, 1]) ** 2 + p[0, 2] ** 2)
    np.testing.assert_allclose(out["error_norm"][0], e0)
    # the same from probabilities, and a leading (models, epochs) shape kept
    back = SC.outputs_from_probabilities(np.broadcast_to(p, (2, 3, 2, 3)), y)
    for k in SC.OUTPUTS:
        np.testing.assert_allclose(back[k], np.broadcast_to(out[k], (2, 3, 2)), rtol=1e-12, atol=1e-12)
    # out-of-sample inputs (label -1): zeros, not an index error
    assert all(v[1] == 0 for v in SC.outputs_from_logits(z, np.array([1, -1])).values())
    with pytest.raises(ValueError, match="sum to 1"):
        SC.outputs_from_probabilities(z, y)


def test_forgetting_by_hand():
    y = np.array([0, 0, 0, 1])
    # model 0: ex0 right, wrong, right, wrong (2 events); ex1 never right; ex2 always right; ex3 wrong then right
    # model 1: ex0 always right; ex1 right at epoch 2 only (1 event); ex2 right, wrong (1); ex3 always right
    right = np.array([[[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 1, 1], [0, 0, 1, 1]],
                      [[1, 0, 1, 1], [1, 1, 0, 1], [1, 0, 0, 1], [1, 0, 0, 1]]], bool)  # (models, epochs, examples)
    preds = np.where(right, y, 1 - y)
    events, never = SC.forgetting(preds, y)
    # per model per example: ex0 (2, 0), ex1 (never, 1), ex2 (0, 1), ex3 (0, 0)
    ex = np.array([[2, 0, 0, 0], [0, 1, 1, 0]])
    mine = M.forgetting_events(preds, y)
    np.testing.assert_array_equal(mine, ex)  # the per-model counts the package already has
    np.testing.assert_allclose(events, [1.0, np.inf, 0.5, 0.0])  # ex1: model 0 never learned it (infinitely many)
    np.testing.assert_allclose(never, [0, 0.5, 0, 0])


def test_cartography_by_hand_and_correctness_is_accessibility():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    preds = rng.integers(0, 3, (4, 5, 50))
    q = rng.random((4, 5, 50))
    conf, var, corr = SC.cartography(q, preds, y)
    np.testing.assert_allclose(conf, q.mean((0, 1)))
    np.testing.assert_allclose(var, np.mean([np.std(q[m], axis=0) for m in range(4)], axis=0))
    np.testing.assert_allclose(corr, M.accessibility(M.tp_agreement(preds, y)))
    with pytest.raises(ValueError, match="predictions' shape"):
        SC.cartography(q[:, :4], preds, y)


def test_margin_el2n_aum_by_hand():
    q = np.array([[[0.6, 0.1], [0.9, 0.2]], [[0.4, 0.3], [0.7, 0.4]]])      # 2 models, 2 epochs, 2 examples
    o = np.array([[[0.3, 0.8], [0.05, 0.7]], [[0.5, 0.6], [0.2, 0.5]]])
    np.testing.assert_allclose(SC.margin(q, o), [(0.85 + 0.5) / 2, (-0.5 - 0.1) / 2])
    np.testing.assert_allclose(SC.margin(q, o, epoch_index=0), [(0.3 - 0.1) / 2, (-0.7 - 0.3) / 2])
    np.testing.assert_allclose(SC.el2n(q), [0.5, 0.2])
    np.testing.assert_allclose(SC.area_under_margin(q - o), [(0.3 + 0.85 - 0.1 + 0.5) / 4, (-0.7 - 0.5 - 0.3 - 0.1) / 4])
    with pytest.raises(ValueError, match=r"must be \(n_models, n_epochs, n_examples\)"):
        SC.el2n(q[0])


def _record_with_logits(tmp_path):
    from agreebook.record import Record
    rng = np.random.default_rng(1)
    y = {"train": rng.integers(0, 3, 40), "test": rng.integers(0, 3, 30)}
    z = {s: rng.normal(size=(4, 3, len(v), 3)) + 2 * np.eye(3)[v] for s, v in y.items()}
    meta = {"dataset": "toy", "classes": ["a", "b", "c"], "n_classes": 3,
            "subset": {"train_indices": sorted(rng.choice(100, 40, replace=False).tolist()),
                       "test_indices": list(range(50, 80))}}
    rec = Record.from_arrays(labels=y, epochs=[1, 5, 10], logits=z, meta=meta)
    rec.save(tmp_path / "run")
    return rec


def test_scores_csv_round_trips_in_the_datasets_order(tmp_path, capsys):
    import pandas as pd
    from agreebook import cli
    from agreebook.record import Record
    rec = _record_with_logits(tmp_path)
    back = Record.load(tmp_path / "run")  # the outputs survive save and load (float16)
    for k in SC.OUTPUTS:
        np.testing.assert_array_equal(back.outputs["test"][k], rec.outputs["test"][k])
    assert cli.main(["scores", str(tmp_path / "run"), "--out", str(tmp_path / "s.csv")]) == 0
    t = pd.read_csv(tmp_path / "s.csv")
    assert list(t["split"].unique()) == ["train", "test"] and len(t) == 70
    for split in ("train", "test"):
        mine = SC.scores_table(back, split)
        got = t[t["split"] == split].set_index("index")
        assert list(got.index) == rec.meta["subset"][f"{split}_indices"]  # the full dataset's indices
        for col in mine.columns:
            if col == "class":
                assert list(got[col]) == list(mine[col])
            else:
                np.testing.assert_allclose(got[col].to_numpy(float), mine[col].to_numpy(float), rtol=1e-5, atol=1e-6)
    capsys.readouterr()  # the CSV run's "wrote ..." line
    assert cli.main(["scores", str(tmp_path / "run"), "--json"]) == 0
    rows = __import__("json").loads(capsys.readouterr().out)
    assert len(rows) == 70 and "area under the margin" in rows[0]


def test_scores_of_a_record_without_probabilities_say_how_to_get_them(tmp_path, capsys):
    from agreebook import cli
    from agreebook.record import Record, RecordError
    y = np.array([0, 1, 1, 0])
    rec = Record.from_arrays({"test": np.stack([np.stack([y, 1 - y])] * 2)}, {"test": y}, [1, 2])
    rec.save(tmp_path / "r")
    assert cli.main(["scores", str(tmp_path / "r"), "--out", str(tmp_path / "s.csv")]) == 0
    assert "train with --save-probabilities" in capsys.readouterr().err
    with pytest.raises(RecordError, match="--save-probabilities"):
        rec.output("test", "error_norm")
    with pytest.raises(RecordError, match="logits must be"):
        Record.from_arrays(labels={"test": y}, epochs=[1], logits={"test": np.zeros((2, 4, 3))})


def test_per_model_scores_average_to_the_collections_and_their_reliability():
    from agreebook import stats as S
    from agreebook.record import Record
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    hard = rng.random(200)  # a difficulty every model shares
    z = rng.normal(size=(6, 4, 200, 3)) + 3 * np.eye(3)[y] * (1 - hard)[None, None, :, None]
    rec = Record.from_arrays(labels={"test": y}, epochs=[1, 2, 4, 8], logits={"test": z})
    pm = SC.per_model(rec, "test")
    t = SC.scores_table(rec, "test")
    np.testing.assert_allclose(pm["accessibility"].mean(0), t["accessibility"])
    np.testing.assert_allclose(np.median(pm["forgetting events (median)"], 0), t["forgetting events (median)"])
    np.testing.assert_allclose(np.median(pm["learning epoch (median)"], 0), t["learning epoch (median)"])
    np.testing.assert_allclose(pm["confidence"].mean(0), t["confidence"], rtol=1e-6)
    np.testing.assert_allclose(pm["EL2N (epoch 1)"].mean(0), t["EL2N (epoch 1)"], rtol=1e-6)
    assert set(pm) == set(C.score_columns(t))  # one name per score everywhere
    rel = S.score_reliability(pm["confidence"], sizes=[2, 6])
    assert 0.5 < rel["reliability"][0] < rel["reliability"][1] <= 1  # more models, a steadier score
    with pytest.raises(ValueError, match="sizes must lie in 2..6"):
        S.score_reliability(pm["confidence"], sizes=[7])


def test_a_heldout_split_is_labelled_disjoint_from_training_and_scored(tmp_path):
    from agreebook.config import ConfigError, TrainConfig
    from agreebook.data import load_dataset
    from agreebook.record import Record
    from agreebook.train import Runtime, train_collection
    cfg = TrainConfig(dataset="digits", arch="fc", n_models=2, epochs=(1, 2), train_size=300, test_size=100,
                      heldout_size=200)
    rec = train_collection(cfg, tmp_path / "run", Runtime(device="cpu", progress=False))
    back = Record.load(tmp_path / "run")
    assert back.labelled_splits == ("train", "test", "heldout") and back.predictions["heldout"].shape == (2, 2, 200)
    sub = back.meta["subset"]
    assert not set(sub["heldout_indices"]) & set(sub["train_indices"])
    full = load_dataset("digits")
    np.testing.assert_array_equal(back.labels["heldout"], full.y_train[sub["heldout_indices"]])
    assert np.bincount(back.labels["heldout"]).min() >= 18  # stratified: about 20 a class
    t = SC.scores_table(back, "heldout")
    assert list(t.index) == sorted(sub["heldout_indices"]) and t["accessibility"].between(0, 1).all()
    # the setting joins records' identities only when set: earlier run folders keep their names
    assert "heldout_size" not in TrainConfig(train_size=300).to_dict()
    with pytest.raises(ConfigError, match="heldout_size takes its examples from outside the training subset"):
        TrainConfig(dataset="digits", heldout_size=100).validate()
    with pytest.raises(ConfigError, match="heldout_size 2000 exceeds the"):
        train_collection(cfg.replace(heldout_size=2000), tmp_path / "big", Runtime(device="cpu", progress=False))


def test_scores_refuse_unfinished_records_and_use_what_older_records_keep():
    from agreebook import experiments as X
    from agreebook.record import Record, RecordError
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 30)
    preds = rng.integers(0, 3, (3, 2, 30))
    q = rng.random((3, 2, 30))
    rec = Record({"test": preds}, {"test": y}, [1, 2], complete=[[True, True], [True, False], [True, True]])
    with pytest.raises(RecordError, match="incomplete .* run the same train command again"):
        SC.scores_table(rec, "test")
    old = Record({"test": preds}, {"test": y}, [1, 2], probabilities={"test": q})  # true-class probability only
    t = SC.scores_table(old, "test")
    assert {"confidence", "variability", "correctness"} <= set(t.columns) and "area under the margin" not in t
    assert t.attrs["missing"].startswith("margin, EL2N, area under the margin: this record keeps only some")
    with pytest.raises(RecordError, match="differ from the logits' argmax at"):
        Record.from_arrays({"test": preds}, {"test": y}, [1, 2], logits={"test": rng.normal(size=(3, 2, 30, 3))})
    # a labelled held-out split is not an out-of-sample input (§3.4)
    rec2 = Record({"test": preds, "heldout": preds, "ood_noise": preds}, {"test": y, "heldout": y, "ood_noise": -np.ones(30)},
                  [1, 2])
    assert X.naturalness_order(rec2) == ["test", "ood_noise"]


def test_a_reference_is_read_only_for_records_of_its_dataset(offline_root):
    from agreebook.data import load_dataset
    from agreebook.record import Record
    from agreebook.references import ReferenceError, load_reference
    ds = load_dataset("cifar10", root=offline_root, download=False)
    cs = load_reference("cifar10_cscores", root=offline_root, download=False)
    idx = np.array([3, 10, 400, 49999])
    rec = Record({"train": np.zeros((2, 1, 4), int), "test": np.zeros((2, 1, 2), int)},
                 {"train": ds.y_train[idx], "test": ds.y_test[:2]}, [1],
                 meta={"dataset": "cifar10", "subset": {"train_indices": idx.tolist()}})
    np.testing.assert_array_equal(cs.for_record(rec, "train"), cs.values[idx])
    with pytest.raises(ReferenceError, match="covers cifar10's train set; 'test' is drawn from its test set"):
        cs.for_record(rec, "test")
    rec.meta["dataset"] = "cifar10_animals"
    with pytest.raises(ReferenceError, match="this record is of 'cifar10_animals', whose indices are into its own"):
        cs.for_record(rec, "train")
    rec.meta.update(dataset="cifar10", subset={"train_indices": [4, 11, 401, 49998]})
    with pytest.raises(ReferenceError, match="agree on .* not cifar10's original order"):
        cs.for_record(rec, "train")


def test_from_arrays_takes_torch_tensors_with_grad():
    import torch
    from agreebook.record import Record
    z = torch.randn(2, 1, 5, 3, requires_grad=True)
    rec = Record.from_arrays(labels={"test": torch.tensor([0, 1, 2, 0, 1])}, epochs=[1], logits={"test": z})
    np.testing.assert_array_equal(rec.predictions["test"], z.detach().argmax(-1).numpy())


def test_median_learning_epoch_equals_numpys_median_with_unlearned_as_inf():
    rng = np.random.default_rng(7)
    ep = np.array([1, 2, 3, 4, 6, 8, 12, 16])
    for n_models in (1, 2, 5, 10):
        le = rng.choice(np.r_[ep, np.nan], size=(n_models, 500), p=np.r_[np.full(8, 0.1), 0.2])
        want = np.median(np.where(np.isnan(le), np.inf, le), axis=0)
        np.testing.assert_array_equal(SC.median_learning_epoch(le, ep), want)


def test_a_large_records_outputs_are_stored_mapped_and_scored_block_by_block(tmp_path, monkeypatch):
    import zipfile

    import pandas as pd

    from agreebook import record as R
    rng = np.random.default_rng(11)
    y = rng.integers(0, 4, 300)
    z = rng.normal(size=(5, 3, 300, 4)) + 2 * np.eye(4)[y]
    rec = R.Record.from_arrays(labels={"test": y}, epochs=[1, 2, 4], logits={"test": z})
    rec.save(tmp_path / "a")
    rec.save(tmp_path / "b")  # the same arrays give the same bytes (members dated 1980)
    assert (tmp_path / "a/record.npz").read_bytes() == (tmp_path / "b/record.npz").read_bytes()
    with zipfile.ZipFile(tmp_path / "a/record.npz") as f:
        kinds = {i.filename: i.compress_type for i in f.infolist()}
    assert kinds["test_logit_margins.npy"] == zipfile.ZIP_STORED and kinds["test_predictions.npy"] == zipfile.ZIP_DEFLATED
    in_memory = R.Record.load(tmp_path / "a")
    assert not any(isinstance(v, np.memmap) for v in in_memory.outputs["test"].values())  # below MAP_BYTES
    monkeypatch.setattr(R, "MAP_BYTES", 1)
    monkeypatch.setattr(SC, "CHUNK", 64)  # five blocks, the last one short
    mapped = R.Record.load(tmp_path / "a")
    assert all(isinstance(v, np.memmap) for v in mapped.outputs["test"].values())
    for k, v in rec.outputs["test"].items():
        np.testing.assert_array_equal(mapped.outputs["test"][k], v)
    monkeypatch.setattr(SC, "CHUNK", 1 << 16)
    whole = SC.scores_table(in_memory, "test")
    monkeypatch.setattr(SC, "CHUNK", 64)
    pd.testing.assert_frame_equal(SC.scores_table(mapped, "test"), whole)
    rec.save(tmp_path / "c")  # every array of MAP_BYTES or more is stored, and mapped: here all
    both = R.Record.load(tmp_path / "c")
    assert isinstance(both.predictions["test"], np.memmap)
    np.testing.assert_array_equal(both.predictions["test"], rec.predictions["test"])
    pd.testing.assert_frame_equal(SC.scores_table(both, "test"), whole)
    # the float32 loops equal NumPy's float64 mean and std to float32 precision
    q = rec.outputs["test"]["probability"].astype(np.float64)
    np.testing.assert_allclose(whole["confidence"], q.mean(1).mean(0), rtol=1e-6)
    np.testing.assert_allclose(whole["variability"], q.std(1).mean(0), rtol=1e-5, atol=1e-7)


def test_a_score_that_reads_an_unrecorded_output_is_left_out_with_the_reason():
    from agreebook.record import Record
    rng = np.random.default_rng(12)
    y = rng.integers(0, 3, 100)
    rec = Record.from_arrays(labels={"test": y}, epochs=[1, 2, 3], logits={"test": rng.normal(size=(4, 3, 100, 3))})
    rec.outputs["test"]["logit_margin"][1, 0, 77] = np.nan  # a member resumed across a version that lacked it
    t = SC.scores_table(rec, "test")
    assert "area under the margin" not in t and "confidence" in t
    assert t.attrs["missing"].startswith("area under the margin: this record keeps only some")
    rec.outputs["test"]["other_probability"][1, 0, 5] = np.nan  # not the epoch the margin reads: kept
    assert "margin (epoch 3)" in SC.scores_table(rec, "test")
