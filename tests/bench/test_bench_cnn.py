"""The CNN benchmark's peers train symgrad's model: same first loss, same step."""

import numpy as np
import pytest

from benchmarks import bench_cnn as bench


@pytest.fixture(scope="module")
def reference():
    """Symgrad's weights, and its loss before and after one SGD step on one batch."""
    rng = np.random.default_rng(3)
    x = rng.random((bench.BATCH, 28, 28, 1), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, bench.BATCH)]
    model = bench.symgrad_model("numpy")
    weights = [w.copy() for w in model.get_weights()]
    before = model.evaluate(x, y, batch_size=bench.BATCH, verbose=0)
    model.train_on_batch(x, y)
    after = model.evaluate(x, y, batch_size=bench.BATCH, verbose=0)
    return weights, x, y, float(before), float(after)


@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_a_peer_computes_the_same_loss_and_the_same_step(reference, peer):
    pytest.importorskip(peer)
    weights, x, y, before, after = reference
    step = (bench.torch_step if peer == "torch" else bench.jax_step)(weights, x, y)
    first, second = step(), step()
    assert first == pytest.approx(before, rel=1e-5)
    assert second == pytest.approx(after, rel=1e-4)
    assert second < first
