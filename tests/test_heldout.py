"""Held-out kernel stars: the split is a partition, and the residual metric is 1 on noise."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiffim import make_candidates
from jaxdiffim.core.heldout import heldout_chi2, split_candidates


def test_split_is_a_partition_into_folds():
    cands = make_candidates(np.arange(10.0) + 20, np.full(10, 30.0))  # capacity 16
    held = []
    for offset in range(4):
        fit, out = split_candidates(cands, every=4, offset=offset)
        assert not np.any(np.asarray(fit.valid & out.valid))
        np.testing.assert_array_equal(np.asarray(fit.valid | out.valid), np.asarray(cands.valid))
        held.append(np.asarray(out.valid))
    np.testing.assert_array_equal(np.sum(held, axis=0), np.asarray(cands.valid).astype(int))


def test_heldout_chi2_is_one_on_noise_and_differentiable():
    rng = np.random.default_rng(0)
    sigma = 3.0
    noise = jnp.asarray(rng.normal(0.0, sigma, (200, 200)), jnp.float32)
    variance = jnp.full((200, 200), sigma**2, jnp.float32)
    x, y = rng.uniform(20, 180, 40), rng.uniform(20, 180, 40)
    cands = make_candidates(x, y)
    value = heldout_chi2(noise, variance, cands, half=8)
    assert abs(float(value) - 1.0) < 0.03
    mask = jnp.zeros((200, 200), bool).at[:, :100].set(True)
    assert abs(float(heldout_chi2(noise, variance, cands, 8, mask)) - 1.0) < 0.05
    grad = jax.grad(lambda d: heldout_chi2(d, variance, cands, 8))(noise)
    assert float(jnp.abs(grad).sum()) > 0 and np.all(np.isfinite(np.asarray(grad)))
    # a star residual of 10 sigma raises it
    bump = noise.at[int(round(y[0])), int(round(x[0]))].add(10 * sigma)
    assert float(heldout_chi2(bump, variance, cands, 8)) > float(value)
