"""The text experiment (§3, Fig 4a): Stack Overflow titles, the BiLSTM with attention."""
import numpy as np
import pytest
import torch

from agreebook import book
from agreebook.config import ConfigError, TrainConfig
from agreebook.data import DatasetError, load_dataset, out_of_sample, tokenize
from agreebook.models import build_model
from agreebook.prepare import load_vectors
from agreebook.train import Runtime, train_collection


def test_tokenize_keeps_language_names():
    assert tokenize("How do I use C# and C++ in Qt-5.1?") == ["how", "do", "i", "use", "c#", "and", "c++",
                                                            "in", "qt", "5", "1"]


def test_stackoverflow_titles_load_offline(offline_root):
    ds = load_dataset("stackoverflow_titles", root=offline_root)
    assert ds.is_text and ds.x_train.dtype == np.int32
    assert ds.x_train.shape == (16000, 32) and ds.x_test.shape == (4000, 32)
    assert ds.n_classes == 20 and np.bincount(ds.y_test).tolist() == [200] * 20  # stratified
    assert ds.x_train.max() == len(ds.vocabulary) + 1 and ds.vocabulary[:3] == ["to", "in", "a"]
    again = load_dataset("stackoverflow_titles", root=offline_root)
    assert again.fingerprint() == ds.fingerprint()
    noise = out_of_sample("noise", ds.x_train, 50, seed=0)
    assert noise.shape == (50, 32) and noise.max() <= ds.x_train.max() and (noise[:, 0] >= 2).all()


def test_missing_text_file_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetError, match="put stack-overflow-data.csv \\(columns post, tags\\) at"):
        load_dataset("stackoverflow", root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_text_and_image_architectures_do_not_mix(offline_root):
    with pytest.raises(ConfigError, match="small_st_vgg takes images, and stackoverflow_titles is text; "
                                          "use one of: bilstm_attention"):
        TrainConfig(dataset="stackoverflow_titles", arch="small_st_vgg").validate()
    with pytest.raises(ConfigError, match="bilstm_attention takes text"):
        TrainConfig(dataset="digits", arch="bilstm_attention").validate()
    with pytest.raises(book.BookError, match="chapter 1 shows images; text datasets such as "
                                             "stackoverflow_titles run in chapters 2, 3, 5, 7"):
        book.setup(1, dataset="stackoverflow_titles")
    assert book.setup(3, dataset="stackoverflow_titles", scale="smoke",
                      data_root=str(offline_root)).arch == "bilstm_attention"


def test_embeddings_setting_keeps_old_record_identities():
    d = TrainConfig().to_dict()
    assert "embeddings" not in d and TrainConfig.from_dict(d) == TrainConfig()
    assert TrainConfig(embeddings="/x.txt").to_dict()["embeddings"] == "/x.txt"


def test_bilstm_attention_handles_padding_only_rows():
    model = build_model("bilstm_attention", (50, 6, 8), 3).eval()
    x = torch.tensor([[5, 6, 7, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    # padding does not change a row's output
    longer = torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(model(longer), out[:1])


def test_glove_vectors_initialise_the_embedding(tmp_path, offline_root):
    ds = load_dataset("stackoverflow_titles", root=offline_root)
    glove = tmp_path / "glove.txt"
    glove.write_text("400000 3\nto 1 2 3\nnotaword 9 9 9\nin 4 5 6\n")  # a word2vec header is skipped
    matrix, found = load_vectors(glove, ds.vocabulary)
    assert found == 2 and matrix.shape == (len(ds.vocabulary) + 2, 3)
    np.testing.assert_array_equal(matrix[2], [1, 2, 3])  # "to" is token 2
    np.testing.assert_array_equal(matrix[3], [4, 5, 6])
    assert not matrix[4:].any() and not matrix[:2].any()
    cfg = TrainConfig(dataset="stackoverflow_titles", arch="bilstm_attention", n_models=2, epochs=(1,),
                      train_size=200, test_size=100, embeddings=str(glove))
    rec = train_collection(cfg, tmp_path / "run", Runtime(progress=False, data_root=str(offline_root)))
    assert rec.meta["config"]["embeddings"] == str(glove) and rec.predictions["test"].shape == (2, 1, 100)
    assert rec.meta["n_parameters"] == sum(p.numel() for p in build_model(
        "bilstm_attention", (len(ds.vocabulary) + 2, ds.x_train.shape[1], 3), ds.n_classes).parameters())
    (tmp_path / "empty.txt").write_text("zzz 1 2\n")
    with pytest.raises(ConfigError, match="holds no vector for any"):
        load_vectors(tmp_path / "empty.txt", ds.vocabulary)


def test_for_dataset_keeps_a_named_architecture_only_where_it_fits(offline_root):
    ch = book.setup(5, dataset="stackoverflow_titles", arch="bilstm_attention", scale="smoke",
                    data_root=str(offline_root))
    assert ch.for_dataset("gabor").arch == "small_st_vgg"
    assert book.setup(5, arch="fc", scale="smoke").for_dataset("gabor").arch == "fc"
