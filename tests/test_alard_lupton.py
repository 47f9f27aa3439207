"""Ports of ip_diffim's test_subtractTask (AlardLuptonSubtractTask) on the facade-free API.

Scenes are ip_diffim's makeTestImage (``jaxdiffim.testing.synthetic``); "sources" is the truth
catalogue
with fluxErr 20, as in ip_diffim. Statistics follow ip_diffim: MEANCLIP (3σ, 3 passes) and a
plain std over unmasked pixels; star footprints (radius 5σ) stand in for the DETECTED plane that
ip_diffim's test images get from detection.
"""

import numpy as np
import pytest
from utils import footprints, masked, meanclip, scene_pair

from jaxdiffim import (
    BadSubtractionError,
    InsufficientKernelSourcesError,
    InvalidInputError,
    MaskedImage,
    NoWorkFound,
)
from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
from jaxdiffim.algorithms.config import SubtractionConfig
from jaxdiffim.algorithms.inputs import update_masks
from jaxdiffim.core.masks import MASK_PLANES, bit, bits
from jaxdiffim.testing.synthetic import gaussian_stamp, make_test_image

# ip_diffim's _setup_subtraction: no edge restriction for kernel sources
BASE = SubtractionConfig(restrict_kernel_edge_sources=False)
STATS_MASK = bits(("EDGE", "BAD", "NO_DATA", "DETECTED", "DETECTED_NEGATIVE"))


def psf(sigma):
    return gaussian_stamp(31, sigma)


def catalogue(scene, keep=None):
    idx = np.arange(len(scene.x)) if keep is None else np.asarray(keep)
    crop = scene.border
    return {
        "x": scene.x[idx] - crop,
        "y": scene.y[idx] - crop,
        "flux": scene.flux[idx],
        "flux_err": np.full(idx.size, 20.0),
    }


def detected(scene):
    """The scene as a MaskedImage cut to the science grid, DETECTED set on star footprints.

    ip_diffim's makeTestImage runs source detection, so its images carry DETECTED; the
    variance rescaling relies on it to leave the stars out.
    """
    mi = masked(scene, crop=scene.border)
    b = scene.border
    det = footprints(scene)[b : det_end(scene), b : det_end(scene)]
    return mi._replace(mask=np.where(det, bit("DETECTED"), 0).astype(np.int32))


def det_end(scene):
    return scene.image.shape[0] - scene.border


def run(sci, tmpl, config=BASE, sources=None, tmpl_mi=None, sci_mi=None):
    tmpl_mi = detected(tmpl) if tmpl_mi is None else tmpl_mi
    sci_mi = detected(sci) if sci_mi is None else sci_mi
    sources = catalogue(sci) if sources is None else sources
    return alard_lupton_subtract(
        tmpl_mi, sci_mi, psf(tmpl.psf_sigma), psf(sci.psf_sigma), sources, config
    )


def stats_pixels(result, scene):
    d = result.difference
    good = (np.asarray(d.mask) & STATS_MASK) == 0
    return good & ~footprints(scene) & np.isfinite(np.asarray(d.image))


def test_allowed_config_modes():
    for mode in ("auto", "convolveScience", "convolveTemplate"):
        assert SubtractionConfig(mode=mode).mode == mode
    with pytest.raises(InvalidInputError, match="auto.*convolveTemplate.*convolveScience"):
        SubtractionConfig(mode="aotu")


def test_equal_images():
    """Both PSFs σ 2.4, noise 1: mean ≈ 0 (5σ/√N) and std ≈ √2 σ (10 %), all finite."""
    sci, tmpl = scene_pair(2.4, 2.4)
    res = run(sci, tmpl)
    d = np.asarray(res.difference.image)
    assert np.isfinite(d).all() and np.isfinite(np.asarray(res.difference.variance)).all()
    good = stats_pixels(res, sci)
    mean, _ = meanclip(d[good])
    assert abs(mean) < 5 * 1.0 / np.sqrt(d.size)
    assert np.std(d[good]) == pytest.approx(np.sqrt(2.0), rel=0.1)
    assert res.mode == "convolveTemplate"
    assert res.metrics["nPsfSources"] >= 3


