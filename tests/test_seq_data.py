"""The sequence datasets: MNIST-1D as 40 steps, the pydoc character corpus, the digit captions.

All three are made offline (generated, or from what every CPython and scikit-learn ship);
the ``no_network`` fixture makes any socket use an error while they load.
"""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest
from sklearn.datasets import load_digits as sk_load_digits

import jaxlayers as jl
from jaxlayers import data
from jaxlayers._seqdata import DIGIT_WORDS

# ---------------------------------------------------------------------------
# No network
# ---------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection or resolve a name fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a dataset loader used the network: {args!r:.120}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.mark.parametrize("name", ["pydoc-chars:50", "digit-captions"])  # mnist1d-seq: below
def test_loads_offline_and_deterministically(no_network, name):
    a, b = data.load(name), data.load(name)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, f"X_{split}"), getattr(b, f"X_{split}"))
        np.testing.assert_array_equal(getattr(a, f"y_{split}"), getattr(b, f"y_{split}"))
    assert a.digest == b.digest and a.vocab == b.vocab
    assert data.load(a.name).name == a.name  # the recorded name loads the same data again


# ---------------------------------------------------------------------------
# MNIST-1D as a sequence
# ---------------------------------------------------------------------------


def test_mnist1d_seq_is_the_flat_set_as_40_steps(no_network):
    flat, seq = data.load("mnist1d"), data.load("mnist1d-seq")  # the generator is deterministic (test_data)
    assert seq.name == "mnist1d-seq" and seq.image_shape is None and seq.vocab is None
    for split in ("train", "val", "test"):
        X, Xs = getattr(flat, f"X_{split}"), getattr(seq, f"X_{split}")
        assert Xs.shape == (X.shape[0], 40, 1) and Xs.dtype == np.float32
        np.testing.assert_array_equal(Xs[:, :, 0], X)
        np.testing.assert_array_equal(getattr(seq, f"y_{split}"), getattr(flat, f"y_{split}"))
        assert getattr(seq, f"y_{split}").dtype == np.int32
    assert (len(seq.y_train), len(seq.y_val), len(seq.y_test)) == (3600, 400, 1000)
    assert seq.mean.shape == seq.std.shape == (40, 1)
    # the stored statistics turn raw (N, 40, 1) signals into the training inputs
    raw = flat.X_test * flat.std.astype(np.float32) + flat.mean.astype(np.float32)
    again = data.apply_standardization(raw[:, :, None], seq.mean, seq.std)
    np.testing.assert_allclose(again, seq.X_test, atol=1e-5)
    assert data.preprocessing_record(seq)["input_shape"] == [40, 1]


# ---------------------------------------------------------------------------
# The pydoc character corpus
# ---------------------------------------------------------------------------


def test_pydoc_text_is_the_sorted_topics():
    from pydoc_data.topics import topics

    text = data.pydoc_text()
    assert text == "\n".join(topics[k] for k in sorted(topics))
    assert len(text) > 100_000 and text == data.pydoc_text()


def test_pydoc_chars_shapes_targets_and_vocab():
    ds = data.load("pydoc-chars:64")
    T, V = 64, len(ds.vocab)
    assert ds.name == "pydoc-chars:64" and ds.mean is None and ds.std is None
    for split in ("train", "val", "test"):
        X, y = getattr(ds, f"X_{split}"), getattr(ds, f"y_{split}")
        assert X.dtype == y.dtype == np.int32 and X.shape == y.shape and X.shape[1] == T and len(X) > 0
        assert X.min() >= 0 and X.max() < V and y.min() >= 0 and y.max() < V
        np.testing.assert_array_equal(y[:, :-1], X[:, 1:])  # next-character targets
        np.testing.assert_array_equal(y[:-1, -1], X[1:, 0])  # disjoint, consecutive windows
    voc = ds.vocab
    assert voc.separator == "" and voc.tokens[voc.unknown] == data.UNKNOWN_CHAR and voc.unknown == V - 1
    assert list(voc.tokens[:-1]) == sorted(voc.tokens[:-1])  # sorted characters, then the unknown symbol
    assert ds.class_names == voc.tokens and ds.num_classes == V
    assert ds.summary() == f"pydoc-chars:64: train {len(ds.y_train)}, val {len(ds.y_val)}, test {len(ds.y_test)}; " + (
        f"inputs (64,), targets (64,), {V} tokens"
    )


