"""The book's machinery: parameters, presets, record reuse, the chapter analyses, the notebooks."""
import dataclasses
import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from agreebook import book, experiments as X, metrics as M
from agreebook.config import ConfigError, TrainConfig
from agreebook.data import out_of_sample, load_dataset
from agreebook.record import Record
from agreebook.prepare import prepare_dataset

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("kwargs,message", [
    (dict(dataset="imagenet"), "unknown dataset 'imagenet'; known datasets: "),
    (dict(arch="transformer"), "unknown architecture 'transformer'"),
    (dict(n_models=1), "n_models must be at least 2"),
    (dict(epochs="4,2"), "strictly increasing"),
    (dict(epochs="1,two"), "whole numbers"),
    (dict(scale="huge"), "unknown scale 'huge'; scales are: smoke, cpu, paper"),
    (dict(data_root="/nonexistent/folder"), "is not a folder"),
])
def test_bad_parameters_give_one_clear_message(kwargs, message):
    with pytest.raises(book.BookError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        book.setup(3, **kwargs)
    lines = e.value._render_traceback_()  # how IPython shows it: one line, no traceback
    assert len(lines) == 1 and lines[0].startswith("agreebook: ")


def test_presets_are_type_checked_overrides():
    assert book.preset("smoke")["n_models"] == 3
    assert book.preset("cpu", n_models=20)["n_models"] == 20
    with pytest.raises(book.BookError, match="unknown preset key 'n_model'"):
        book.preset("cpu", n_model=20)
    with pytest.raises(book.BookError, match="n_models must be an integer"):
        book.preset("cpu", n_models="twenty")
    with pytest.raises(book.BookError, match=r"scores_sizes must be a list of integers \(or None\)"):
        book.preset("cpu", scores_sizes=(100, "all"))
    assert book.preset("cpu", n_models="20", scores_sizes="100,None,50")["scores_sizes"] == (100, None, 50)
    for scale in book.SCALES:  # every shipped preset passes its own check
        book.preset(scale)


def test_setup_fills_from_preset_and_explicit_values_win():
    ch = book.setup(3, scale="smoke")
    assert (ch.n_models, ch.epochs, ch.arch) == (3, (1, 2, 4), "small_st_vgg")
    ch = book.setup(3, scale="smoke", n_models=4, epochs="1,3", arch="fc")
    assert (ch.n_models, ch.epochs, ch.arch) == (4, (1, 3), "fc")
    assert book.setup(3, scale="paper").arch == "st_vgg"
    # digits is smaller than the cpu preset's 2500/1000: used whole, not refused
    cfg = book.setup(3, dataset="digits", scale="cpu").config()
    assert cfg.train_size is None and cfg.test_size is None
    # an unnamed dataset is the scale's: the embedded digits for CI, the small-mammals analogue for the book
    assert book.setup(3, scale="smoke").dataset == "digits"
    assert book.preset("cpu")["dataset"] == "cifar10_animals" and book.preset("paper")["dataset"] == "small_mammals"
    assert cfg.lr == 0.05  # architecture defaults resolved


def test_collection_reuses_an_identical_configuration(tmp_path):
    ch = book.setup(3, scale="smoke", runs=str(tmp_path))
    cfg = ch.config(n_models=2, epochs=(1,), train_size=200, test_size=100)
    a = ch.collection(cfg)
    written = (ch.run_dir(cfg) / "record.npz").stat().st_mtime_ns
    b = ch.collection(cfg)
    assert (ch.run_dir(cfg) / "record.npz").stat().st_mtime_ns == written  # read back, not trained again
    np.testing.assert_array_equal(a.predictions["test"], b.predictions["test"])
    assert len(list(tmp_path.iterdir())) == 1
    other = ch.config(n_models=2, epochs=(1,), train_size=200, test_size=100, seed=1)
    assert ch.run_dir(other) != ch.run_dir(cfg)


def test_partitions_are_disjoint_and_cover_the_subset():
    base = TrainConfig(train_size=600, test_size=100)
    parts = [prepare_dataset(base.replace(n_partitions=3, partition=i)) for i in range(3)]
    whole = prepare_dataset(base)
    rows = [set(p.subset["train_indices"]) for p in parts]
    assert sum(map(len, rows)) == 600 and set().union(*rows) == set(whole.subset["train_indices"])
    assert all(not (a & b) for i, a in enumerate(rows) for b in rows[i + 1:])
    assert all(np.array_equal(p.x_test, whole.x_test) for p in parts)  # one common test set
    with pytest.raises(ConfigError, match="partition must be in"):
        base.replace(n_partitions=2, partition=2).validate()
    with pytest.raises(ConfigError, match="unknown out-of-sample set"):
        base.replace(ood=("nosie",)).validate()


def test_out_of_sample_inputs(offline_root):
    like = load_dataset("digits").x_train
    noise = out_of_sample("noise", like, 50, seed=1)
    assert noise.shape == (50, 8, 8, 1) and noise.dtype == np.uint8
    assert abs(noise.mean() - like.mean()) < 10
    np.testing.assert_array_equal(noise, out_of_sample("noise", like, 50, seed=1))
    fm = out_of_sample("fashion_mnist", like, 20, root=offline_root)
    assert fm.shape == (20, 8, 8, 1) and fm.std() > 10
    rgb = out_of_sample("fashion_mnist", np.zeros((1, 32, 32, 3), np.uint8), 5, root=offline_root)
    assert rgb.shape == (5, 32, 32, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


def _toy_record():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 40)
    # 4 models, 3 epochs: an easy half learned at epoch 1, a hard half at epoch 4 by two models
    p = np.empty((4, 3, 40), np.int16)
    wrong = (y + 1) % 3
    p[:] = wrong
    p[:, :, :20] = y[:20]
    p[:2, 2, 20:] = y[20:]
    return Record({"test": p, "ood_noise": np.zeros((4, 3, 10), np.int16)},
                  {"test": y, "ood_noise": np.full(10, -1)}, [1, 2, 4], meta={"n_classes": 3})


def test_learning_epoch_by_accessibility_hand_computed():
    for held_out in (True, False):
        b = X.learning_epoch_by_accessibility(_toy_record(), "test", held_out=held_out, n_boot=200)
        # 20 bins of 2 examples: the 20 hard ones (learned at epoch 4 by models 0 and 1, never by
        # 2 and 3) sort first, the 20 easy ones (learned at epoch 1 by all) last
        assert len(b["n"]) == 20 and (b["n"] == 2).all() and b["models"] == (2 if held_out else 4)
        hard, easy = slice(0, 10), slice(10, 20)
        np.testing.assert_array_equal(b["median"][hard], 4)
        np.testing.assert_array_equal(b["never"][hard], 0.5)
        np.testing.assert_array_equal(b["q75"][hard], np.inf)
        np.testing.assert_array_equal(b["median"][easy], 1)
        np.testing.assert_array_equal(b["never"][easy], 0)
        np.testing.assert_array_equal(b["ci"][easy], 1)
        assert (b["acc_hi"][hard] < b["acc_lo"][easy]).all()


def test_out_of_sample_agreement_and_its_null():
    rec = _toy_record()
    res = X.out_of_sample_agreement(rec)
    assert set(res) == {"test", "ood_noise"}
    obs, null = res["ood_noise"]
    assert np.all(obs == 1) and np.all(null == 1)  # every model always says 0: no room to disagree
    rng = np.random.default_rng(1)
    indep = rng.integers(0, 5, (8, 1, 3000)).astype(np.int16)
    assert abs(M.null_agreement_unlabelled(indep, 5000)[0].mean() - M.agreement(indep)[0].mean()) < 0.01


def test_independent_collection_matches_accuracies_and_the_exact_null():
    y = np.random.default_rng(0).integers(0, 10, 20000)
    acc = np.array([[0.2, 0.9], [0.5, 0.6], [0.7, 0.95]])
    p = M.independent_collection(acc, y, 10, seed=3)
    np.testing.assert_allclose(M.accuracies(p, y), acc, atol=0.015)
    counts = M.tp_agreement_histogram(M.tp_agreement(p, y), 3)
    np.testing.assert_allclose(counts / counts.sum(1, keepdims=True), M.null_tp_agreement(acc), atol=0.015)
    rec = X.null_record(_toy_record())
    np.testing.assert_array_equal(rec.splits, ("test",))


def test_robustness_settings_change_one_thing_each():
    cfg = TrainConfig().resolved()
    s = dict(X.robustness_settings(cfg))
    assert s["base"] == {} and "elu" not in s  # small st-VGG's own activation is not a change
    assert {"lr", "batch_size", "optimizer", "dropout", "activation"} <= {k for v in s.values() for k in v}
    assert len(s) == len(X.robustness_settings(cfg))  # labels are unique


def test_correlation_matrix_of_identical_and_of_independent_collections():
    rec = _toy_record()
    m = X.correlation_matrix([("a", rec), ("b", rec)], "test")
    assert np.allclose(m["pearson"][0, 1], 1) and np.isnan(m["pearson"][0, 0])
    np.testing.assert_allclose(m["ceiling"][0, 1], m["reliability"][0])  # sqrt(rel * rel)
    rng = np.random.default_rng(0)
    labels = np.zeros(400, np.int64)
    noise = [Record({"test": np.where(rng.random((6, 3, 400)) < 0.5, 0, 1).astype(np.int16)}, {"test": labels}, (1, 2, 3))
             for _ in range(2)]
    m = X.correlation_matrix([("x", noise[0]), ("y", noise[1])], "test")
    assert abs(m["pearson"][0, 1]) < 0.2 and m["reliability"].max() < 0.3  # no order to share


def test_partitions_follow_the_preset_or_the_named_dataset():
    ch = book.setup(3, scale="smoke")
    parts = ch.partitions()
    assert [cfg.partition for _, cfg in parts] == [0, 1] and parts[0][1].n_partitions == 1437 // 150
    assert len({cfg.seed for _, cfg in parts} | {ch.seed}) == 3  # each part its own seeds
    assert len({cfg.test_size for _, cfg in parts}) == 1 and parts[0][1].train_size is None
    cpu = book.setup(3, scale="cpu", dataset="digits")  # a named dataset is split itself, with its net
    cpu = dataclasses.replace(cpu, sizes={**cpu.sizes, "partition_size": 300})
    assert {(cfg.dataset, cfg.arch) for _, cfg in cpu.partitions()} == {("digits", cpu.arch)}
    with pytest.raises(book.BookError, match="too few for two parts"):
        dataclasses.replace(cpu, sizes={**cpu.sizes, "partition_size": 1000}).partitions()
    small = dataclasses.replace(ch, sizes={**ch.sizes, "partitions_trained": 1})
    with pytest.raises(book.BookError, match="at least 2"):
        small.partitions()


def test_protocols_pair_the_main_collection_with_its_retrain_twin():
    ch = book.setup(3, scale="smoke")
    p = ch.protocols()
    (_, traj), (_, retrain) = p["trajectory"], p["retrain"]
    assert traj == ch.main_config() and traj.protocol == "trajectory" and retrain.protocol == "retrain"
    assert (retrain.n_models, retrain.epochs) == (ch.sizes["protocol_models"], ch.sizes["protocol_epochs"])
    # the same data and training otherwise
    same = ("dataset", "arch", "lr", "batch_size", "train_size", "test_size", "seed", "data_seed")
    assert all(getattr(traj, k) == getattr(retrain, k) for k in same)
    assert ch.run_dir(traj) != ch.run_dir(retrain)


NOTEBOOK_PARAMS = {"dataset", "arch", "n_models", "epochs", "seed", "scale", "data_root", "embeddings"}


@pytest.mark.parametrize("n", book.CHAPTERS)
def test_chapter_notebooks_have_typed_parameters_then_validation(n):
    nb = nbformat.read(REPO / "book" / f"chapter{n}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    first = code[0] if "injected-parameters" not in code[0].metadata.get("tags", []) else code[1]
    assert "parameters" in first.metadata.get("tags", [])
    names = {line.split(":")[0] for line in first.source.splitlines() if line.strip()}
    assert names == NOTEBOOK_PARAMS | set(book.CHAPTER_PARAMETERS.get(n, ()))
    assert all("# " in line and ": " in line.split("=")[0] for line in first.source.splitlines())
    after = code[code.index(first) + 1]
    after = after if "injected-parameters" not in after.metadata.get("tags", []) else code[code.index(first) + 2]
    assert f"book.setup({n}," in after.source


def test_toc_lists_every_chapter_and_the_symlink_resolves():
    toc = (REPO / "book" / "_toc.yml").read_text()
    assert (REPO / "book" / "_toc.yml").resolve() == (REPO / "_toc.yml").resolve()
    for n in book.CHAPTERS:
        assert f"file: chapter{n}\n" in toc
    for variants in book.VARIANTS.values():
        for name in variants:
            assert f"file: {name}\n" in toc
    cfg = (REPO / "_config.yml").read_text()
    assert 'execute_notebooks: "off"' in cfg and "mathjax/tex-svg.js" in cfg
    assert (REPO / "book" / "_static" / "mathjax" / "tex-svg.js").stat().st_size > 1e6


def test_collapse_injected_parameters(tmp_path):
    nb = nbformat.v4.new_notebook()
    c = nbformat.v4.new_code_cell("scale = 'smoke'")
    c.metadata["tags"] = ["injected-parameters"]
    nb.cells = [c]
    path = tmp_path / "x.ipynb"
    nbformat.write(nb, path)
    book.collapse_injected_parameters(path)
    assert nbformat.read(path, as_version=4).cells[0].metadata["tags"] == ["injected-parameters", "hide-cell"]
    with pytest.raises(book.BookError, match="unknown chapter parameters"):
        book.run_book("smoke", parameters={"datset": "mnist"}, build=False)


def test_every_chapter_builds_valid_configs_at_paper_scale(offline_root):
    """The paper preset is for a GPU and is not trained here; every collection a chapter asks
    for at that scale must still be a configuration that validates."""
    root = str(offline_root)
    for c in book.CHAPTERS:
        ch = book.setup(c, scale="paper", data_root=root)
        assert ch.arch == "st_vgg" and ch.n_models == 100 and ch.epochs[-1] == 128
    ch = book.setup(4, scale="paper", data_root=root)
    archs = ch.architectures()
    assert {c.arch for _, c in archs.values()} == {"st_vgg", "small_st_vgg", "linear_st_vgg"}
    assert book.setup(5, scale="paper", data_root=root).controls()
    assert len(book.setup(3, scale="paper", data_root=root).partitions()) == 60
    for name in ("gabor", "gaussian", book.other_domain(ch.dataset)):
        assert ch.for_dataset(name).config().train_size is None  # the whole set
    assert ch.config(random_labels=True).random_labels
    text = book.setup(3, dataset="stackoverflow_titles", scale="paper", data_root=root)
    assert text.arch == "bilstm_attention" and text.main_config().ood == ("noise",)


def test_verdict_renders_as_one_wrapping_markdown_block():
    v = book.verdict("test: more bimodal at 5 of 5 epochs.", "test: against the class-matched null, 4 of 5.")
    md = v._repr_markdown_()
    # every line is in one blockquote (which wraps), the sentences kept whole and in order
    assert all(line.startswith(">") for line in md.strip().splitlines())
    assert md.index("5 of 5") < md.index("4 of 5") and "**Verdict.**" in md
    assert repr(v).splitlines() == ["Verdict:", "test: more bimodal at 5 of 5 epochs.",
                                    "test: against the class-matched null, 4 of 5."]


def test_a_chapter_that_fails_while_executing_is_left_as_it_was(tmp_path):
    """The driver executes into a scratch copy: a cell that raises leaves the chapter's bytes."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('scale = "smoke"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('raise RuntimeError("a cell failed")')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "chapter1.ipynb"
    nbformat.write(nb, path)
    before = path.read_bytes()
    with pytest.raises(book.BookError, match=r"chapter1.ipynb failed \(RuntimeError: a cell failed\).*is unchanged"):
        book.run_book("smoke", chapters=(1,), build=False, book=tmp_path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chapter1.ipynb"]  # no temporary beside it


def test_variant_pages_get_their_own_titles(tmp_path):
    path = tmp_path / "v.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 3. Diversity\n\n## Overview\ntext")]
    nbformat.write(nb, path)
    for _ in range(2):  # idempotent: re-executing a variant does not stack suffixes
        book.retitle(path, "on Fashion-MNIST")
    assert nbformat.read(path, as_version=4).cells[0].source == "# 3. Diversity, on Fashion-MNIST\n\n## Overview\ntext"
    titles = {nbformat.read(REPO / "book" / f"{name}.ipynb", as_version=4).cells[0].source.splitlines()[0]
              for name in book.VARIANT_TITLES}
    main = nbformat.read(REPO / "book" / "chapter3.ipynb", as_version=4).cells[0].source.splitlines()[0]
    assert len(titles | {main}) == 1 + len(book.VARIANT_TITLES)  # distinct entries in the sidebar


def test_a_variant_page_keeps_only_the_sections_it_ran(tmp_path):
    path = tmp_path / "chapter3_fashion_mnist.ipynb"
    nb = nbformat.v4.new_notebook()
    cells = [("# 3. Diversity", []), ("## §3.1", ["section-3.1"]), ("## §3.2", ["section-3.2"]),
             ("prose of §3.2", ["section-3.2"]), ("## §3.4", ["section-3.4"]), ("## What it shows", [])]
    nb.cells = [nbformat.v4.new_markdown_cell(src, metadata={"tags": tags}) for src, tags in cells]
    nbformat.write(nb, path)
    book.finish_variant(path, "chapter3_fashion_mnist")
    kept = [c.source for c in nbformat.read(path, as_version=4).cells]
    assert kept == [f"# 3. Diversity, {book.VARIANT_TITLES['chapter3_fashion_mnist']}", "## §3.1", "## §3.4",
                    "## What it shows"]
    # every section of chapter 3 is tagged on its cells, so a variant can drop it
    tags = {t for c in nbformat.read(REPO / "book" / "chapter3.ipynb", as_version=4).cells
            for t in c.metadata.get("tags", []) if t.startswith("section-")}
    assert tags == {f"section-{s}" for s in book.SECTIONS[3]}
    for name, extra in book.VARIANTS[3].items():  # and the published variants did
        shown = book.sections(3, extra.get("sections", ""))  # none given: every section
        vtags = {t for c in nbformat.read(REPO / "book" / f"{name}.ipynb", as_version=4).cells
                 for t in c.metadata.get("tags", []) if t.startswith("section-")}
        assert vtags == {f"section-{s}" for s in shown}


def test_chapter_sections_are_checked():
    assert book.sections(3, "") == book.SECTIONS[3]
    assert book.sections(3, "3.1, 3.4") == ("3.1", "3.4")
    with pytest.raises(book.BookError, match=r"unknown section\(s\) \['3.5'\] for chapter 3; sections are: 3.1, protocol"):
        book.sections(3, "3.1,3.5")
    with pytest.raises(book.BookError, match="unknown chapter parameters \\['sections'\\]"):
        book.run_book("smoke", chapters=(4,), parameters={"sections": "3.1"}, build=False)
    with pytest.raises(book.BookError, match="unknown section"):
        book.run_book("smoke", chapters=(3,), parameters={"sections": "3.9"}, build=False)


def test_records_table_lists_and_links_what_the_chapter_read(tmp_path):
    book._USED.clear()
    book._MODELS.clear()
    ch = book.setup(3, scale="smoke", runs=str(tmp_path))
    cfg = ch.config(n_models=2, epochs=(1, 2), train_size=200, test_size=100, lr=0.1)
    ch.collection(cfg)
    table = book.records_table()
    name = ch.run_dir(cfg).name
    row = table.frame.loc[name]
    assert (row["N"], row["epochs"], row["train / test"], row["settings"]) == (2, "1, 2", "200 / 100", "lr=0.1")
    assert [url for _, url in table.links[0]] == [f"records/{name}/record.npz", f"records/{name}/record.json"]
    for _, url in table.links[0]:  # the links name the files the collection wrote
        assert (tmp_path / url.split("/", 1)[1]).is_file()
    assert f'href="records/{name}/record.npz"' in table._repr_html_() and name in repr(table)


def test_committed_pages_link_every_committed_record_and_nothing_else():
    records = REPO / "book" / "records"
    pages = book.page_records()
    assert set(pages) == {f"chapter{n}" for n in book.CHAPTERS} | {v for vs in book.VARIANTS.values() for v in vs}
    linked = set().union(*pages.values())
    for path in linked:
        assert (records / path).is_file(), path
    folders = {p.name for p in records.iterdir() if p.is_dir()}
    assert folders == {p.split("/")[0] for p in linked}  # no record that no page reads
    assert (REPO / "book" / "_extra" / "records").resolve() == records.resolve()
    assert 'html_extra_path: ["_extra"]' in (REPO / "_config.yml").read_text()


def test_scores_collection_keeps_outputs_and_shares_a_small_training_set(offline_root):
    root = str(offline_root)
    c, cfg = book.setup(8, scale="smoke", data_root=root).scores_collection()
    assert (c.dataset, cfg.train_size, cfg.test_size, cfg.heldout_size, cfg.save_probabilities) == \
        ("cifar10", 300, 300, 300, True)
    c, cfg = book.setup(8, scale="cpu", data_root=root).scores_collection(n_models=4, epochs="1,3")
    assert (cfg.n_models, cfg.epochs, cfg.train_size, cfg.test_size, cfg.heldout_size) == (4, (1, 3), 4000, None, 5000)
    # a named dataset too small for both subsets (digits: 1437 training images) shares them in
    # the preset's proportion, 4000 : 5000
    c, cfg = book.setup(8, dataset="digits", scale="cpu").scores_collection()
    assert c.dataset == "digits" and (cfg.train_size, cfg.heldout_size) == (1437 - 1437 * 5000 // 9000, 1437 * 5000 // 9000)
    assert book.setup(8, scale="paper", data_root=root).scores_collection()[1].n_models == 100


def test_scores_downloads_write_each_finished_record_once_and_alike(tmp_path):
    from agreebook.record import Record
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 50)
    done = Record.from_arrays(labels={"test": y}, epochs=[1, 2], logits={"test": rng.normal(size=(3, 2, 50, 3))},
                              meta={"dataset": "toy", "arch": "fc"})
    done.save(tmp_path / "done")
    half = Record(done.predictions, done.labels, done.epochs, meta={"dataset": "toy"},
                  complete=np.array([[True, False]] * 3))
    half.save(tmp_path / "half")
    table = book.scores_downloads(tmp_path)
    assert list(table.frame.index) == ["done"] and table.frame.loc["done", "probability-based"] == "yes"
    assert table.links == [[("scores.csv.gz", "records/done/scores.csv.gz")]]
    assert not (tmp_path / "half" / "scores.csv.gz").exists()  # a record still training has no scores
    first = (tmp_path / "done" / "scores.csv.gz").read_bytes()
    back = pd.read_csv(tmp_path / "done" / "scores.csv.gz")
    assert len(back) == 50 and back["split"].eq("test").all() and list(back.columns[:4]) == ["split", "index", "label", "class"]
    book.scores_downloads(tmp_path)
    assert (tmp_path / "done" / "scores.csv.gz").read_bytes() == first  # no time in the gzip header


def test_retrain_executes_the_chapters_against_a_new_records_folder(tmp_path, monkeypatch):
    """--retrain: the chapters' kernels see AGREEBOOK_RUNS set to a new folder, so every record
    trains anew there; the caller's environment is restored; a folder with records is refused."""
    monkeypatch.delenv("AGREEBOOK_RUNS", raising=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('scale = "smoke"', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell('import os; open("where.txt", "w").write(os.environ.get("AGREEBOOK_RUNS", ""))')]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "chapter1.ipynb")
    fresh = tmp_path / "fresh"
    book.run_book("smoke", chapters=(1,), build=False, book=tmp_path, retrain=True, runs=str(fresh))
    assert (tmp_path / "where.txt").read_text() == str(fresh) and fresh.is_dir()
    assert "AGREEBOOK_RUNS" not in os.environ
    (fresh / "some-record").mkdir()
    with pytest.raises(book.BookError, match="not empty; give a new or empty folder with --runs"):
        book.run_book("smoke", chapters=(1,), build=False, book=tmp_path, retrain=True, runs=str(fresh))
