"""Decorrelation afterburner: ports of ip_diffim's test_imageDecorrelation plus spatial checks."""

import jax.numpy as jnp
import numpy as np
import pytest
from utils import meanclip

from jaxdiffim import MaskedImage
from jaxdiffim.core.config import KernelFitConfig
from jaxdiffim.core.convolve import fft_correlate
from jaxdiffim.core.decorrelation import (
    decorrelate,
    decorrelate_spatially,
    decorrelation_spectrum,
    mean_variance,
)
from jaxdiffim.core.fit import KernelSolution
from jaxdiffim.testing.synthetic import gaussian_stamp, plant_stars

SIZE = 256
KERNEL = gaussian_stamp(31, np.sqrt(3.3**2 - 2.2**2))  # unit sum, odd (ip_diffim: 32x32)


def fake_images(svar, tvar, seed=66, n_src=50):
    """ip_diffim's makeFakeImages: science PSF sigma 3.3, template 2.2, constant variances."""
    rng = np.random.RandomState(seed)
    x = rng.uniform(16, SIZE - 5, n_src)
    y = rng.uniform(16, SIZE - 5, n_src)
    flux = rng.uniform(50, 30000, n_src)
    centre = np.argmin((x - SIZE / 2) ** 2 + (y - SIZE / 2) ** 2)
    sci_flux = flux.copy()
    sci_flux[centre] *= 1.02
    sci = plant_stars((SIZE, SIZE), x, y, sci_flux, 3.3, stamp_size=48)
    tmpl = plant_stars((SIZE, SIZE), x, y, flux, 2.2, stamp_size=48)
    sci = sci + rng.normal(0, np.sqrt(svar), sci.shape)
    tmpl = tmpl + rng.normal(0, np.sqrt(tvar), tmpl.shape)
    return sci.astype(np.float32), tmpl.astype(np.float32)


def difference(sci, tmpl, svar, tvar):
    matched = np.asarray(fft_correlate(jnp.asarray(tmpl), jnp.asarray(KERNEL, jnp.float32)))
    var = np.full(sci.shape, svar + tvar, np.float32)
    return MaskedImage(sci - matched, var, np.zeros(sci.shape, np.int32))


def interior(a, border=20):
    return np.asarray(a)[border:-border, border:-border]


def run_decorrelation(d, svar, tvar, complete):
    vs = jnp.full(d.image.shape, svar, jnp.float32)
    vt = jnp.full(d.image.shape, tvar, jnp.float32)
    return decorrelate(d, jnp.asarray(KERNEL, jnp.float32), vs, vt, svar, tvar, complete=complete)


@pytest.mark.parametrize("complete", [False, True])
@pytest.mark.parametrize("svar,tvar", [(0.04, 0.04), (0.08, 0.04), (0.04, 0.08)])
def test_diffim_correction(svar, tvar, complete):
    """testDiffimCorrection: variance right within 5 % (pixels) and 2 % (plane)."""
    sci, tmpl = fake_images(svar, tvar)
    d = difference(sci, tmpl, svar, tvar)
    raw_var = meanclip(interior(d.image))[1] ** 2
    assert raw_var < svar + tvar  # the convolution smoothed the template noise
    out = run_decorrelation(d, svar, tvar, complete)
    pix_var = meanclip(interior(out.image))[1] ** 2
    plane = meanclip(interior(out.variance))[0]
    assert pix_var == pytest.approx(svar + tvar, rel=0.05)
    assert plane == pytest.approx(svar + tvar, rel=0.02)
    assert pix_var == pytest.approx(plane, rel=0.05)
    assert np.isfinite(np.asarray(out.image)).all()


def correlation(image, max_lag, n_pairs=10000, edge=17, seed=22):
    """Pixel correlation at lags 0..max_lag from random horizontal/vertical pairs."""
    rng = np.random.RandomState(seed)
    img = np.asarray(image, float)
    img = img - img[edge:-edge, edge:-edge].mean()
    h, w = img.shape
    out = []
    for r in range(max_lag + 1):
        y = rng.randint(edge, h - edge - r, n_pairs)
        x = rng.randint(edge, w - edge - r, n_pairs)
        horizontal = rng.rand(n_pairs) < 0.5
        y2 = np.where(horizontal, y, y + r)
        x2 = np.where(horizontal, x + r, x)
        a, b = img[y, x], img[y2, x2]
        out.append(np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b)))
    return np.array(out)


def test_noise_diffim_correction():
    """testNoiseDiffimCorrection: svar 1, tvar 100, no sources."""
    svar, tvar = 1.0, 100.0
    rng = np.random.RandomState(22)
    sci = rng.normal(0, 1.0, (SIZE, SIZE)).astype(np.float32)
    tmpl = rng.normal(0, 10.0, (SIZE, SIZE)).astype(np.float32)
    d = difference(sci, tmpl, svar, tvar)
    out = run_decorrelation(d, svar, tvar, False)
    rho_sci, rho_raw, rho_cor = (correlation(a, 39) for a in (sci, d.image, out.image))
    for rho in (rho_sci, rho_raw, rho_cor):
        assert rho[0] == pytest.approx(1.0, abs=0.1)
    np.testing.assert_allclose(rho_sci[1:], 0.0, atol=0.1)
    assert (rho_raw[1:4] > 0.2).all()
    np.testing.assert_allclose(rho_cor[1:], 0.0, atol=0.1)


