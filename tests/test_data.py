from __future__ import annotations

import numpy as np
import pytest

from vae_search.data import DataError, load_array, load_dataset, make_synthetic
from tests.conftest import tiny_config


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
    import subprocess
    import sys

    code = (
        "from vae_search.config import parse_config\n"
        "from vae_search.data import load_dataset, DataError\n"
        "try:\n"
        "    load_dataset(parse_config({'data': {'dataset': 'mnist'}}))\n"
        "except DataError as e:\n"
        "    print('DataError:', e)\n"
    )
    env = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / ".keras"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert "DataError: mnist is not cached" in proc.stdout, proc.stdout + proc.stderr
