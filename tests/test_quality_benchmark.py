"""A small version of ``experiments/quality_benchmark.py``: hard simulated pairs scored against
their truth; fails if the quality of the difference regresses."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
from jaxdiffim.cli.subtract import file_config
from jaxdiffim.core.convolve import MaskedImage
from jaxdiffim.core.decorrelation import decorrelate, psf_filter
from jaxdiffim.image import FilteredPsf
from jaxdiffim.tasks import AlardLuptonSubtractConfig, AlardLuptonSubtractTask
from jaxdiffim.testing.scenes import simulate_scene
from jaxdiffim.testing.scoring import score_difference


def _scene(kind, seed, size=1024):
    scene = simulate_scene(kind, seed, size)
    scene.truth["input_mask"] = scene.template.mask.array | scene.science.mask.array
    return scene


def _score(scene, result, psf):
    d = result.difference
    return score_difference(
        np.asarray(d.image),
        scene.truth,
        psf,
        1.0,
        np.asarray(d.variance),
        np.asarray(d.mask),
    )


def test_psf_filter_is_the_response_of_the_decorrelation_to_a_point():
    n, k = 128, 21
    yy, xx = np.mgrid[:k, :k] - k // 2
    kernel = np.exp(-0.5 * ((xx - 0.7) ** 2 + yy**2 / 1.5) / 2.0**2)
    kernel *= 0.9 / kernel.sum()
    point = np.zeros((n, n), np.float32)
    point[64, 64] = 1.0
    var_u, var_c = np.full((n, n), 300.0, np.float32), np.full((n, n), 1500.0, np.float32)
    out = decorrelate(
        MaskedImage(jnp.asarray(point), jnp.asarray(var_u), jnp.zeros((n, n), jnp.int32)),
        jnp.asarray(kernel, jnp.float32),
        var_u,
        var_c,
        300.0,
        1500.0,
    )
    size = 2 * k + 1
    filt = np.asarray(psf_filter(jnp.asarray(kernel, jnp.float32), 300.0, 1500.0, size=size))
    h = size // 2
    response = np.asarray(out.image)[64 - h : 64 + h + 1, 64 - h : 64 + h + 1]
    assert filt[h, h] > 1.5  # a strong whitening filter: the test would see a wrong one
    np.testing.assert_allclose(filt, response, rtol=1e-4, atol=2e-5)
    assert filt.sum() == pytest.approx(1.0, abs=1e-5)


def test_the_scorer_reads_the_variables_changes():
    """On the truth difference the variables (bright ones included) read their true change; a
    difference that absorbed a bright variable's change (a kernel fitted to it) reads 0."""
    scene = simulate_scene("moderate", 3, 512, bright_variables=2)  # both bright ones measured
    truth = scene.truth
    truth["input_mask"] = scene.template.mask.array | scene.science.mask.array
    psf = scene.science.psf_callable()
    scores = score_difference(truth["truth_difference"], truth, psf, 1.0)
    assert scores["variable_flux_ratio"] == pytest.approx(1.0, abs=0.05)
    assert scores["variable_flux_ratio_min"] > 0.8
    x, y, change = truth["variables"]
    absorbed = np.array(truth["truth_difference"], float)
    star = np.asarray(psf(x[-1], y[-1]), float)  # the last variable is a bright one
    h = star.shape[0] // 2
    ix, iy = int(round(x[-1])), int(round(y[-1]))
    absorbed[iy - h : iy + h + 1, ix - h : ix + h + 1] -= change[-1] * star
    worst = score_difference(absorbed, truth, psf, 1.0)["variable_flux_ratio_min"]
    assert abs(worst) < 0.2


