from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import tiny_config
from vae_search.config.schema import MAX_SEQUENCE_VOCAB, STUDIES_DIR, ConfigError
from vae_search.data import datasets as data_module
from vae_search.data.datasets import (
    SEQUENCE_SYMBOLS,
    UNKNOWN_SYMBOL,
    DataError,
    Dataset,
    SequenceModel,
    load_array,
    load_dataset,
    load_digits,
    make_sequences,
    make_synthetic,
    resolve_data_path,
)


def test_digits_are_scikit_learns_read_without_importing_it():
    import subprocess
    import sys

    from sklearn import datasets

    np.testing.assert_array_equal(load_digits(), datasets.load_digits().data)
    code = ("import sys; from vae_search.data.datasets import load_digits; load_digits(); "
            "print('sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_digits_split_is_binary_and_fixed(tiny):
    a, b = load_dataset(tiny), load_dataset(tiny)
    assert a.x_train.shape == (1438, 64) and a.x_val.shape == (359, 64)
    assert set(np.unique(a.x_train)) <= {0.0, 1.0} and set(np.unique(a.x_val)) <= {0.0, 1.0}
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert a.x_train.dtype == np.float32


def test_dynamic_binarization_keeps_intensities_for_training():
    ds = load_dataset(tiny_config(data={"binarize": "dynamic"}))
    assert ds.dynamic_binarization
    assert len(np.unique(ds.x_train)) > 2
    assert set(np.unique(ds.x_val)) <= {0.0, 1.0}


def test_gaussian_keeps_real_values():
    ds = load_dataset(tiny_config(model={"likelihood": "gaussian"}))
    assert len(np.unique(ds.x_val)) > 2


def test_synthetic_has_known_factors():
    probs, z = make_synthetic(100, 20, 3, seed=1)
    assert probs.shape == (100, 20) and z.shape == (100, 3)
    assert np.all((probs > 0) & (probs < 1))
    again, _ = make_synthetic(100, 20, 3, seed=1)
    np.testing.assert_array_equal(probs, again)
    ds = load_dataset(tiny_config(data={"dataset": "synthetic", "n_samples": 500,
                                        "n_features": 20, "true_latent_dim": 3}))
    assert ds.n_features == 20 and ds.x_train.shape[0] + ds.x_val.shape[0] == 500


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv"])
def test_user_file_formats(tmp_path, suffix):
    x = np.random.default_rng(0).random((50, 7))
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".npz":
        np.savez(path, x=x, y=np.zeros(50))
    else:
        path.write_text("a,b,c,d,e,f,g\n" + "\n".join(",".join(map(str, r)) for r in x))
    np.testing.assert_allclose(load_array(path), x)
    ds = load_dataset(tiny_config(data={"dataset": "file", "path": str(path)},
                                  train={"batch_size": 8}))
    assert ds.n_features == 7


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros(5), "2-D"),
        (np.array([[1.0, np.nan]]), "non-finite"),
        (np.array([[1.0, np.inf]]), "non-finite"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_bad_arrays(tmp_path, content, message):
    path = tmp_path / "bad.npy"
    np.save(path, content)
    with pytest.raises(DataError, match=message):
        load_array(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (np.zeros((200, 0)), r"no columns \(shape \(200, 0\)\)"),
        (np.zeros((0, 5)), "0 rows are too few for a train/validation split"),
        (np.zeros((1, 5)), "1 rows are too few"),
        (b"", "empty or truncated file"),  # an empty .npy
        (b"\x93NUMPY\x01\x00", "cannot read array"),  # a cut-off header
    ],
)
def test_empty_arrays_are_refused_at_load(tmp_path, content, message):
    path = tmp_path / "empty.npy"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.save(path, content)
    with pytest.raises(DataError, match=message):
        load_array(path)
    with pytest.raises(DataError, match=message):  # token ids too (it used to be a ValueError)
        load_dataset(token_config(dataset="file", path=str(path)))


def test_a_directory_is_not_a_data_file(tmp_path):
    with pytest.raises(DataError, match="is a directory"):
        load_array(tmp_path)
    with pytest.raises(DataError, match="data.path: .* is a directory"):
        load_dataset(tiny_config(data={"dataset": "file", "path": str(tmp_path)}))
    np.savez(tmp_path / "none.npz")
    with pytest.raises(DataError, match="holds no array"):
        load_array(tmp_path / "none.npz")


