"""Differentiability: check_grads (float64, order 1, fwd + rev) of fit + convolve + subtract."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdiffim import (
    Decorrelation,
    KernelFitConfig,
    MaskedImage,
    PrecisionUnavailableError,
    fit_precision,
    make_candidates,
    subtract_and_decorrelate,
    subtract_images,
)
from jaxdiffim.testing.synthetic import make_test_image

SIZE = 80


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(5)
    x = rng.uniform(18, SIZE - 18, 9)
    y = rng.uniform(18, SIZE - 18, 9)
    flux = rng.uniform(300, 900, 9)
    common = dict(noise_level=0.5, size=(SIZE, SIZE), x=x, y=y, kernel_size=15)
    tmpl = make_test_image(psf_sigma=1.5, noise_seed=1, flux=flux, **common)
    sci = make_test_image(psf_sigma=1.9, noise_seed=2, flux=1.1 * flux, **common)
    cands = make_candidates(x, y, flux)  # capacity 32: 23 padded rows
    assert cands.x.shape == (32,)
    return tmpl, sci, cands


# The candidate selection is held fixed: no clipping, every candidate visited.
FIXED = KernelFitConfig(
    kernel_size=7,
    degrees=(2, 1),
    spatial_kernel_order=1,
    spatial_bg_order=1,
    single_kernel_clipping=False,
    kernel_sum_clipping=False,
    spatial_kernel_clipping=False,
    n_star_per_cell=-1,
)


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


def test_reverse_mode_and_vmap_without_x64_or_scope(problem):
    """x64 off, no context manager: grad, vjp, the user's jit, vmap and their compositions run
    the float64 fit (equal to the fit inside ``fit_precision()``, which runs plain) and agree
    with a central finite difference; JAX emits no dtype-truncation warning."""
    loss, t = _float32_loss(problem)
    sig = jnp.array([0.9, 1.8], jnp.float32)
    assert not jax.config.jax_enable_x64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a float64 request truncated to float32 warns
        g_t, g_s = jax.grad(loss, argnums=(0, 1))(t, sig)
        jit_g = jax.jit(jax.grad(loss, argnums=(0, 1)))(t, sig)
        value, pullback = jax.vjp(loss, t, sig)
        stack = jnp.stack([t, 1.01 * t])
        batched = jax.vmap(jax.jit(loss), in_axes=(0, None))(stack, sig)
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
    np.testing.assert_allclose(jit_g[1], ref_s, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(pullback(jnp.float32(1.0))[1], ref_s, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(batched, [loss(t, sig), loss(1.01 * t, sig)], rtol=1e-5)
    np.testing.assert_allclose(batched_grads[0], ref_s, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads_of_jit, batched_grads, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(nested[0], batched, rtol=1e-5)
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


def test_check_grads_whole_program_images_widths_and_lambda(problem):
    """The one program from kernel sources to the decorrelated difference
    (:func:`subtract_and_decorrelate`), float64: images and widths (Alard-Lupton) and λ
    (delta-function basis) pass check_grads, fwd + rev. Selection and mode are held fixed."""
    tmpl, sci, cands = problem
    zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
    weight = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, (SIZE, SIZE)))
    delta = KernelFitConfig(
        kernel_basis="delta-function",
        kernel_size=5,
        spatial_kernel_order=0,
        spatial_bg_order=0,
        single_kernel_clipping=False,
        kernel_sum_clipping=False,
        spatial_kernel_clipping=False,
        n_star_per_cell=-1,
    )

    def program(template, science, sigmas, config):
        out = subtract_and_decorrelate(
            MaskedImage(template, jnp.asarray(tmpl.variance), zeros),
            MaskedImage(science, jnp.asarray(sci.variance), zeros),
            cands,
            config,
            sigmas,
            mode="convolveTemplate",
            subtract_background=True,
            decorrelation=Decorrelation(),
            check=False,
        )
        d = out.difference.image[6:-6, 6:-6]
        return jnp.sum(weight[6:-6, 6:-6] * d**2) / 1e3

    with jax.enable_x64(True):
        t = jnp.asarray(tmpl.image, jnp.float64)
        s = jnp.asarray(sci.image, jnp.float64)
        sig = jnp.array([0.9, 1.8])
        both = ("fwd", "rev")
        check_grads(lambda a, b, c: program(a, b, c, FIXED), (t, s, sig), order=1, modes=both)

        def of_lambda(lam):
            return program(t, s, jnp.zeros(0), delta.replace(lambda_value=lam))

        check_grads(of_lambda, (jnp.float64(0.2),), order=1, modes=both)