def test_pydoc_chars_windows_are_the_text_and_splits_do_not_overlap():
    text = data.pydoc_text()
    c = data.char_corpus(80)
    voc = c["vocab"]
    _, a, b, L = c["bounds"]
    assert L == len(text) and abs(a / L - 0.9) < 1e-4 and abs(b / L - 0.95) < 1e-4
    for split, lo, hi in (("train", 0, a), ("val", a, b), ("test", b, L)):
        starts, x, y = c[f"starts_{split}"], c[f"x_{split}"], c[f"y_{split}"]
        # every input and target character lies inside its own part of the text
        assert starts.min() >= lo and starts.max() + 80 + 1 <= hi
        for n in (0, len(x) // 2, len(x) - 1):
            s = int(starts[n])
            assert voc.decode(x[n]) == text[s : s + 80] and voc.decode(y[n]) == text[s + 1 : s + 81]
    assert c["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    # every training character has its own id (min_count 1): encoding the training text loses nothing
    assert voc.decode(voc.encode(text[:a])) == text[:a]


def test_pydoc_chars_digest_and_provenance_record_the_text():
    ds = data.load("pydoc-chars")
    assert ds.name == "pydoc-chars:100" and len(ds.digest) == 64
    assert ds.provenance["text_sha256"] == hashlib.sha256(data.pydoc_text().encode()).hexdigest()
    assert ds.provenance["python"].count(".") == 2 and ds.provenance["seq_len"] == 100
    # the digest changes with the text and with how it is cut
    assert data.load_pydoc_chars(100, min_count=50).digest != ds.digest
    assert data.load("pydoc-chars", val_fraction=0.1).digest != ds.digest
    assert len(data.load("pydoc-chars", val_fraction=0.1).y_val) > len(ds.y_val)


def test_char_corpus_on_other_text_maps_unseen_characters_to_unknown():
    text = "abcabcabc" * 20 + "xyz" * 4  # x, y, z only in validation/test
    c = data.char_corpus(5, val_fraction=0.05, test_fraction=0.05, text=text)
    voc = c["vocab"]
    assert voc.tokens == ("a", "b", "c", data.UNKNOWN_CHAR)
    assert set(np.unique(c["x_test"])) <= {voc.unknown} | set(range(3)) and voc.unknown in c["x_test"]
    assert voc.decode(voc.encode("cab?")) == "cab" + data.UNKNOWN_CHAR
    rare = data.char_corpus(2, text="a" * 100 + "b", val_fraction=0.05, test_fraction=0.05, min_count=2)
    assert rare["vocab"].tokens == ("a", data.UNKNOWN_CHAR)
    with pytest.raises(ValueError, match="too few for one window"):
        data.char_corpus(50, text="abc" * 10)
    with pytest.raises(ValueError, match="seq_len must be an integer >= 1"):
        data.char_corpus(0, text=text)
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction must be < 1"):
        data.char_corpus(5, text=text, val_fraction=0.5, test_fraction=0.5)


def test_load_refuses_a_bad_pydoc_window():
    with pytest.raises(ValueError, match="pydoc-chars:T"):
        data.load("pydoc-chars:zero")
    with pytest.raises(ValueError, match="pydoc-chars:T"):
        data.load("pydoc-chars:0")


# ---------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------


def test_vocabulary_round_trips_and_records():
    voc = data.load("pydoc-chars").vocab
    s = 'def f(x):\n    """Docstring."""\n    return {x: [1, 2]}  # ok'
    assert voc.decode(voc.encode(s)) == s
    assert voc.encode(s).dtype == np.int32 and voc.encode(s).shape == (len(s),)
    assert data.Vocabulary.from_record(voc.to_record()) == voc
    words = data.Vocabulary(("<NULL>", "one", "two"), separator=" ")
    assert words.decode(words.encode("two  one\ttwo")) == "two one two"
    with pytest.raises(ValueError, match="'three' at position 1 is not in the vocabulary"):
        words.encode("one three")
    with pytest.raises(ValueError, match="id 3 is outside \\[0, 3\\)"):
        words.decode([0, 3])
    with pytest.raises(ValueError, match="ids must be 1-D"):
        words.decode([[0]])
    with pytest.raises(TypeError, match="ids must be integers"):
        words.decode(np.zeros(2))
    with pytest.raises(ValueError, match="distinct"):
        data.Vocabulary(("a", "a"))
    with pytest.raises(ValueError, match="character vocabulary"):
        data.Vocabulary(("ab",))
    with pytest.raises(ValueError, match="unknown must be an id"):
        data.Vocabulary(("a",), unknown=1)


def test_preprocessing_record_stores_the_vocabulary():
    ds = data.load("pydoc-chars:32")
    rec = data.preprocessing_record(ds)
    assert rec["mean"] is None and rec["input_shape"] == [32] and rec["class_names"] == list(ds.vocab.tokens)
    assert data.Vocabulary.from_record(rec["vocab"]) == ds.vocab
    assert "vocab" not in data.preprocessing_record(data.load("digits"))


# ---------------------------------------------------------------------------
# Digit captions
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def captions():
    return data.load_digit_captions(num_train=600, num_val=100, num_test=200, seed=3)


def test_captions_layout_is_the_numpy_originals(captions):
    c = captions
    assert c["idx_to_word"][:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    assert c["idx_to_word"][4:] == list(DIGIT_WORDS)
    assert all(c["word_to_idx"][w] == i for i, w in enumerate(c["idx_to_word"]))
    for split, n in (("train", 600), ("val", 100), ("test", 200)):
        assert c[f"{split}_captions"].shape == (n, 6) and c[f"{split}_captions"].dtype == np.int32
        np.testing.assert_array_equal(c[f"{split}_image_idxs"], np.arange(n))
        assert c[f"{split}_features"].shape == (n, 256) and c[f"{split}_features"].dtype == np.float32
        assert c[f"{split}_images"].shape == (n, 8, 32) and len(c[f"{split}_urls"]) == n
    # features are the flattened pixels standardised with training statistics
    again = data.apply_standardization(c["test_images"].reshape(200, -1), c["mean"], c["std"])
    np.testing.assert_array_equal(again, c["test_features"])
    assert abs(float(c["train_features"].mean())) < 0.05


def test_captions_name_the_digits_in_the_images(captions):
    c = captions
    digits_images = sk_load_digits().images
    words = c["idx_to_word"]
    for split in ("train", "val", "test"):
        caps, digits, sources, images = (c[f"{split}_{k}"] for k in ("captions", "digits", "sources", "images"))
        k = (digits >= 0).sum(axis=1)
        assert k.min() >= 2 and k.max() <= 4 and set(np.unique(k)) == {2, 3, 4}
        for n in range(len(caps)):
            shown = [str(DIGIT_WORDS[d]) for d in digits[n, : k[n]]]
            assert data.decode_captions(caps[n], words) == " ".join(["<START>", *shown, "<END>"])
            assert all(w == "<NULL>" for w in (words[i] for i in caps[n, k[n] + 2 :]))
            for j in range(4):  # each 8-pixel slot holds that source digit, or nothing
                slot = images[n, :, 8 * j : 8 * j + 8]
                if j < k[n]:
                    np.testing.assert_array_equal(slot, digits_images[sources[n, j]])
                else:
                    assert not slot.any()
        np.testing.assert_array_equal(digits[digits >= 0], sk_load_digits().target[sources[sources >= 0]])
    assert data.decode_captions(c["val_captions"][:2], words) == [
        data.decode_captions(c["val_captions"][0], words),
        data.decode_captions(c["val_captions"][1], words),
    ]


def test_captions_images_use_only_their_splits_digits(captions):
    c = captions
    sp = c["digit_splits"]
    assert (len(sp["train"]), len(sp["val"]), len(sp["test"])) == (1293, 144, 360)
    assert not set(sp["train"]) & set(sp["test"]) and not set(sp["val"]) & set(sp["test"])
    assert not set(sp["train"]) & set(sp["val"])
    for split in ("train", "val", "test"):
        used = set(c[f"{split}_sources"][c[f"{split}_sources"] >= 0].tolist())
        assert used <= set(sp[split].tolist()), split
    # the same digit split as data.load("digits") with the same seed (test digits are never trained on)
    y = sk_load_digits().target
    rest, y_rest, test, _ = data._stratified_split(np.arange(len(y))[:, None], y, 0.2, 3)
    _, _, val, _ = data._stratified_split(rest, y_rest, 0.1, 3)
    np.testing.assert_array_equal(np.sort(test[:, 0]), sp["test"])
    np.testing.assert_array_equal(np.sort(val[:, 0]), sp["val"])


def test_captions_are_deterministic_and_seeded():
    a = data.load_digit_captions(num_train=20, num_val=5, num_test=5, seed=1)
    b = data.load_digit_captions(num_train=20, num_val=5, num_test=5, seed=1)
    other = data.load_digit_captions(num_train=20, num_val=5, num_test=5, seed=2)
    np.testing.assert_array_equal(a["train_features"], b["train_features"])
    np.testing.assert_array_equal(a["test_captions"], b["test_captions"])
    assert not np.array_equal(a["train_captions"], other["train_captions"])
    wide = data.load_digit_captions(num_train=10, num_val=2, num_test=2, min_digits=1, max_digits=5, width=40)
    assert wide["train_captions"].shape == (10, 7) and wide["train_features"].shape == (10, 320)
    with pytest.raises(ValueError, match="do not fit a width of 32"):
        data.load_digit_captions(max_digits=5)
    with pytest.raises(ValueError, match="num_train must be an integer >= 1"):
        data.load_digit_captions(num_train=0)


def test_digit_captions_dataset_for_the_loop():
    ds = data.load("digit-captions")
    assert ds.name == "digit-captions" and ds.image_shape == (1, 8, 32)
    assert ds.X_train.shape == (10000, 256) and ds.y_train.shape == (10000, 6) and ds.y_test.dtype == np.int32
    assert ds.vocab.separator == " " and ds.vocab.tokens[ds.vocab.unknown] == "<UNK>"
    assert ds.class_names == ds.vocab.tokens and ds.num_classes == 14
    assert data.decode_captions(ds.y_test[0], ds.vocab).startswith("<START> ")
    assert ds.provenance["digits"] == {"train": 1293, "val": 144, "test": 360}
    assert jl.data.load_digit_captions(as_dataset=True).digest is None


def test_a_run_stores_the_vocabulary_in_its_checkpoint(tmp_path):
    # the loop trains on (N,) labels today; a token set's vocabulary rides along in the preprocessing record
    import dataclasses

    digits = data.load("digits")
    vocab = data.Vocabulary(tuple("0123456789"))
    ds = dataclasses.replace(digits, vocab=vocab, class_names=vocab.tokens)
    net = jl.FullyConnectedNet(hidden_dims=(16,), input_dim=64, num_classes=10)
    jl.train.fit(net, ds, jl.train.TrainConfig(epochs=1, batch_size=256), run_dir=tmp_path / "run")
    meta = jl.train.read_checkpoint_metadata(tmp_path / "run" / "checkpoint.safetensors")
    assert data.Vocabulary.from_record(meta["preprocessing"]["vocab"]) == vocab
    run = jl.load_run(tmp_path / "run")
    assert run.class_names == vocab.tokens