def test_csv_non_numeric_cell_is_located(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,2\n3,x\n")
    with pytest.raises(DataError, match="line 2, column 2.*'x'"):
        load_array(path)


def test_pickled_object_array_is_refused(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([[object()]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError):
        load_array(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_array(tmp_path / "nope.npy")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(DataError, match="unknown data format"):
        load_array(tmp_path / "x.txt")


def test_bernoulli_range_batch_size_and_rows_checked(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, np.full((40, 3), 2.0))
    with pytest.raises(DataError, match=r"Bernoulli likelihood needs values in \[0, 1\]"):
        load_dataset(tiny_config(data={"dataset": "file", "path": str(path)},
                                 train={"batch_size": 8}))
    with pytest.raises(DataError, match="batch_size = 128 is larger than the training split"):
        load_dataset(tiny_config(data={"dataset": "file", "path": str(path)},
                                 model={"likelihood": "gaussian"}))
    one = tmp_path / "one.npy"
    np.save(one, np.zeros((1, 3)))
    with pytest.raises(DataError, match="too few"):
        load_dataset(tiny_config(data={"dataset": "file", "path": str(one)},
                                 train={"batch_size": 1}))


def test_mnist_without_cache_or_network_is_a_clear_error(tmp_path):
    """Never a download (the machine is offline by design), never TensorFlow: one line saying
    where Keras' copy goes, or how to name your own file."""
    import subprocess
    import sys

    code = (
        "import socket, sys\n"
        "def no_network(*a, **k): raise AssertionError('tried the network')\n"
        "socket.socket.connect = no_network\n"
        "from vae_search.config.schema import parse_config\n"
        "from vae_search.data.datasets import load_dataset, DataError\n"
        "try:\n"
        "    load_dataset(parse_config({'data': {'dataset': 'mnist'}}))\n"
        "except DataError as e:\n"
        "    print('DataError:', e)\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    env = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / ".keras"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "DataError: mnist is not cached" in proc.stdout, proc.stdout + proc.stderr
    assert f"{tmp_path}/.keras/datasets/mnist.npz" in proc.stdout
    assert "data.path" in proc.stdout


def test_mnist_is_read_from_keras_cache(tmp_path, monkeypatch):
    cache = tmp_path / "datasets"
    cache.mkdir()
    rng = np.random.default_rng(0)
    images = {name: rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
              for name, n in (("x_train", 30), ("x_test", 10))}
    np.savez(cache / "mnist.npz", **images, y_train=np.zeros(30), y_test=np.zeros(10))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    ds = load_dataset(tiny_config(data={"dataset": "mnist"}, train={"batch_size": 8},
                                  model={"likelihood": "gaussian"}))
    assert ds.n_features == 784 and len(ds.x_train) + len(ds.x_val) == 40
    assert ds.x_train.min() >= 0.0 and ds.x_train.max() <= 1.0
    (cache / "mnist.npz").write_bytes(b"not an archive")
    with pytest.raises(DataError, match="not Keras' mnist.npz"):
        load_dataset(tiny_config(data={"dataset": "mnist"}))


# ---------------------------------------------------------------------------------------------
# Token datasets: sequences, text, file with the categorical likelihood.

CATEGORICAL = {"likelihood": "categorical", "decoder": "gru", "hidden": [16]}


def token_config(train: dict | None = None, **data: object):
    return tiny_config(model=CATEGORICAL, data=data, train=train or {"batch_size": 4})


def _log_softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=-1, keepdims=True)
    return a - np.log(np.exp(a).sum(axis=-1, keepdims=True))


def test_sequences_are_seeded_shaped_and_in_range():
    tokens, z = make_sequences(300, 7, 12, 3, seed=5)
    assert tokens.shape == (300, 12) and tokens.dtype == np.int32 and z.shape == (300, 3)
    assert tokens.min() >= 0 and tokens.max() == 6  # every symbol occurs in 3,600 draws
    again, z_again = make_sequences(300, 7, 12, 3, seed=5)
    np.testing.assert_array_equal(tokens, again)
    np.testing.assert_array_equal(z, z_again)
    other, _ = make_sequences(300, 7, 12, 3, seed=6)
    assert np.mean(other != tokens) > 0.5

    config = token_config(dataset="sequences", n_samples=500, vocab=9, length=15)
    ds, ds2 = load_dataset(config), load_dataset(config)
    assert ds.x_train.shape == (400, 15) and ds.x_val.shape == (100, 15)
    assert ds.x_train.dtype == np.int32 and ds.x_val.dtype == np.int32
    assert ds.is_tokens and ds.vocab_size == 9 and ds.n_features == 15
    assert ds.vocab == tuple("012345678") and not ds.dynamic_binarization
    np.testing.assert_array_equal(ds.x_val, ds2.x_val)
    # The split is a permutation of make_sequences' rows with the study seed.
    tokens, _ = make_sequences(500, 9, 15, 4, seed=0)
    together = np.concatenate([ds.x_train, ds.x_val])
    assert sorted(map(bytes, together)) == sorted(map(bytes, tokens))


def test_sequence_generation_is_fast():
    make_sequences(100, 20, 20, 4, seed=0)  # warm up NumPy's code paths
    start = time.perf_counter()
    make_sequences(4000, 20, 20, 4, seed=0)
    assert time.perf_counter() - start < 0.5


def test_sequence_sampler_matches_its_model():
    """Tokens drawn for one fixed z follow the softmax the model defines."""
    model = SequenceModel.from_seed(6, 2, seed=3)
    z0 = np.array([0.7, -1.2])
    n = 40_000
    tokens = model.sample(np.tile(z0, (n, 1)), 2, np.random.default_rng(0))
    first = np.exp(_log_softmax(model.first + z0 @ model.first_z))
    np.testing.assert_allclose(np.bincount(tokens[:, 0], minlength=6) / n, first, atol=0.01)
    a = int(np.argmax(first))
    after_a = tokens[tokens[:, 0] == a, 1]
    expected = np.exp(_log_softmax(model.base[a] + z0 @ model.w[:, a, :]))
    np.testing.assert_allclose(np.bincount(after_a, minlength=6) / after_a.size, expected,
                               atol=0.02)


def test_sequences_depend_on_z():
    """Knowing z is worth several nats per sequence: the ground truth for collapse.

    Three numbers per sequence of 20 tokens over 20 symbols with k = 4 factors:
    * the true NLL given z, ``-log p(x|z)``;
    * the NLL under the z-marginalised Markov chain (transition probabilities averaged over
      z ~ N(0, I)), the best a model of the previous token alone can do;
    * a lower bound on the mutual information I(x; z) (the true z against S prior draws;
      Poole et al. 2019, at most log(S + 1)), which bounds what ANY decoder without z loses,
      however much history it reads.
    """
    vocab, length, k, n, s = 20, 20, 4, 400, 1000
    model = SequenceModel.from_seed(vocab, k, seed=0)
    tokens, z = make_sequences(n, vocab, length, k, seed=0)
    rng = np.random.default_rng(1)
    z_prior = rng.standard_normal((s, k))

    def tables(zs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = _log_softmax(model.first + zs @ model.first_z)  # (m, V)
        trans = _log_softmax(model.base + np.einsum("mk,kab->mab", zs, model.w))  # (m, V, V)
        return first, trans

    def log_lik(first: np.ndarray, trans: np.ndarray, pairs: slice | None) -> np.ndarray:
        prev, nxt = tokens[:, :-1], tokens[:, 1:]
        if pairs is None:  # one table per sequence
            rows = np.arange(n)
            return first[rows, tokens[:, 0]] + trans[rows[:, None], prev, nxt].sum(axis=1)
        return first[:, tokens[:, 0]] + trans[:, prev, nxt].sum(axis=2)  # (m, n)

    own = log_lik(*tables(z), None)
    np.testing.assert_allclose(own, model.log_prob(tokens, z), rtol=1e-10)
    conditional_nll = -own.mean()

    first_p, trans_p = (np.exp(t).mean(axis=0) for t in tables(z_prior))
    markov_nll = -(np.log(first_p[tokens[:, 0]])
                   + np.log(trans_p[tokens[:, :-1], tokens[:, 1:]]).sum(axis=1)).mean()

    prior = log_lik(*tables(z_prior), slice(None))  # (s, n)
    both = np.vstack([own[None], prior])
    peak = both.max(axis=0)
    log_mean = peak + np.log(np.exp(both - peak).mean(axis=0))
    mi_lower_bound = float((own - log_mean).mean())

    print(f"NLL | z {conditional_nll:.2f}, marginal Markov {markov_nll:.2f}, "
          f"I(x;z) >= {mi_lower_bound:.2f} nats per sequence")
    assert markov_nll - conditional_nll > 10.0  # measured 16.2 (31.6 vs 47.7)
    assert mi_lower_bound > 3.5  # measured 4.6 of the bound's ceiling log(1001) = 6.9
    # Sanity: the bound is below its ceiling, and NLLs are below uniform guessing (59.9 nats).
    assert mi_lower_bound < np.log(s + 1) and markov_nll < length * np.log(vocab)


def test_sequences_config_checks():
    with pytest.raises(ConfigError, match=r"^data\.dataset: 'sequences' holds tokens"):
        tiny_config(data={"dataset": "sequences"})
    with pytest.raises(ConfigError, match=r"^data\.dataset: 'text' holds tokens"):
        tiny_config(data={"dataset": "text", "path": "x.txt"}, model={"likelihood": "gaussian"})
    with pytest.raises(ConfigError, match=r"^model\.likelihood: 'categorical' needs token data"):
        tiny_config(model=CATEGORICAL)
    with pytest.raises(ConfigError, match=r"^data\.vocab: must be >= 2"):
        token_config(dataset="sequences", vocab=1)
    with pytest.raises(ConfigError, match=r"^data\.vocab: sequences have at most 62"):
        token_config(dataset="sequences", vocab=MAX_SEQUENCE_VOCAB + 1)
    with pytest.raises(ConfigError, match=r"^data\.length: must be >= 2"):
        token_config(dataset="sequences", length=1)
    with pytest.raises(ConfigError, match=r"^data\.path: required when data\.dataset = 'text'"):
        token_config(dataset="text")
    # The sequence symbol bound is about the alphabet; a file's ids may go higher.
    assert token_config(dataset="file", path="ids.npy", vocab=1000).data.vocab == 1000
    assert len(SEQUENCE_SYMBOLS) == MAX_SEQUENCE_VOCAB == len(set(SEQUENCE_SYMBOLS))
    ds = load_dataset(token_config(dataset="sequences", vocab=MAX_SEQUENCE_VOCAB))
    assert ds.decode(np.arange(62)) == SEQUENCE_SYMBOLS


@pytest.mark.parametrize("seed", [0, 7])
def test_flat_and_token_data_of_one_size_split_the_same_rows(tmp_path, seed):
    n = 90
    index = np.repeat(np.arange(n)[:, None], 3, axis=1)  # every row holds its own number
    np.save(tmp_path / "flat.npy", index.astype(np.float64))
    np.save(tmp_path / "ids.npy", index)
    flat = load_dataset(tiny_config(
        seed=seed, data={"dataset": "file", "path": str(tmp_path / "flat.npy")},
        model={"likelihood": "gaussian"}, train={"batch_size": 8}))
    tokens = load_dataset(tiny_config(
        seed=seed, data={"dataset": "file", "path": str(tmp_path / "ids.npy"), "vocab": n},
        model=CATEGORICAL, train={"batch_size": 8}))
    assert not flat.is_tokens and tokens.is_tokens
    for a, b in ((flat.x_train, tokens.x_train), (flat.x_val, tokens.x_val)):
        np.testing.assert_array_equal(a[:, 0].astype(np.int64), b[:, 0])
    assert len(flat.x_val) == 18 and sorted([*flat.x_train[:, 0], *flat.x_val[:, 0]]) == list(
        range(n))


def test_sequences_too_few_for_the_batch_size():
    config = token_config({"batch_size": 64}, dataset="sequences", n_samples=50)
    with pytest.raises(DataError, match=r"^sequences: 50 sequences are too few .*"
                                        r"train\.batch_size = 64 .* needs at least 80$"):
        load_dataset(config)
    config = token_config({"batch_size": 64}, dataset="sequences", max_examples=79)
    with pytest.raises(DataError, match="79 sequences are too few"):
        load_dataset(config)
    assert load_dataset(config.with_overrides(**{"data.max_examples": 80})).x_train.shape[0] == 64


def test_decode():
    chars = Dataset("t", np.zeros((1, 3), np.int32), np.zeros((1, 3), np.int32),
                    vocab=("a", "b", " "))
    assert chars.decode([0, 2, 1, 1]) == "a bb"
    assert chars.decode(np.array([1, 0], dtype=np.int32)) == "ba"
    words = Dataset("f", chars.x_train, chars.x_val, vocab=tuple(str(i) for i in range(12)))
    assert words.decode([11, 0, 3]) == "11 0 3"
    with pytest.raises(ValueError, match="outside"):
        chars.decode([3])
    flat = Dataset("digits", np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32))
    assert not flat.is_tokens and flat.vocab_size == 0
    with pytest.raises(ValueError, match="no vocabulary"):
        flat.decode([0])


def _write_windows(path, windows: list[str]) -> None:
    path.write_text("".join(windows), encoding="utf-8")


def test_text_windows_vocab_and_unknown_id(tmp_path):
    # 60 windows of 5 characters; each holds one character that occurs nowhere else, so every
    # validation window has exactly one character unseen in training.
    rare = [chr(0x3B1 + i) for i in range(60)]  # Greek letters and beyond
    windows = [f"ab{r}cd" for r in rare]
    path = tmp_path / "corpus.txt"
    _write_windows(path, windows)
    ds = load_dataset(token_config(dataset="text", path=str(path), length=5))
    assert ds.name == "text" and ds.x_train.shape == (48, 5) and ds.x_val.shape == (12, 5)
    assert ds.x_train.dtype == np.int32 and ds.vocab[0] == UNKNOWN_SYMBOL
    train_text = [ds.decode(row) for row in ds.x_train]
    seen = sorted(set("".join(train_text)))
    assert ds.vocab == (UNKNOWN_SYMBOL, *seen)  # sorted characters of the training windows
    assert ds.x_train.min() >= 1  # no unknowns in training
    assert ds.x_train.max() < ds.vocab_size and ds.x_val.max() < ds.vocab_size
    assert np.all((ds.x_val == 0).sum(axis=1) == 1)  # the rare character of each window
    assert {ds.decode(row) for row in ds.x_val} == {f"ab{UNKNOWN_SYMBOL}cd"}
    assert len(set(train_text)) == 48 and set(train_text) <= set(windows)  # whole windows


def test_text_normalises_whitespace_and_drops_the_tail(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes("\ufeffab\n\n cd\t\tef  gh\r\nij kl".encode())
    ds = load_dataset(token_config(dataset="text", path=str(path), length=3, val_fraction=0.25))
    # "ab cd ef gh ij kl" -> 17 characters -> 5 windows of 3; the last 2 characters are dropped.
    windows = sorted(ds.decode(r) for r in np.concatenate([ds.x_train, ds.x_val]))
    known = set(ds.vocab)
    expected = ["ab ", "cd ", "ef ", "gh ", "ij "]
    assert windows == sorted("".join(c if c in known else UNKNOWN_SYMBOL for c in w)
                             for w in expected)
    assert "\n" not in ds.vocab and "\t" not in ds.vocab and "\ufeff" not in ds.vocab


def test_text_is_deterministic_and_seeded(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    config = token_config(dataset="text", path=str(path), length=10)
    a, b = load_dataset(config), load_dataset(config)
    np.testing.assert_array_equal(a.x_val, b.x_val)
    assert a.vocab == b.vocab
    c = load_dataset(config.with_overrides(seed=1))
    assert not np.array_equal(a.x_val, c.x_val)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b" \n\t \n", "empty file"),
        (b"abc\xffdef", r"not UTF-8 text \(byte 0xff at byte offset 3\)"),
        (b"caf\xc3\xa9 \xe9t\xc3\xa9", r"byte offset 6\)"),
        (b"abcdefghij" * 3, (r"3 windows of data\.length = 10 characters \(30 characters\) are "
                             r"too few .*train\.batch_size = 4 .* needs at least 5")),
    ],
)
def test_bad_text_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(token_config(dataset="text", path=str(path), length=10))
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_missing_text_file_names_the_key_and_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=r"^data\.path: data file not found: nope\.txt "
                                        r"\(looked in .* and .*studies\)$"):
        load_dataset(token_config(dataset="text", path="nope.txt"))
    with pytest.raises(DataError, match=r"^data\.path: data file not found: /no/such\.npy$"):
        load_dataset(token_config(dataset="file", path="/no/such.npy"))


def test_resolve_data_path(tmp_path, monkeypatch):
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "beside.txt").write_text("x")
    (studies / "both.txt").write_text("studies")
    work = tmp_path / "work"
    work.mkdir()
    (work / "both.txt").write_text("cwd")
    monkeypatch.setattr(data_module, "STUDIES_DIR", studies)
    monkeypatch.chdir(work)
    assert resolve_data_path("both.txt") == Path("both.txt")  # the current directory wins
    assert resolve_data_path("beside.txt") == studies / "beside.txt"
    assert resolve_data_path("missing.txt") == Path("missing.txt")  # as given, for the error
    assert resolve_data_path(work / "nope.txt") == work / "nope.txt"  # absolute: untouched


def test_shipped_corpus_resolves_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_path("text_corpus.txt") == STUDIES_DIR / "text_corpus.txt"
    ds = load_dataset(token_config({"batch_size": 64}, dataset="text", path="text_corpus.txt",
                                   length=40))
    assert 30 <= ds.vocab_size <= 90 and ds.x_train.shape[0] > 1000
    assert ds.vocab[0] == UNKNOWN_SYMBOL and " " in ds.vocab and "e" in ds.vocab
    assert np.mean(ds.x_val == 0) < 0.001  # a 40-80 KB corpus: almost no unseen characters


def test_shipped_corpus_is_a_plain_text_of_the_right_size():
    raw = (STUDIES_DIR / "text_corpus.txt").read_bytes()
    assert 40_000 <= len(raw) <= 80_000
    text = raw.decode("ascii")  # plain ASCII: a small character model needs no exotic symbols
    words = text.split()
    assert len(set(words)) > 1500  # prose, not a repeated paragraph
    assert max(text.count(line) for line in text.splitlines() if len(line) > 60) == 1


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_file_of_token_ids(tmp_path, suffix):
    ids = np.random.default_rng(0).integers(0, 12, size=(40, 6))
    path = tmp_path / f"ids{suffix}"
    if suffix == ".npy":
        np.save(path, ids)
    else:
        path.write_text("\n".join(",".join(map(str, r)) for r in ids))
    ds = load_dataset(token_config(dataset="file", path=str(path), vocab=12))
    assert ds.is_tokens and ds.vocab == tuple(str(i) for i in range(12))
    assert ds.x_train.dtype == np.int32 and ds.x_train.shape == (32, 6)
    together = np.concatenate([ds.x_train, ds.x_val])
    assert sorted(map(tuple, together.tolist())) == sorted(map(tuple, ids.tolist()))
    # The same file is flat data for the Gaussian likelihood, as before.
    flat = load_dataset(tiny_config(data={"dataset": "file", "path": str(path)},
                                    model={"likelihood": "gaussian"}, train={"batch_size": 4}))
    assert not flat.is_tokens and flat.x_train.dtype == np.float32


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.array([[0, 1.5], [2, 3]] * 10), r"integer token ids, got 1\.5 at row 0, column 1"),
        (np.array([[0, 1], [-2, 3]] * 10), r"must be >= 0, got -2 at row 1, column 0"),
        (np.array([[0, 1], [2, 20]] * 10), r"largest token id is 20 but data\.vocab = 20"),
    ],
)
def test_bad_token_ids_name_the_file(tmp_path, array, message):
    path = tmp_path / "ids.npy"
    np.save(path, array)
    with pytest.raises(DataError, match=message) as info:
        load_dataset(token_config(dataset="file", path=str(path)))
    assert str(info.value).startswith(str(path))
