"""Differentiability: check_grads (float64, order 1, fwd + rev) of fit + convolve + subtract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from utils import FIXED, SIZE, grad_problem

from jaxdiffim import (
    KernelFitConfig,
    MaskedImage,
    make_candidates,
    subtract_images,
)


@pytest.fixture(scope="module")
def problem():
    return grad_problem()


def loss_fn(tmpl, sci, cands, config, mode="convolveTemplate"):
    zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
    weight = jnp.asarray(np.random.default_rng(0).uniform(0.5, 1.5, (SIZE, SIZE)))

    def loss(template, science, sigmas):
        d, _ = subtract_images(
            MaskedImage(template, jnp.asarray(tmpl.variance, jnp.float64), zeros),
            MaskedImage(science, jnp.asarray(sci.variance, jnp.float64), zeros),
            cands,
            config,
            sigmas,
            mode=mode,
            subtract_background=True,
            check=False,
        )
        return jnp.sum(weight[4:-4, 4:-4] * d.difference.image[4:-4, 4:-4] ** 2) / 1e3

    return loss


@pytest.mark.parametrize("mode", ["convolveTemplate", "convolveScience"])
def test_check_grads_images_and_widths(problem, mode):
    tmpl, sci, cands = problem
    with jax.enable_x64(True):
        loss = loss_fn(tmpl, sci, cands, FIXED, mode)
        t = jnp.asarray(tmpl.image, jnp.float64)
        s = jnp.asarray(sci.image, jnp.float64)
        sig = jnp.array([0.9, 1.8])
        # with respect to the template, the science image and the Gaussian widths at once
        check_grads(loss, (t, s, sig), order=1, modes=("fwd", "rev"))


def test_gradients_finite_with_padding_and_clipping(problem):
    """Default clipping on, 23 padded candidates: every gradient is finite (float32 and x64 off)."""
    tmpl, sci, cands = problem
    config = KernelFitConfig(kernel_size=7, degrees=(2, 1), spatial_bg_order=1)
    loss = loss_fn(tmpl, sci, cands, config)
    with jax.enable_x64(True):
        g = jax.grad(loss, argnums=(0, 1, 2))(
            jnp.asarray(tmpl.image, jnp.float64),
            jnp.asarray(sci.image, jnp.float64),
            jnp.array([0.9, 1.8]),
        )
    for part in g:
        assert np.all(np.isfinite(np.asarray(part)))
    assert np.abs(np.asarray(g[2])).max() > 0


def test_singular_spatial_system_flagged_with_finite_gradients(problem):
    """Fewer used candidates than background terms: SINGULAR status, a bounded background
    (the pseudo-inverse leaves unconstrained terms at 0), and finite gradients."""
    tmpl, sci, _ = problem
    few = make_candidates(np.asarray(problem[2].x[:4]), np.asarray(problem[2].y[:4]), np.ones(4))
    config = FIXED.replace(spatial_bg_order=2)  # 6 background terms, 4 candidates
    loss = loss_fn(tmpl, sci, few, config)
    with jax.enable_x64(True):
        t = jnp.asarray(tmpl.image, jnp.float64)
        s = jnp.asarray(sci.image, jnp.float64)
        sig = jnp.array([0.9, 1.8])
        _, sol = subtract_images(
            MaskedImage(t, jnp.asarray(tmpl.variance, jnp.float64), jnp.zeros(t.shape, jnp.int32)),
            MaskedImage(s, jnp.asarray(sci.variance, jnp.float64), jnp.zeros(t.shape, jnp.int32)),
            few,
            config,
            sig,
        )
        assert int(sol.status) & 2
        assert np.abs(np.asarray(sol.background_coefficients)).max() < 5.0
        grads = jax.grad(loss, argnums=(0, 1, 2))(t, s, sig)
    for g in grads:
        assert np.all(np.isfinite(np.asarray(g)))


def test_solve_with_fallback_gradient_is_finite_on_indefinite_matrix():
    """The unused Cholesky branch must not leak NaN (review finding)."""
    from jaxdiffim.core.solve import solve_with_fallback

    with jax.enable_x64(True):
        m = jnp.array([[1.0, 2.0], [2.0, 1.0]])
        b = jnp.array([1.0, 1.0])
        gm, gb = jax.grad(lambda m, b: solve_with_fallback(m, b).x.sum(), (0, 1))(m, b)
        assert np.all(np.isfinite(np.asarray(gm))) and np.all(np.isfinite(np.asarray(gb)))
        spd = jnp.array([[4.0, 1.0], [1.0, 3.0]])
        check_grads(lambda b: solve_with_fallback(spd, b).x, (b,), order=1, modes=("fwd", "rev"))
        check_grads(
            lambda m: solve_with_fallback(m @ m.T + spd, b).x, (spd,), order=1, modes=("fwd", "rev")
        )