@pytest.mark.slow
@pytest.mark.parametrize(
    "kind, seed, mode, expected, fp_max, bias_max, constant_max",
    [
        ("moderate", 1, "auto", "convolveTemplate", 10.0, 0.015, 0.01),
        ("sharp", 2, "auto", "convolveScience", 10.0, 0.015, 0.01),
        ("strong", 1, "best", "convolveTemplate", 10.0, 0.02, 0.02),
    ],
)
def test_quality_on_a_hard_scene(kind, seed, mode, expected, fp_max, bias_max, constant_max):
    """Moffat PSFs varying across the field, saturated stars, galaxies, bad columns, a NO_DATA
    wedge, sky gradients, with the CLI's configuration: few false positives, right noise, flat
    constant stars, complete, and transient fluxes right with the difference's own PSF (in
    convolveScience mode the science PSF through the kernel and the decorrelation; the
    unconvolved image's PSF, written before, is 12-23 % off). In the sharp scene the science
    image is the sharper but the noisier one, and 87 transients sit among 420 stars: ``auto``
    convolves the science image, which works only because the kernel sources must agree in
    their template-to-science flux ratio (without that cut: about 40 false positives per Mpix
    and transient fluxes 5-28 % low).

    The limits are today's quality plus a margin (2026-12-01, in the order of the cases: 5.7,
    6.8 and 3.4 false positives per Mpix, transient flux bias +0.9, -0.5 and -1.3 %; before
    the kernel sources kept galaxies and were judged against the local PSF, 8.0, 6.8 and 18.2;
    with the fitted differential background subtracted, as the file path did before, a flux
    bias of -1.9 % in the first)."""
    scene = _scene(kind, seed)
    t, s = scene.template, scene.science
    config = file_config({"mode": mode, "raise_on_bad_subtraction_ratio": False})
    result = alard_lupton_subtract(
        t.maskedImage, s.maskedImage, t.psf_callable(), s.psf_callable(), None, config
    )
    assert result.mode == expected
    scores = _score(scene, result, result.difference_psf)
    truth = score_difference(scene.truth["truth_difference"], scene.truth, s.psf_callable(), 1.0)
    assert truth["false_positives_per_mpix"] <= 2.0
    assert scores["false_positives_per_mpix"] <= fp_max
    assert scores["noise_std"] == pytest.approx(1.0, abs=0.03)
    assert scores["constant_beyond_5sigma"] <= constant_max
    assert abs(scores["transient_flux_bias"]) <= bias_max
    assert scores["completeness"] >= 0.95 * truth["completeness"]
    if result.mode == "convolveScience":  # the PSF written before was the template's
        old = _score(scene, result, t.psf_callable())
        assert abs(old["transient_flux_bias"]) > abs(scores["transient_flux_bias"]) + 0.04


def test_task_sets_the_difference_psf():
    scene = _scene("sharp", 2)
    config = AlardLuptonSubtractConfig()
    config.mode = "convolveScience"
    config.raiseOnBadSubtractionRatio = False
    result = AlardLuptonSubtractTask(config=config).run(scene.template, scene.science)
    psf = result.difference.psf
    assert isinstance(psf, FilteredPsf)
    assert result.matchedTemplate.psf is scene.template.psf
    science_psf = scene.science.psf.computeKernelImage(100.0, 200.0)
    image = psf.computeKernelImage(100.0, 200.0)
    assert image.shape == science_psf.shape
    assert image.sum() == pytest.approx(1.0)
    assert not np.allclose(image, science_psf, atol=1e-3)
    # rebased on the template's PSF (the same filter, no kernel): the science PSF through the
    # kernel to within the kernel's mismatch (a PSF fit of one with the other within 2 %); on
    # the science PSF without the kernel, the other seeing (over 10 % off)
    rebased, wrong = psf.rebased(scene.template.psf), psf.rebased(scene.science.psf)
    for x, y in ((200.0, 200.0), (512.0, 512.0), (820.0, 770.0)):
        a, b, c = (p.computeKernelImage(x, y) for p in (psf, rebased, wrong))
        assert a.shape == b.shape and b.sum() == pytest.approx(1.0)
        assert np.sum(a * b) / np.sum(b * b) == pytest.approx(1.0, abs=0.02)
        assert abs(np.sum(a * c) / np.sum(c * c) - 1.0) > 0.1
