"""Hyperparameters as traced arrays: widths (with a safe parametrisation and a guard), λ and the
clipping limits are differentiable, vmappable and never recompile; degenerate widths give a
named status, not NaN."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from utils import SIZE, grad_problem

from jaxdiffim import (
    InvalidInputError,
    KernelFitConfig,
    KernelFitError,
    MaskedImage,
    alard_lupton_subtract,
    decorrelate,
    subtract_images,
)
from jaxdiffim.core import status as st
from jaxdiffim.core.widths import (
    MIN_SEPARATION,
    MIN_WIDTH,
    parameters_from_widths,
    widths_from_parameters,
)

AL = KernelFitConfig(kernel_size=7, degrees=(2, 1), spatial_kernel_order=1, spatial_bg_order=1)
DF = KernelFitConfig(
    kernel_basis="delta-function", kernel_size=5, spatial_kernel_order=0, spatial_bg_order=0
)


@pytest.fixture(scope="module")
def pair():
    tmpl, sci, cands = grad_problem()
    zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
    t = MaskedImage(jnp.asarray(tmpl.image), jnp.asarray(tmpl.variance), zeros)
    s = MaskedImage(jnp.asarray(sci.image), jnp.asarray(sci.variance), zeros)
    return t, s, cands


def _loss(pair, traces):
    t, s, cands = pair

    def loss(sigmas, config):
        traces.append(1)  # runs once per trace
        d, sol = subtract_images(t, s, cands, config, sigmas, check=False)
        return jnp.mean(d.difference.image[4:-4, 4:-4] ** 2), sol.status

    return loss


def test_width_parametrisation_is_positive_ordered_and_invertible():
    params = jnp.array([-30.0, -30.0, 5.0, 0.0])
    widths = np.asarray(widths_from_parameters(params))
    assert widths[0] >= MIN_WIDTH
    assert np.all(widths[1:] / widths[:-1] >= 1 + MIN_SEPARATION - 1e-6)
    default = np.array([0.7, 1.5, 3.0])
    back = widths_from_parameters(jnp.asarray(parameters_from_widths(default), jnp.float32))
    np.testing.assert_allclose(back, default, rtol=1e-5)
    with pytest.raises(ValueError, match="increase"):
        parameters_from_widths([1.0, 1.0])


DEGENERATE = [[0.0, 1.0], [0.05, 1.0], [1.0, 1.0], [-1.0, 2.0], [np.nan, 1.0]]


@pytest.mark.parametrize("widths", DEGENERATE)
def test_degenerate_widths_give_a_status_not_nan(pair, widths):
    loss = _loss(pair, [])
    (value, code), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(widths), AL)
    assert np.isfinite(float(value))
    assert np.all(np.asarray(grad) == 0.0)
    assert int(code) & st.DEGENERATE_BASIS
    t, s, cands = pair
    with pytest.raises(KernelFitError, match="degenerate"):
        subtract_images(t, s, cands, AL, jnp.asarray(widths))


def test_widths_lambda_and_limits_are_traced(pair):
    """One trace for many widths, λ values and clipping limits; λ is differentiable and its
    gradient agrees with a central finite difference; widths vmap."""
    traces = []
    loss = jax.jit(_loss(pair, traces))
    for sig in ([0.9, 1.8], [1.0, 2.2], [0.8, 1.6]):
        for k in (3.0, 2.5):
            loss(jnp.asarray(sig), AL.replace(max_ksum_sigma=k))
    assert len(traces) == 1
    batch = jax.vmap(loss, in_axes=(0, None))(jnp.asarray([[0.9, 1.8], [1.0, 2.2]]), AL)
    np.testing.assert_allclose(batch[0][1], loss(jnp.asarray([1.0, 2.2]), AL)[0], rtol=1e-5)

    traces.clear()
    empty = jnp.zeros(0)
    values = [float(loss(empty, DF.replace(lambda_value=lam))[0]) for lam in (0.1, 0.2, 0.4)]
    assert len(traces) == 1
    assert len(set(values)) == 3

    def of_lambda(lam):
        return loss(empty, DF.replace(lambda_value=lam))[0]

    grad = jax.grad(of_lambda)(0.2)
    eps = 0.02
    num = (of_lambda(0.2 + eps) - of_lambda(0.2 - eps)) / (2 * eps)
    assert float(grad) == pytest.approx(float(num), rel=0.05)
    assert len(traces) == 1  # neither the gradient nor the finite differences traced again


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_images_are_refused_by_name(pair, dtype):
    t, s, cands = pair
    half = MaskedImage(t.image.astype(dtype), t.variance, t.mask)
    with pytest.raises(InvalidInputError, match="cast it to float32"):
        subtract_images(half, s, cands, AL, jnp.asarray([0.9, 1.8]))


def test_traced_calls_that_need_the_host_say_what_to_do(pair):
    """``check=True`` under ``jit`` and the host-orchestrated algorithm under ``jit`` raise named
    errors that point to the traceable functions."""
    t, s, cands = pair

    def checked(image):
        sig = jnp.asarray([0.9, 1.8])
        d, _ = subtract_images(MaskedImage(image, t.variance, t.mask), s, cands, AL, sig)
        return d.difference.image.sum()

    with pytest.raises(InvalidInputError, match="pass check=False"):
        jax.jit(checked)(t.image)

    def whole(image):
        psf = np.ones((5, 5)) / 25.0
        return alard_lupton_subtract(MaskedImage(image, t.variance, t.mask), s, psf, psf)

    with pytest.raises(InvalidInputError, match="subtract_and_decorrelate"):
        jax.jit(whole)(t.image)


def test_decorrelation_variances_are_traced_and_differentiable():
    """The mean variances of the decorrelation are arguments of its compiled program: new
    values re-run it, and the difference's variance is differentiable in them."""
    rng = np.random.default_rng(3)
    image = jnp.asarray(rng.normal(size=(64, 64)), jnp.float32)
    variance = jnp.ones((64, 64), jnp.float32)
    diff = MaskedImage(image, 2 * variance, jnp.zeros((64, 64), jnp.int32))
    yy, xx = np.mgrid[-5:6, -5:6]
    kernel = jnp.asarray(np.exp(-(xx**2 + yy**2) / 4.0) / np.sum(np.exp(-(xx**2 + yy**2) / 4.0)))
    kernel = kernel.astype(jnp.float32)
    decorrelate(diff, kernel, variance, variance, 1.0, 1.0)
    before = decorrelate._cache_size()
    outs = [decorrelate(diff, kernel, variance, variance, s, 1.5) for s in (0.5, 1.0, 2.0)]
    assert decorrelate._cache_size() == before
    assert len({float(o.variance.mean()) for o in outs}) == 3

    def mean_variance(s_unconvolved):
        out = decorrelate(diff, kernel, variance, variance, s_unconvolved, 1.5)
        return out.variance.mean()

    grad = jax.grad(mean_variance)(jnp.float32(1.0))
    eps = 0.05
    num = (mean_variance(1.0 + eps) - mean_variance(1.0 - eps)) / (2 * eps)
    assert float(grad) == pytest.approx(float(num), rel=0.02)
