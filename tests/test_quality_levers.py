"""The quality levers of issue 12, each on a case built to need it: kernel sources that must be
in both images, the SUSPECT ring around saturated cores, and the difference's residual sky."""

import numpy as np
import pytest
from utils import basis_for, candidates_for, masked, scene_pair

from jaxdiffim import Decorrelation, subtract_and_decorrelate
from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
from jaxdiffim.algorithms.flux_agreement import flux_agreement
from jaxdiffim.cli.subtract import file_config
from jaxdiffim.core.convolve import MaskedImage
from jaxdiffim.core.decorrelation import DECORRELATION_IGNORE_PLANES
from jaxdiffim.core.masks import DIFFERENCE_SKY_IGNORE, FILL_BEFORE_FILTERING, bit, bits
from jaxdiffim.testing.synthetic import plant_stars

SIZE = 256


def _pair(rng, template_sigma=2.0, science_sigma=2.4, n=60, sky=(100.0, 160.0), scale=1.1):
    """Gaussian stars in both images (the science ``scale`` times brighter), sky noise."""
    x, y = rng.uniform(30, SIZE - 30, (2, n))
    flux = 10 ** rng.uniform(3.3, 4.7, n)
    images = []
    for sigma, level, factor in ((template_sigma, sky[0], 1.0), (science_sigma, sky[1], scale)):
        clean = plant_stars((SIZE, SIZE), x, y, flux * factor, sigma, stamp_size=41) + level
        var = clean + 25.0
        img = clean + rng.normal(size=clean.shape) * np.sqrt(var)
        images.append([img.astype(np.float32), var.astype(np.float32)])
    return images, (x, y, flux)


def _masked(image, variance, mask=None):
    mask = np.zeros(image.shape, np.int32) if mask is None else mask
    return MaskedImage(image, variance, mask)


def test_flux_agreement_drops_transients_and_variables_only():
    rng = np.random.default_rng(3)
    (t, s), (x, y, flux) = _pair(rng)
    # transients in the science image only, and a star that brightened by 40 %
    tx, ty = np.array([60.0, 190.0, 128.0]), np.array([200.0, 70.0, 128.0])
    s[0] += plant_stars((SIZE, SIZE), tx, ty, [3000.0, 6000.0, 20000.0], 2.4, 41)
    s[0] += plant_stars((SIZE, SIZE), x[:1], y[:1], 0.4 * 1.1 * flux[:1], 2.4, 41)
    xs, ys = np.concatenate([x, tx]), np.concatenate([y, ty])
    for img in (t[0], s[0]):  # the images carry their sky; the cut measures it around each star
        assert np.median(img) > 90
    keep, ratio = flux_agreement(_masked(*t), _masked(*s), xs, ys, 2.4 * 2.3548, 0)
    assert ratio == pytest.approx(1 / 1.1, rel=0.03)
    assert not keep[-3:].any()  # the transients
    assert not keep[0]  # the variable
    blended = np.hypot(x[:, None] - x[None], y[:, None] - y[None])
    np.fill_diagonal(blended, np.inf)
    isolated = blended.min(axis=1) > 12
    isolated[0] = False
    assert keep[: x.size][isolated].mean() >= 0.95  # the constant stars stay


def test_flux_agreement_without_references_keeps_everything():
    rng = np.random.default_rng(4)
    (t, s), _ = _pair(rng, n=2)
    keep, ratio = flux_agreement(
        _masked(*t), _masked(*s), np.array([100.0, 150.0]), np.array([100.0, 150.0]), 5.0, 0
    )
    assert keep.all() and np.isnan(ratio)


def _subtract(t, s, sigmas=(2.0, 2.4), t_mask=None, s_mask=None, **overrides):
    config = file_config({"raise_on_bad_subtraction_ratio": False, **overrides})
    psfs = [
        np.exp(-0.5 * (np.arange(-12, 13)[:, None] ** 2 + np.arange(-12, 13) ** 2) / q**2)
        for q in sigmas
    ]
    return alard_lupton_subtract(
        _masked(*t, t_mask), _masked(*s, s_mask), *(p / p.sum() for p in psfs), None, config
    )


