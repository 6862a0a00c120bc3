"""Top-N images per channel: equal to a brute-force stable argsort for every channel, at any block size."""

import numpy as np
import pytest

from peekflow.cli import main
from peekflow.features.store import StoreWriter
from peekflow.neurons.topn import read_topn, top_n

LAYER = "layer3"


def write_store(path, maxact: np.ndarray, layer: str = LAYER):
    rows, channels = maxact.shape
    writer = StoreWriter(path, rows, 2, {layer: channels}, {"model": "m", "dataset": "d"})
    writer.h5[f"maxact/{layer}"][:] = maxact
    writer.h5["paths"][:] = [f"img/{i:04d}.png" for i in range(rows)]
    writer.finish()
    return path


def brute_force(maxact: np.ndarray, n: int):
    order = np.argsort(-maxact, axis=0, kind="stable")[:n].T  # ties: lower row first
    return order, np.take_along_axis(maxact.T, order, 1)


@pytest.fixture
def tied_store(tmp_path):
    # few distinct values: ties everywhere, also across block boundaries
    rng = np.random.default_rng(0)
    maxact = rng.integers(0, 6, (203, 7)).astype(np.float32)
    maxact[:, 3] = 1.0  # one channel entirely tied
    maxact[150:, 4] = 9.0  # a channel whose best rows all come late
    return write_store(tmp_path / "tied.h5", maxact), maxact


@pytest.mark.parametrize("n", [1, 5, 50, 203])
@pytest.mark.parametrize("block_rows", [1, 7, 50, 64, 203, 1000])
def test_equals_brute_force_for_every_channel(tied_store, n, block_rows):
    path, maxact = tied_store
    result = top_n(path, LAYER, n, block_rows=block_rows)
    indices, values = brute_force(maxact, n)
    np.testing.assert_array_equal(result.indices, indices)
    np.testing.assert_array_equal(result.activations, values)
    np.testing.assert_array_equal(result.paths, np.vectorize(lambda i: f"img/{i:04d}.png")(indices))


def test_continuous_values_and_n_larger_than_store(tmp_path):
    maxact = np.random.default_rng(1).normal(size=(90, 33)).astype(np.float32)
    path = write_store(tmp_path / "s.h5", maxact)
    result = top_n(path, LAYER, 500, block_rows=16)
    assert result.indices.shape == (33, 90) and result.attrs["n"] == 90
    np.testing.assert_array_equal(result.indices, brute_force(maxact, 90)[0])


def test_cli_writes_file_with_source_store(tmp_path, tied_store):
    path, maxact = tied_store
    out = tmp_path / "neurons" / "topn.h5"
    assert main(["topn", "--store", str(path), "--layer", LAYER, "--n", "4", "--block-rows", "10",
                 "--out", str(out)]) == 0
    result = read_topn(out)
    np.testing.assert_array_equal(result.indices, brute_force(maxact, 4)[0])
    assert result.attrs["source_store"] == str(path) and result.attrs["layer"] == LAYER
    assert result.attrs["dataset"] == "d" and result.attrs["rows"] == 203


def test_unknown_layer_is_named(tmp_path, tied_store, capsys):
    path, _ = tied_store
    assert main(["topn", "--store", str(path), "--layer", "layer9", "--n", "3", "--out", str(tmp_path / "t.h5")]) == 1
    err = capsys.readouterr().err
    assert "no layer 'layer9'" in err and "['layer3']" in err
    assert not (tmp_path / "t.h5").exists()


def test_nan_rows_are_named(tmp_path):
    maxact = np.ones((20, 3), np.float32)
    maxact[13, 1] = np.nan
    path = write_store(tmp_path / "nan.h5", maxact)
    with pytest.raises(ValueError, match="NaN.*row 13"):
        top_n(path, LAYER, 2, block_rows=8)