@pytest.mark.parametrize(
    "sci_sigma,tmpl_sigma,expected",
    [(2.4, 2.0, "convolveTemplate"), (2.0, 2.4, "convolveScience")],
)
def test_auto_mode_is_exactly_the_explicit_mode(sci_sigma, tmpl_sigma, expected):
    sci, tmpl = scene_pair(sci_sigma, tmpl_sigma)
    auto = run(sci, tmpl, BASE.replace(mode="auto"))
    explicit = run(sci, tmpl, BASE.replace(mode=expected))
    assert auto.mode == expected
    for a, b in zip(auto.difference, explicit.difference, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def check_noise(res, sci, sigma_s, sigma_t):
    d = np.asarray(res.difference.image)
    v = np.asarray(res.difference.variance)
    good = stats_pixels(res, sci)
    mean, _ = meanclip(d[good])
    assert abs(mean) < 5 * (sigma_s + sigma_t) / np.sqrt(good.sum())
    assert meanclip(v[good])[0] == pytest.approx(sigma_s**2 + sigma_t**2, rel=0.1)
    assert np.std(d[good]) == pytest.approx(np.sqrt(sigma_s**2 + sigma_t**2), rel=0.1)
    assert res.metrics["scaleScienceVarianceFactor"] == pytest.approx(1.0, abs=0.05)
    assert res.metrics["scaleTemplateVarianceFactor"] == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize(("sigma_s", "sigma_t"), [(1.0, 1.0), (1.0, 0.1), (0.1, 0.1)])
def test_template_better(sigma_s, sigma_t):
    sci, tmpl = scene_pair(2.4, 2.0, sigma_s, sigma_t)
    res = run(sci, tmpl)
    check_noise(res, sci, sigma_s, sigma_t)
    assert np.isfinite(np.asarray(res.difference.image)).all()


@pytest.mark.parametrize(("sigma_s", "sigma_t"), [(1.0, 1.0), (1.0, 0.1), (0.1, 0.1)])
def test_science_better(sigma_s, sigma_t):
    sci, tmpl = scene_pair(2.0, 2.4, sigma_s, sigma_t)
    res = run(sci, tmpl, BASE.replace(mode="convolveScience"))
    check_noise(res, sci, sigma_s, sigma_t)


def test_symmetry():
    """run(T, S) and run(S, T) with the roles swapped give D₂ ≈ -D₁ (auto mode)."""
    sigma = 1.0
    sci = make_test_image(psf_sigma=2.0, noise_level=sigma, noise_seed=6)
    tmpl = make_test_image(psf_sigma=2.4, noise_level=sigma, noise_seed=7)
    config = BASE.replace(mode="auto")
    one = run(sci, tmpl, config)
    two = run(tmpl, sci, config)
    delta = np.asarray(two.difference.image) - np.asarray(one.difference.image)
    good = stats_pixels(one, sci) & stats_pixels(two, sci)
    assert abs(meanclip(delta[good])[0]) < 5 * 2 * sigma / np.sqrt(good.sum())
    assert np.std(delta[good]) == pytest.approx(2 * np.sqrt(2) * sigma, rel=0.1)


def coverage_pair(coverage):
    sci = make_test_image(psf_sigma=2.4, noise_level=1.0, noise_seed=6, n_src=80, size=(400, 400))
    tmpl = make_test_image(
        psf_sigma=2.0,
        noise_level=1.0,
        noise_seed=7,
        n_src=80,
        size=(400, 400),
        template_border=20,
    )
    t = detected(tmpl)
    col = int(400 * coverage)  # ip_diffim: template columns >= int(400 cov + 20) in its frame
    image = np.asarray(t.image).copy()
    mask = np.asarray(t.mask).copy()
    image[:, col:] = 0.0
    mask[:, col:] |= bit("NO_DATA")
    return sci, tmpl, MaskedImage(image, t.variance, mask)


@pytest.mark.parametrize("coverage", [0.09, 0.15])
def test_incomplete_template_coverage_raises(coverage):
    sci, tmpl, t_mi = coverage_pair(coverage)
    with pytest.raises(NoWorkFound, match="template covers"):
        run(sci, tmpl, tmpl_mi=t_mi)


def test_coverage_is_checked_before_a_failing_psf_without_catalogue():
    sci, tmpl, t_mi = coverage_pair(0.09)

    def broken(x, y):
        raise RuntimeError("no PSF here")

    with pytest.raises(NoWorkFound, match="template covers"):
        alard_lupton_subtract(t_mi, detected(sci), broken, broken, None, BASE)


def test_incomplete_template_coverage_runs():
    sci, tmpl, t_mi = coverage_pair(0.7)
    res = run(sci, tmpl, tmpl_mi=t_mi)
    assert res.metrics["templateCoveragePercent"] == pytest.approx(70.0, abs=0.5)
    nodata = (np.asarray(res.difference.mask) & bit("NO_DATA")) != 0
    assert nodata[:, 280:].all() and not nodata[:, :250].any()


def test_clear_template_mask():
    sci, tmpl = scene_pair(2.4, 2.0)
    t = detected(tmpl)
    s = detected(sci)
    every = sum(1 << b for b in MASK_PLANES.values())
    t_mask = np.asarray(t.mask).copy()
    t_mask[50:75, 150:175] = every
    s_mask = np.asarray(s.mask).copy()
    s_mask[10:20, 200:210] = bit("DETECTED") | bit("DETECTED_NEGATIVE") | bit("CR")
    t_orig, s_orig = t_mask.copy(), s_mask.copy()
    res = run(sci, tmpl, tmpl_mi=t._replace(mask=t_mask), sci_mi=s._replace(mask=s_mask))
    np.testing.assert_array_equal(t_mask, t_orig)  # inputs untouched
    np.testing.assert_array_equal(s_mask, s_orig)
    m = np.asarray(res.difference.mask)
    for name in ("DETECTED", "DETECTED_NEGATIVE"):
        assert not (m & bit(name)).any()
    matched = np.asarray(res.matched_template.mask)[50:75, 150:175]
    for name in ("NO_DATA", "BAD", "HIGH_VARIANCE", "SAT_TEMPLATE"):
        assert (matched & bit(name)).all()
    for name in ("SAT", "CR", "INTRP", "DETECTED"):
        assert not (np.asarray(res.matched_template.mask) & bit(name)).any()
    # jaxdiffim addition: SUSPECT on what the kernel spreads from the preserved bad pixels, and
    # nowhere else (the template's own SUSPECT is cleared)
    h = res.kernel_config.kernel_size // 2
    suspect = (np.asarray(res.matched_template.mask) & bit("SUSPECT")) != 0
    spread = np.zeros_like(suspect)
    spread[50 - h : 75 + h, 150 - h : 175 + h] = True
    assert suspect[50:75, 150:175].all() and not (suspect & ~spread).any()
    for name in MASK_PLANES:
        if name in ("DETECTED", "DETECTED_NEGATIVE"):
            continue
        assert np.count_nonzero(m & bit(name)) >= np.count_nonzero(s_orig & bit(name))


def test_fake_mask_plane_propagation():
    """INJECTED == science FAKE and INJECTED_TEMPLATE == template FAKE exactly (no smearing)."""
    sci, tmpl = scene_pair(2.4, 2.0)
    t = detected(tmpl)
    s = detected(sci)
    t_mask = np.asarray(t.mask).copy()
    s_mask = np.asarray(s.mask).copy()
    s_mask[100:103, 60:63] |= bit("FAKE")
    t_mask[150:153, 190:193] |= bit("FAKE")
    res = run(sci, tmpl, tmpl_mi=t._replace(mask=t_mask), sci_mi=s._replace(mask=s_mask))
    m = np.asarray(res.difference.mask)
    np.testing.assert_array_equal((m & bit("INJECTED")) != 0, (s_mask & bit("FAKE")) != 0)
    np.testing.assert_array_equal((m & bit("INJECTED_TEMPLATE")) != 0, (t_mask & bit("FAKE")) != 0)


def test_few_sources():
    sci, tmpl = scene_pair(2.4, 2.0, n_src=10)
    with pytest.raises(InsufficientKernelSourcesError, match="1"):
        run(sci, tmpl, sources=catalogue(sci, keep=[0]))


@pytest.mark.parametrize("sigma", [2.4, 2.0, 2.8])
def test_order_equal_images(sigma):
    """Equal PSFs, noise 0.1: both modes give D ≈ S - T (atol 5σ) and agree within 10σ."""
    noise = 0.1
    sci = make_test_image(psf_sigma=sigma, noise_level=noise, noise_seed=6)
    tmpl = make_test_image(psf_sigma=sigma, noise_level=noise, noise_seed=7)
    a = run(sci, tmpl, BASE.replace(mode="convolveTemplate"))
    b = run(sci, tmpl, BASE.replace(mode="convolveScience"))
    plain = sci.image - tmpl.image
    inner = (slice(25, -25), slice(25, -25))
    for res in (a, b):
        np.testing.assert_allclose(np.asarray(res.difference.image)[inner], plain[inner], atol=0.5)
    np.testing.assert_allclose(
        np.asarray(a.difference.image)[inner], np.asarray(b.difference.image)[inner], atol=1.0
    )


def scale_variance_pair(mode):
    """ip_diffim's test_scale_variance_*: science noise 4, template noise 2."""
    if mode == "convolveTemplate":
        sci = make_test_image(psf_sigma=2.4, noise_level=4.0, noise_seed=6)
        tmpl = make_test_image(psf_sigma=2.0, noise_level=2.0, noise_seed=7, template_border=20)
    else:
        sci = make_test_image(psf_sigma=2.0, noise_level=4.0, noise_seed=6)
        tmpl = make_test_image(psf_sigma=2.4, noise_level=2.0, noise_seed=7, template_border=20)
    return sci, tmpl


@pytest.mark.parametrize("mode", ["convolveTemplate", "convolveScience"])
@pytest.mark.parametrize("rescaled", [False, True])
@pytest.mark.parametrize("decorrelate", [False, True])
@pytest.mark.parametrize("scale", [False, True])
def test_scale_variance(mode, rescaled, decorrelate, scale):
    """Variance factors ≈ 1 (or 1.345 after dividing both planes by 1.345), and the difference's
    variance plane ≈ unconvolved + (decorrelated: unconvolved other image; else the matched
    image's) variance, within 10 %."""
    sci, tmpl = scale_variance_pair(mode)
    t, s = detected(tmpl), detected(sci)
    factor = 1.345 if rescaled else 1.0
    t = t._replace(variance=t.variance / np.float32(factor))
    s = s._replace(variance=s.variance / np.float32(factor))
    config = BASE.replace(mode=mode, do_decorrelation=decorrelate, do_scale_variance=scale)
    res = run(sci, tmpl, config, tmpl_mi=t, sci_mi=s)
    applied = factor if scale else 1.0
    if scale:
        assert res.metrics["scaleScienceVarianceFactor"] == pytest.approx(factor, abs=0.05)
        assert res.metrics["scaleTemplateVarianceFactor"] == pytest.approx(factor, abs=0.05)
    good = stats_pixels(res, sci)

    def mean(a):
        return meanclip(np.asarray(a)[good])[0]

    if mode == "convolveTemplate":
        unconvolved, other, matched = s, t, res.matched_template
    else:
        unconvolved, other, matched = t, s, res.matched_science
    expected = mean(unconvolved.variance) * applied
    expected += mean(other.variance) * applied if decorrelate else mean(matched.variance)
    assert mean(res.difference.variance) == pytest.approx(expected, rel=0.1)


def test_metadata_metrics():
    """Limiting magnitudes by the quadrature rule; footprint ratio < 0.02 for a good template;
    variable stars raise the ratio, and BadSubtractionError (carrying the result) is raised
    above the configured threshold.

    The ratio is measured on all 20 input stars, as in ip_diffim. ip_diffim's own bad case, a
    σ 9.5 template deconvolved to σ 2.8, gives 0.080 here (0.31 before decorrelation; ip_diffim
    asserts > 0.12, newer versions > 0.17) against 0.009 for the good template: the
    decorrelation filter damps the high-frequency residual of the ill-posed deconvolution
    kernel. At 9x the good ratio it still separates the two, which is asserted.
    """
    sci = make_test_image(psf_sigma=2.8, noise_level=1.0, noise_seed=6)
    good_t = make_test_image(psf_sigma=2.4, noise_level=0.25, noise_seed=7, template_border=20)
    res = run(sci, good_t)
    m = res.metrics
    assert m["differenceFootprintRatioMean"] < 0.02

    def maglim(sigma):
        return 31.4 - 2.5 * np.log10(5.0 * np.sqrt(np.pi * sigma**2))

    def njy(mag):
        return 10 ** (-0.4 * (mag - 31.4))

    assert m["scienceLimitingMagnitude"] == pytest.approx(maglim(2.8), abs=1e-3)
    assert m["templateLimitingMagnitude"] == pytest.approx(maglim(2.4), abs=1e-3)
    combined = -2.5 * np.log10(
        np.hypot(njy(m["scienceLimitingMagnitude"]), njy(m["templateLimitingMagnitude"]))
    )
    assert m["diffimLimitingMagnitude"] == pytest.approx(31.4 + combined, abs=1e-6)

    wide_t = make_test_image(psf_sigma=9.5, noise_level=0.25, noise_seed=7, template_border=20)
    wide = run(sci, wide_t, BASE.replace(raise_on_bad_subtraction_ratio=False))
    assert wide.metrics["differenceFootprintRatioMean"] > 0.06
    assert wide.metrics["differenceFootprintRatioMean"] > 5 * m["differenceFootprintRatioMean"]

    # a third of the stars faded to 20 % in the template: the kernel fits the others and the
    # variable stars stay in the difference
    sci40 = make_test_image(psf_sigma=2.8, noise_level=1.0, noise_seed=6, n_src=40)
    flux = sci40.flux.copy()
    flux[::3] *= 0.2
    varied_t = make_test_image(
        psf_sigma=2.4,
        noise_level=0.25,
        noise_seed=7,
        template_border=20,
        x=sci40.x,
        y=sci40.y,
        flux=flux,
    )
    varied = run(sci40, varied_t)  # ratio 0.18: below the default limit 0.2
    assert varied.metrics["differenceFootprintRatioMean"] > 0.1
    strict = BASE.replace(bad_subtraction_ratio_threshold=0.1)
    with pytest.raises(BadSubtractionError, match="footprint residual ratio") as info:
        run(sci40, varied_t, strict)
    assert info.value.result.metrics["differenceFootprintRatioMean"] > 0.1


def test_template_sat_becomes_sat_template():
    t = np.zeros((8, 8), np.int32)
    t[2, 3] = bit("SAT")  # only SAT, SAT_TEMPLATE not pre-set
    t[5, 5] = bit("FAKE")
    new_t, _ = update_masks(t, np.zeros((8, 8), np.int32))
    assert new_t[2, 3] == bit("SAT_TEMPLATE")
    assert new_t[5, 5] == bit("INJECTED_TEMPLATE")
    assert np.count_nonzero(new_t) == 2


def test_convolve_science_background_is_science_sky():
    a, b, c = 20.0, 0.02, 0.01

    def sky(xx, yy):
        return a + b * xx + c * yy

    sci = make_test_image(psf_sigma=2.0, noise_level=1.0, noise_seed=6, background=sky)
    tmpl = make_test_image(psf_sigma=2.4, noise_level=1.0, noise_seed=7, template_border=20)
    config = BASE.replace(
        mode="convolveScience", do_subtract_background=True, do_decorrelation=False
    )
    res = run(sci, tmpl, config)
    assert res.mode == "convolveScience"
    h, w = res.background.shape
    yy, xx = np.mgrid[0:h, 0:w]
    inner = (slice(30, -30), slice(30, -30))
    np.testing.assert_allclose(res.background[inner], sky(xx, yy)[inner], atol=0.5)
    # documented identity: difference = matched_science - matched_template - background
    ident = (
        np.asarray(res.matched_science.image)
        - np.asarray(res.matched_template.image)
        - res.background
    )
    d = np.asarray(res.difference.image)
    np.testing.assert_allclose(d[inner], ident[inner], atol=1e-2)


def test_invalid_pixels_and_variances_are_flagged_and_reported(caplog):
    """NaN/Inf pixels become NO_DATA and a NaN, Inf, zero or negative variance BAD, counted per
    input in the metrics and a warning; no output pixel is NaN without a mask bit."""
    sci, tmpl = scene_pair(2.4, 2.0)
    sci_mi, tmpl_mi = detected(sci), detected(tmpl)
    image, var = np.array(sci_mi.image), np.array(sci_mi.variance)
    image[10, 10:13] = [np.nan, np.inf, -np.inf]
    var[50, 50:54] = [np.nan, 0.0, -1.0, np.inf]
    t_var = np.array(tmpl_mi.variance)
    t_var[70, 70] = 0.0
    with caplog.at_level("WARNING"):
        res = run(
            sci,
            tmpl,
            sci_mi=sci_mi._replace(image=image, variance=var),
            tmpl_mi=tmpl_mi._replace(variance=t_var),
        )
    m = res.metrics
    assert (m["scienceFlaggedNoData"], m["scienceFlaggedBadVariance"]) == (3, 4)
    assert (m["templateFlaggedNoData"], m["templateFlaggedBadVariance"]) == (0, 1)
    assert (
        "science: 3 non-finite" in caplog.text
        and "science: 4 pixels with a variance" in caplog.text
    )
    assert "template: 1 pixels with a variance" in caplog.text
    mask = np.asarray(res.difference.mask)
    assert np.all(mask[10, 10:13] & bit("NO_DATA"))
    assert np.all(mask[50, 50:54] & bits(("BAD", "NO_DATA")))
    d, v = np.asarray(res.difference.image), np.asarray(res.difference.variance)
    unflagged = (mask & bits(("BAD", "NO_DATA", "EDGE"))) == 0
    assert np.isfinite(d[unflagged]).all() and np.isfinite(v[unflagged]).all()
    assert (v[unflagged] > 0).all()