def test_saturated_cores_get_a_suspect_ring():
    rng = np.random.default_rng(5)
    (t, s), _ = _pair(rng)
    s_mask = np.zeros((SIZE, SIZE), np.int32)
    s_mask[120:123, 60:63] = bit("SAT")  # a clipped science core, away from the template's
    t_mask = np.zeros((SIZE, SIZE), np.int32)
    t_mask[180:182, 200:202] = bit("SAT")
    result = _subtract(t, s, t_mask=t_mask, s_mask=s_mask)
    suspect = (np.asarray(result.difference.mask) & bit("SUSPECT")) != 0
    half = (result.kernel_config.kernel_size + 2 * int(np.ceil(2.4 * 2.3548))) // 2
    for (r0, r1), (c0, c1) in (((120, 122), (60, 62)), ((180, 181), (200, 201))):
        assert suspect[r0 - half : r1 + half + 1, c0 - half : c1 + half + 1].all()
        assert not suspect[r0 - half - 2, c0 : c1 + 1].any()
        assert not suspect[r1 + half + 2, c0 : c1 + 1].any()


@pytest.mark.parametrize("mode", ["convolveTemplate", "convolveScience"])
def test_residual_sky_of_the_difference_is_removed(mode):
    """A sky offset and gradient that the kernel fit does not take up (no fitted background)
    stays in the (decorrelated) difference without ``sky`` and is removed with it; the
    sources' pixels are left out of its bins (no dip between them). The decorrelation comes
    first: on the convolved science image's correlated noise the 3 × 3 source test would take
    positive noise for sources and bias the sky low (0.09 σ here)."""
    sci, tmpl = scene_pair(2.4, 2.0, 1.0, 1.0)
    conv, ref = (tmpl, sci) if mode == "convolveTemplate" else (sci, tmpl)
    sigmas, config = basis_for(conv.psf_sigma, ref.psf_sigma, fit_for_background=False)
    t_mi, s_mi = masked(tmpl, crop=20 if tmpl.border else 0), masked(sci)
    yy, xx = np.mgrid[: s_mi.image.shape[0], : s_mi.image.shape[1]] / s_mi.image.shape[0]
    offset = (4.0 + 3.0 * xx - 2.0 * yy).astype(np.float32)
    s_mi = s_mi._replace(image=s_mi.image + offset)
    ignore = bits(DIFFERENCE_SKY_IGNORE)

    def run(sky):
        out = subtract_and_decorrelate(
            t_mi,
            s_mi,
            candidates_for(sci),
            config,
            sigmas,
            mode=mode,
            subtract_background=False,
            sky=sky,
            decorrelation=Decorrelation(
                fill_bits=bits(FILL_BEFORE_FILTERING), ignore_bits=bits(DECORRELATION_IGNORE_PLANES)
            ),
        )
        d = np.asarray(out.difference.image)
        edge = (np.asarray(out.difference.mask) & bit("EDGE")) != 0
        return d, edge, float(out.sky)

    d0, edge, sky0 = run(None)
    d1, _, sky1 = run((32, ignore))
    far = np.hypot(xx[..., None] * xx.shape[0] - sci.x, yy[..., None] * xx.shape[0] - sci.y)
    far = (far.min(axis=-1) > 15) & ~edge
    assert sky0 == 0.0 and np.median(d0[far]) > 3.0  # the offset was there
    assert sky1 == pytest.approx(np.median(d0[far]), abs=0.3)
    sigma = 1.4826 * float(np.median(np.abs(d1[far] - np.median(d1[far]))))
    assert np.median(d1[far]) == pytest.approx(0.0, abs=0.05 * sigma)  # and is gone
    assert np.median(d0[far]) > 0.9 * sigma
