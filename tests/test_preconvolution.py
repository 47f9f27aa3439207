"""Ports of ip_diffim's AlardLuptonPreconvolveSubtractTest (score images)."""

import jax.numpy as jnp
import numpy as np
import pytest
from test_alard_lupton import BASE, catalogue, detected, psf, stats_pixels
from utils import meanclip

from jaxdiffim import InvalidInputError, MaskedImage
from jaxdiffim.algorithms.alard_lupton import alard_lupton_preconvolve_subtract
from jaxdiffim.core.masks import bit
from jaxdiffim.core.preconvolution import fill_masked, preconvolution_kernel, preconvolve
from jaxdiffim.testing.synthetic import gaussian_stamp, make_test_image


def nea(sigma):
    p = psf(sigma)
    return 1.0 / np.sum((p / p.sum()) ** 2)


def scene(psf_sigma, noise, seed, border=0):
    """ip_diffim's preconvolution tests use 400² images (smoothed noise needs the pixels)."""
    return make_test_image(
        psf_sigma=psf_sigma,
        noise_level=noise,
        noise_seed=seed,
        n_src=40,
        size=(400, 400),
        template_border=border,
    )


def score(sci, tmpl, config=BASE):
    return alard_lupton_preconvolve_subtract(
        detected(tmpl),
        detected(sci),
        psf(tmpl.psf_sigma),
        psf(sci.psf_sigma),
        catalogue(sci),
        config,
    )


def test_equal_images():
    sigma = 1.0
    sci = scene(2.4, sigma, 6)
    tmpl = scene(2.4, sigma, 7, border=20)
    res = score(sci, tmpl)
    s = np.asarray(res.difference.image)
    assert np.isfinite(s).all()
    good = stats_pixels(res, sci)
    assert abs(meanclip(s[good])[0]) < 5 * sigma / np.sqrt(s.size)
    expected = np.sqrt(2) * sigma / np.sqrt(nea(2.4))
    assert np.std(s[good]) == pytest.approx(expected, rel=0.1)
    # the variance plane describes the score's noise
    assert meanclip(np.asarray(res.difference.variance)[good])[0] == pytest.approx(
        expected**2, rel=0.1
    )
    # the border the PSF cannot reach is EDGE
    half = 31 // 2
    mask = np.asarray(res.difference.mask)
    assert (mask[:half] & bit("EDGE")).all() and (mask[:, -half:] & bit("EDGE")).all()
    assert not (mask[40:-40, 40:-40] & bit("EDGE")).any()


def test_agnostic_template_psf():
    """Templates of seeing σ 2.8 and 2.0 give the same score to within the noise."""
    sigma = 0.3
    sci = scene(2.4, sigma, 6)
    t1 = scene(2.8, sigma, 7, border=20)
    t2 = scene(2.0, sigma, 8, border=20)
    one, two = score(sci, t1), score(sci, t2)
    delta = np.asarray(one.difference.image) - np.asarray(two.difference.image)
    good = stats_pixels(one, sci) & stats_pixels(two, sci)
    assert abs(meanclip(delta[good])[0]) < 5 * 2 * sigma / np.sqrt(good.sum())
    assert np.std(delta[good]) == pytest.approx(np.sqrt(2) * sigma / np.sqrt(nea(2.4)), rel=0.1)


def test_bad_template_column_stays_under_its_flag():
    """A bad template column (garbage values, ``BAD``): what the kernel spreads from it is
    ``SUSPECT`` and filled before the score filter, which is broad and would otherwise carry
    the garbage onto the unflagged pixels beside it (stripes of ±50σ in the quality
    benchmark's strong scene)."""
    sigma = 1.0
    sci = scene(2.4, sigma, 6)
    tmpl = scene(2.0, sigma, 7, border=20)
    t = detected(tmpl)
    image, mask = np.array(t.image), np.array(t.mask)
    image[:, 200] = 5e3
    mask[:, 200] |= bit("BAD")
    t = t._replace(image=image, mask=mask)
    res = alard_lupton_preconvolve_subtract(
        t, detected(sci), psf(tmpl.psf_sigma), psf(sci.psf_sigma), catalogue(sci), BASE
    )
    s = np.asarray(res.difference.image)
    d_mask = np.asarray(res.difference.mask)
    assert (d_mask[:, 200] & bit("BAD")).all()
    assert (d_mask[40:-40, 190:211] & bit("SUSPECT")).all()
    near = np.zeros(s.shape, bool)
    near[40:-40, 150:251] = True
    good = stats_pixels(res, sci) & near & ((d_mask & bit("SUSPECT")) == 0)
    assert good.sum() > 5000
    expected = np.sqrt(2) * sigma / np.sqrt(nea(2.4))
    assert np.std(s[good]) == pytest.approx(expected, rel=0.15)
    assert np.abs(s[good]).max() < 6 * expected


