"""Precision without a context manager: with x64 off, reverse mode, vmap, the user's jit and
their compositions run the float64 fit (:func:`jaxdiffim.core.precision.float64_program`);
forward mode names the scope it needs."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from utils import FIXED, SIZE, grad_problem

from jaxdiffim import MaskedImage, PrecisionUnavailableError, fit_precision, subtract_images


@pytest.fixture(scope="module")
def problem():
    return grad_problem()


def _float32_loss(problem, config=FIXED):
    tmpl, sci, cands = problem
    zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
    tv = jnp.asarray(tmpl.variance, jnp.float32)
    sv = jnp.asarray(sci.variance, jnp.float32)

    def loss(template, sig):
        d, _ = subtract_images(
            MaskedImage(template, tv, zeros),
            MaskedImage(jnp.asarray(sci.image, jnp.float32), sv, zeros),
            cands,
            config,
            sig,
            check=False,
        )
        return jnp.mean(d.difference.image[4:-4, 4:-4] ** 2)

    return loss, jnp.asarray(tmpl.image, jnp.float32)


@pytest.mark.slow
def test_reverse_mode_and_vmap_without_x64_or_scope(problem):
    """x64 off, no context manager: grad, vjp, the user's jit, vmap and their compositions run
    the float64 fit (equal to the fit inside ``fit_precision()``, which runs plain) and agree
    with a central finite difference; JAX emits no dtype-truncation warning."""
    loss, t = _float32_loss(problem)
    sig = jnp.array([0.9, 1.8], jnp.float32)
    assert not jax.config.jax_enable_x64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float64 request truncated to float32 warns
        value, pullback = jax.vjp(loss, t, sig)  # what jax.grad runs
        g_t, g_s = pullback(jnp.float32(1.0))
        stack = jnp.stack([t, 1.01 * t])
        batched_grads = jax.jit(jax.vmap(jax.grad(loss, argnums=1), in_axes=(0, None)))(stack, sig)
        grads_of_jit = jax.vmap(jax.grad(jax.jit(loss), argnums=1), in_axes=(0, None))(stack, sig)
        nested = jax.vmap(jax.vmap(jax.jit(loss), in_axes=(0, None)), in_axes=(0, None))(
            stack[None], sig
        )
    with fit_precision():  # the plain float64 program: the reference
        ref_t, ref_s = jax.grad(loss, argnums=(0, 1))(t, sig)
    assert g_s.dtype == g_t.dtype == jnp.float32
    np.testing.assert_allclose(g_s, ref_s, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(g_t, ref_t, rtol=1e-3, atol=1e-4 * float(jnp.abs(ref_t).max()))
    np.testing.assert_allclose(nested[0], [loss(t, sig), loss(1.01 * t, sig)], rtol=1e-5)
    np.testing.assert_allclose(batched_grads[0], ref_s, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads_of_jit, batched_grads, rtol=1e-4, atol=1e-7)
    eps = 1e-2  # agrees with a central finite difference
    num = (loss(t, jnp.array([0.9 + eps, 1.8])) - loss(t, jnp.array([0.9 - eps, 1.8]))) / (2 * eps)
    assert float(g_s[0]) == pytest.approx(float(num), rel=0.05, abs=1e-4)
    assert float(value) == pytest.approx(float(loss(t, sig)), rel=1e-6)


def test_forward_mode_without_x64_names_the_scope(problem):
    """Forward mode of the custom_vjp fit is undefined in JAX: a named error says what to do,
    and inside ``fit_precision()`` forward mode works."""
    loss, t = _float32_loss(problem)
    sig = jnp.array([0.9, 1.8], jnp.float32)
    with pytest.raises(PrecisionUnavailableError, match="fit_precision"):
        jax.jvp(lambda s: loss(t, s), (sig,), (jnp.ones(2, jnp.float32),))
    with fit_precision():
        _, tangent = jax.jvp(lambda s: loss(t, s), (sig,), (jnp.array([1.0, 0.0], jnp.float32),))
        grad = jax.grad(loss, argnums=1)(t, sig)
    assert float(tangent) == pytest.approx(float(grad[0]), rel=1e-4)