def constant_solution(kernel, shape):
    """A KernelSolution whose kernel is ``kernel`` everywhere (order 0, one basis image)."""
    h, w = shape
    return KernelSolution(
        basis=jnp.asarray(kernel, jnp.float32)[None],
        kernel_coefficients=jnp.ones((1, 1), jnp.float32),
        background_coefficients=jnp.zeros(1, jnp.float32),
        bbox=jnp.asarray([0.0, 0.0, w - 1.0, h - 1.0]),
        kernel_sum=jnp.asarray(float(np.sum(kernel))),
        condition_number=jnp.asarray(1.0),
        status=jnp.asarray(0, jnp.int32),
        used=jnp.ones(1, bool),
        rejected=jnp.zeros(1, bool),
        candidate_kernel_sums=jnp.ones(1),
        n_spatial_iterations=jnp.asarray(1, jnp.int32),
    )


@pytest.mark.parametrize("complete", [False, True])
def test_spatial_equals_constant_for_constant_kernel(complete):
    """DecorrelateALKernelSpatialTask check: spatial and constant variances agree within 3 %."""
    svar, tvar = 0.04, 0.08
    sci, tmpl = fake_images(svar, tvar)
    d = difference(sci, tmpl, svar, tvar)
    const = run_decorrelation(d, svar, tvar, complete)
    vs = jnp.full(d.image.shape, svar, jnp.float32)
    vt = jnp.full(d.image.shape, tvar, jnp.float32)
    config = KernelFitConfig(spatial_kernel_order=0, kernel_size=31)
    sol = constant_solution(KERNEL, d.image.shape)
    spatial = decorrelate_spatially(
        d, sol, vs, vt, svar, tvar, config=config, n_nodes=3, complete=complete
    )
    pix_c = meanclip(interior(const.image))[1] ** 2
    pix_s = meanclip(interior(spatial.image))[1] ** 2
    assert pix_s == pytest.approx(svar + tvar, rel=0.05)
    assert pix_s == pytest.approx(pix_c, rel=0.03)
    plane_s = meanclip(interior(spatial.variance))[0]
    assert plane_s == pytest.approx(meanclip(interior(const.variance))[0], rel=0.03)
    # the truncated, blended filter reproduces the exact FFT filter pixel by pixel
    resid = interior(spatial.image) - interior(const.image)
    assert np.std(resid) < 0.01 * np.sqrt(svar + tvar)


def test_mean_variance_ignores_masked_and_nonfinite():
    var = np.full((64, 64), 2.0, np.float32)
    mask = np.zeros((64, 64), np.int32)
    var[:8] = 1e6
    mask[:8] = 1  # BAD
    var[10, 10] = np.nan
    assert float(mean_variance(var, mask)) == pytest.approx(2.0)


def test_nonfinite_pixels_restored():
    svar = tvar = 0.04
    sci, tmpl = fake_images(svar, tvar)
    d = difference(sci, tmpl, svar, tvar)
    img = np.asarray(d.image).copy()
    img[100, 100] = np.nan
    out = run_decorrelation(d._replace(image=jnp.asarray(img)), svar, tvar, False)
    out_img = np.asarray(out.image)
    assert np.isnan(out_img[100, 100])
    assert np.isfinite(np.delete(out_img.ravel(), 100 * SIZE + 100)).all()


def test_complete_variance_spreads_a_variance_spike():
    svar, tvar = 0.04, 0.08
    z = np.zeros((SIZE, SIZE), np.float32)
    d = MaskedImage(
        jnp.asarray(z), jnp.asarray(z + svar + tvar), jnp.zeros((SIZE, SIZE), jnp.int32)
    )
    vs = jnp.full((SIZE, SIZE), svar, jnp.float32)
    vt = np.full((SIZE, SIZE), tvar, np.float32)
    vt[128, 128] += 100.0  # one noisy template pixel
    k = jnp.asarray(KERNEL, jnp.float32)
    out = {
        c: np.asarray(decorrelate(d, k, vs, jnp.asarray(vt), svar, tvar, complete=c).variance)
        for c in (False, True)
    }
    base = out[False][64, 64]
    ex_default = out[False] - base
    ex_complete = out[True] - out[True][64, 64]
    # default: the spike stays on its pixel; complete: spread over the K∘φ footprint ...
    assert ex_default[128, 131] == pytest.approx(0.0, abs=1e-4)
    assert ex_complete[128, 131] > 0.02 * ex_complete[128, 128]
    assert ex_complete[128, 128] < 0.5 * ex_default[128, 128]
    # ... with the same total (Parseval: Σ c_c² = w_c)
    box = (slice(96, 161), slice(96, 161))
    assert ex_complete[box].sum() == pytest.approx(ex_default[box].sum(), rel=0.02)


def test_score_filter_matches_ip_diffim_formula():
    shape = (64, 64)
    kern = gaussian_stamp(15, 2.5) * 1.1  # kappa = 1.1
    pre = gaussian_stamp(15, 2.0)
    su, sc = 0.5, 2.0
    filt, c_u, c_c = decorrelation_spectrum(jnp.asarray(kern), su, sc, shape, jnp.asarray(pre))

    def spec(a):
        p = np.zeros(shape)
        p[: a.shape[0], : a.shape[1]] = a
        return np.fft.rfft2(np.roll(p, (-(a.shape[0] // 2), -(a.shape[1] // 2)), axis=(0, 1)))

    kh, ph = spec(kern), spec(pre)
    expect = (su + sc * kern.sum() ** 2) / (
        su + sc * np.abs(kh) ** 2 / np.maximum(np.abs(ph) ** 2, 1e-35)
    )
    sel = np.abs(ph) ** 2 > 1e-3  # where |P̂|² is not floored
    np.testing.assert_allclose(np.asarray(filt)[sel], expect[sel], rtol=1e-3)
    assert np.asarray(filt)[0, 0] == pytest.approx(1.0, rel=1e-5)