def test_preconvolution_kernel_validation():
    with pytest.raises(ValueError, match="odd"):
        preconvolution_kernel(np.ones((4, 4)))
    with pytest.raises(InvalidInputError, match="finite"):
        preconvolution_kernel(np.full((5, 5), np.nan))
    k = preconvolution_kernel(psf(2.0) * 7.0)
    assert float(k.sum()) == pytest.approx(1.0, rel=1e-6)


def test_background_subtraction():
    """512² science with a quadratic Chebyshev sky: 6 parameters within 20 %, score std right."""
    from test_subtract import chebyshev_background

    coeffs = [2.2, 2.1, 2.0, 1.2, 1.1, 1.0]
    size = 512

    def sky(xx, yy):
        return chebyshev_background(coeffs, size)[yy, xx]

    sigma = 1.0
    sci = make_test_image(
        psf_sigma=2.0, noise_level=sigma, noise_seed=6, size=(size, size), background=sky
    )
    tmpl = make_test_image(
        psf_sigma=2.0, noise_level=sigma, noise_seed=7, size=(size, size), template_border=20
    )
    res = score(sci, tmpl, BASE.replace(do_subtract_background=True))
    np.testing.assert_allclose(res.metrics["backgroundParameters"], coeffs, rtol=0.2)
    s = np.asarray(res.difference.image)
    good = stats_pixels(res, sci)
    assert np.std(s[good]) == pytest.approx(np.sqrt(2) * sigma / np.sqrt(nea(2.0)), rel=0.12)


@pytest.mark.parametrize("decorrelate", [False, True])
def test_scale_variance(decorrelate):
    """Score variance ≈ var_S / NEA + (decorrelated: var_T / NEA; else the matched template's
    variance), ×1.345 restored by the rescaling, within 10 %."""
    sci = scene(2.4, 4.0, 6)
    tmpl = scene(2.0, 2.0, 7, border=20)
    t, s = detected(tmpl), detected(sci)
    t = t._replace(variance=t.variance / np.float32(1.345))
    s = s._replace(variance=s.variance / np.float32(1.345))
    config = BASE.replace(do_decorrelation=decorrelate)
    res = alard_lupton_preconvolve_subtract(
        t, s, psf(tmpl.psf_sigma), psf(sci.psf_sigma), catalogue(sci), config
    )
    assert res.metrics["scaleScienceVarianceFactor"] == pytest.approx(1.345, abs=0.05)
    good = stats_pixels(res, sci)

    def mean(a):
        return meanclip(np.asarray(a)[good])[0]

    expected = mean(s.variance) * 1.345 / nea(2.4)
    if decorrelate:
        expected += mean(t.variance) * 1.345 / nea(2.4)
    else:
        expected += mean(res.matched_template.variance)
    assert mean(res.difference.variance) == pytest.approx(expected, rel=0.1)


def test_fill_masked_replaces_bad_pixels_with_median():
    rng = np.random.RandomState(1)
    img = rng.normal(10.0, 1.0, (64, 64)).astype(np.float32)
    mask = np.zeros((64, 64), np.int32)
    img[20:24, 20:24] = 1e6
    mask[20:24, 20:24] = bit("BAD")
    img[40, 40] = np.nan
    out = np.asarray(fill_masked(jnp.asarray(img), jnp.asarray(mask), bit("BAD")))
    med = np.median(
        np.delete(
            img.ravel(), [40 * 64 + 40] + [y * 64 + x for y in range(20, 24) for x in range(20, 24)]
        )
    )
    np.testing.assert_allclose(out[20:24, 20:24], med, rtol=1e-5)
    assert out[40, 40] == pytest.approx(med, rel=1e-5)
    keep = np.ones((64, 64), bool)
    keep[20:24, 20:24] = False
    keep[40, 40] = False
    np.testing.assert_array_equal(out[keep], img[keep])


def test_preconvolve_does_not_smear_masked_garbage():
    rng = np.random.RandomState(2)
    img = rng.normal(0.0, 1.0, (128, 128)).astype(np.float32)
    mask = np.zeros((128, 128), np.int32)
    img[60:64, 60:64] = 1e6
    mask[60:64, 60:64] = bit("SAT")
    var = np.ones_like(img)
    out = preconvolve(
        MaskedImage(jnp.asarray(img), jnp.asarray(var), jnp.asarray(mask)),
        preconvolution_kernel(gaussian_stamp(15, 2.0)),
    )
    o = np.asarray(out.image)
    assert np.isfinite(o).all()
    assert np.abs(o[62, 62]) < 5.0  # pure noise filtered (std ~ 0.14); garbage would be ~1e5
