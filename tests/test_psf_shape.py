"""PSF moments and sizes, the 'auto' rule, NEA and limiting magnitudes
(jaxdiffim.algorithms.psf_shape)."""

import logging
import math

import astropy.units as u
import numpy as np
import pytest

from jaxdiffim.algorithms.photometry import (
    diffim_limiting_magnitude,
    limiting_magnitude,
    noise_equivalent_area,
)
from jaxdiffim.algorithms.psf_shape import (
    PsfSize,
    choose_convolution_mode,
    evaluate_psf,
    grid_mean_fwhm,
    psf_fwhm,
    psf_fwhm_xy,
    psf_moments,
    psf_size,
)
from jaxdiffim.core.basis import FWHM_PER_SIGMA
from jaxdiffim.errors import InvalidInputError
from jaxdiffim.testing.synthetic import gaussian_stamp


def elliptical_gaussian(size, cov, dx=0.0, dy=0.0):
    """Sampled Gaussian of covariance ``cov`` (2x2, pixels²) centred (dx, dy) off the middle."""
    c = (size - 1) // 2
    y, x = np.mgrid[0:size, 0:size] - c
    x, y = x - dx, y - dy
    ci = np.linalg.inv(cov)
    return np.exp(-0.5 * (ci[0, 0] * x * x + 2 * ci[0, 1] * x * y + ci[1, 1] * y * y))


def rotated_cov(sigma_major, sigma_minor, theta):
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return rot @ np.diag([sigma_major**2, sigma_minor**2]) @ rot.T


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.7])
def test_gaussian_fwhm(sigma):
    size = int(np.ceil(8 * sigma)) | 1
    img = gaussian_stamp(size, sigma)
    assert psf_fwhm(img) == pytest.approx(FWHM_PER_SIGMA * sigma, rel=1e-3)
    fx, fy = psf_fwhm_xy(img)
    assert fx == pytest.approx(FWHM_PER_SIGMA * sigma, rel=1e-3)
    assert fy == pytest.approx(FWHM_PER_SIGMA * sigma, rel=1e-3)
    m = psf_moments(img)
    assert m.ixx == pytest.approx(sigma**2, rel=1e-4)
    assert m.iyy == pytest.approx(sigma**2, rel=1e-4)
    assert abs(m.ixy) < 1e-10
    assert abs(m.xc) < 1e-8 and abs(m.yc) < 1e-8


def test_normalisation_does_not_matter():
    img = gaussian_stamp(21, 2.0)
    assert psf_moments(37.0 * img) == pytest.approx(psf_moments(img), abs=1e-12)


def test_elliptical_rotated_gaussian():
    cov = rotated_cov(3.0, 1.5, 0.5)
    img = elliptical_gaussian(41, cov)
    m = psf_moments(img)
    np.testing.assert_allclose([m.ixx, m.iyy, m.ixy], [cov[0, 0], cov[1, 1], cov[0, 1]], rtol=1e-6)
    assert psf_fwhm(img) == pytest.approx(FWHM_PER_SIGMA * math.sqrt(3.0 * 1.5), rel=1e-6)
    fx, fy = psf_fwhm_xy(img)
    assert fx == pytest.approx(FWHM_PER_SIGMA * math.sqrt(cov[0, 0]), rel=1e-6)
    assert fy == pytest.approx(FWHM_PER_SIGMA * math.sqrt(cov[1, 1]), rel=1e-6)


def test_off_centre_centroid():
    img = elliptical_gaussian(41, rotated_cov(2.5, 2.0, 1.0), dx=1.3, dy=-2.6)
    m = psf_moments(img)
    assert m.xc == pytest.approx(1.3, abs=1e-6)
    assert m.yc == pytest.approx(-2.6, abs=1e-6)
    cov = rotated_cov(2.5, 2.0, 1.0)
    np.testing.assert_allclose([m.ixx, m.iyy, m.ixy], [cov[0, 0], cov[1, 1], cov[0, 1]], rtol=1e-6)


def test_double_gaussian_between_components():
    sigma = 2.0
    eye = np.eye(2)
    img = elliptical_gaussian(61, sigma**2 * eye) + 0.1 * elliptical_gaussian(
        61, (2 * sigma) ** 2 * eye
    )
    fwhm = psf_fwhm(img)
    assert FWHM_PER_SIGMA * sigma < fwhm < FWHM_PER_SIGMA * 2 * sigma
    # The wings make it wider than the core by a clear margin.
    assert fwhm > 1.05 * FWHM_PER_SIGMA * sigma


@pytest.mark.parametrize(
    "bad",
    [
        np.full((21, 21), np.nan),
        -gaussian_stamp(21, 2.0),
        np.zeros((21, 21)),
        np.pad([[1.0]], 5),  # a single pixel: unresolved
        np.ones(21),
        "not an image",
    ],
)
def test_moments_bad_input(bad):
    with pytest.raises(InvalidInputError):
        psf_moments(bad)


def test_inf_pixel_rejected():
    img = gaussian_stamp(21, 2.0)
    img[0, 0] = np.inf
    with pytest.raises(InvalidInputError, match="non-finite"):
        psf_fwhm(img)


def size_of(sigma_x, sigma_y):
    img = elliptical_gaussian(41, np.diag([sigma_x**2, sigma_y**2]))
    return psf_size(img, (0, 0, 100, 100))


def test_auto_rule_truth_table():
    narrow, wide = size_of(2.0, 2.0), size_of(2.4, 2.4)
    assert choose_convolution_mode(narrow, wide) == "convolveTemplate"
    assert choose_convolution_mode(wide, narrow) == "convolveScience"
    assert choose_convolution_mode(narrow, narrow) == "convolveTemplate"
    # Wider in only one axis: the template is still convolved.
    middle = size_of(2.2, 2.2)
    assert choose_convolution_mode(size_of(2.4, 2.0), middle) == "convolveTemplate"
    assert choose_convolution_mode(size_of(2.0, 2.4), middle) == "convolveTemplate"
    # Wider in both: the science image is convolved.
    assert choose_convolution_mode(size_of(2.4, 2.3), middle) == "convolveScience"
    # ... even when its determinant FWHM is larger than the science one.
    science = size_of(2.2, 2.2)
    template = size_of(3.0, 2.1)
    assert template.fwhm > science.fwhm
    assert choose_convolution_mode(template, science) == "convolveTemplate"
    # A grid size compares the mean FWHMs.
    assert wide.fwhm == pytest.approx(FWHM_PER_SIGMA * 2.4, rel=1e-6)
    assert choose_convolution_mode(PsfSize(6.0, 6.0, 6.0, True), wide) == "convolveScience"
    assert choose_convolution_mode(PsfSize(5.5, 5.5, 5.5, True), wide) == "convolveTemplate"
    assert choose_convolution_mode(wide, PsfSize(5.5, 5.5, 5.5, True)) == "convolveScience"
    # With a grid size, the per-axis rule is not used: T = (3.0, 2.1) vs S = 2.2 compares
    # the determinant FWHM of T with S's.
    grid_science = PsfSize(science.fwhm, science.fwhm, science.fwhm, True)
    assert choose_convolution_mode(template, grid_science) == "convolveScience"


def test_psf_size_at_position():
    img = elliptical_gaussian(41, np.diag([2.0**2, 2.5**2]))
    s = psf_size(img, (10, 20, 200, 100))
    assert not s.from_grid
    assert s.fwhm_x == pytest.approx(FWHM_PER_SIGMA * 2.0, rel=1e-6)
    assert s.fwhm_y == pytest.approx(FWHM_PER_SIGMA * 2.5, rel=1e-6)
    assert s.fwhm == pytest.approx(FWHM_PER_SIGMA * math.sqrt(5.0), rel=1e-6)


def test_evaluate_psf_callable_and_array():
    img = gaussian_stamp(21, 2.0)
    seen = []

    def psf(x, y):
        seen.append((x, y))
        return img

    np.testing.assert_array_equal(evaluate_psf(psf, 3.5, 7.0), img)
    assert seen == [(3.5, 7.0)]
    out = evaluate_psf(img, 0.0, 0.0)
    out[0, 0] = 99.0  # a copy
    assert img[0, 0] != 99.0
    with pytest.raises(InvalidInputError):
        evaluate_psf(lambda x, y: np.ones(5), 0.0, 0.0)


def test_grid_fallback(caplog):
    img = gaussian_stamp(31, 2.4)
    bbox = (12345, 67890, 256, 256)
    centre = (12345 + 127.5, 67890 + 127.5)
    calls = []

    def psf(x, y):
        calls.append((x, y))
        if (x, y) == centre:
            raise RuntimeError("cannot evaluate at the average position")
        return img

    with caplog.at_level(logging.INFO, logger="jaxdiffim.algorithms.psf_shape"):
        size = psf_size(psf, bbox)
    assert size.from_grid
    expected = psf_fwhm(img)
    assert size.fwhm == pytest.approx(expected, rel=0, abs=1e-7)
    assert size.fwhm_x == size.fwhm_y == size.fwhm
    assert calls[0] == centre and len(calls) == 1 + 100
    assert any(
        "Unable to evaluate PSF at the average position; evaluating it on a grid" in r.message
        and r.levelno == logging.INFO
        and r.name == "jaxdiffim.algorithms.psf_shape"
        for r in caplog.records
    )
    xs = sorted({c[0] for c in calls[1:]})
    assert xs[0] == pytest.approx(12345 + 0.05 * 256)
    assert xs[-1] == pytest.approx(12345 + 255 - 0.05 * 256)


def test_grid_skips_failing_points():
    narrow, wide = gaussian_stamp(31, 2.0), gaussian_stamp(31, 3.0)

    def psf(x, y):
        if x < 50:
            raise ValueError("off the chip")
        return narrow if y < 50 else wide

    mean = grid_mean_fwhm(psf, (0, 0, 100, 100), grid=4, buffer=0.0)
    # x in {0, 33, 66, 99}: two columns usable; y in the same set: half narrow, half wide.
    assert mean == pytest.approx(0.5 * (psf_fwhm(narrow) + psf_fwhm(wide)), rel=1e-12)


def test_grid_nothing_evaluable():
    def psf(x, y):
        raise RuntimeError("nowhere")

    with pytest.raises(InvalidInputError, match="any of the 10x10"):
        grid_mean_fwhm(psf, (0, 0, 50, 50))
    with pytest.raises(InvalidInputError):
        psf_size(psf, (0, 0, 50, 50))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"bbox": (0, 0, 0, 10)},
        {"bbox": (0, 0, 10)},
        {"bbox": (0, 0, 10, 10), "grid": 0},
        {"bbox": (0, 0, 10, 10), "buffer": 0.5},
    ],
)
def test_grid_bad_arguments(kwargs):
    with pytest.raises(InvalidInputError):
        grid_mean_fwhm(gaussian_stamp(21, 2.0), **kwargs)


@pytest.mark.parametrize("sigma", [1.5, 2.0, 3.0])
def test_noise_equivalent_area(sigma):
    img = gaussian_stamp(int(10 * sigma) | 1, sigma)
    assert noise_equivalent_area(img) == pytest.approx(4 * np.pi * sigma**2, rel=0.01)
    assert noise_equivalent_area(5.0 * img) == pytest.approx(noise_equivalent_area(img))
    with pytest.raises(InvalidInputError):
        noise_equivalent_area(np.zeros((5, 5)))


def test_limiting_magnitude_formula():
    cov = rotated_cov(2.8, 2.2, 0.3)
    img = elliptical_gaussian(41, cov)
    m = psf_moments(img)
    area = np.pi * np.sqrt(m.ixx * m.iyy)
    expected = 31.2 - 2.5 * np.log10(5.0 * np.sqrt(area))
    assert limiting_magnitude(img, 31.2) == pytest.approx(expected, abs=1e-6)
    expected3 = 27.0 - 2.5 * np.log10(3.0 * np.sqrt(area))
    assert limiting_magnitude(img, 27.0, nsigma=3.0) == pytest.approx(expected3, abs=1e-6)
    # The fallback FWHM is ignored while the PSF is measurable.
    assert limiting_magnitude(img, 31.2, fallback_fwhm=10.0) == pytest.approx(expected, abs=1e-6)


def test_limiting_magnitude_fallback_and_nan():
    fwhm = 2.0 * FWHM_PER_SIGMA
    expected = 30.0 - 2.5 * np.log10(5.0 * np.sqrt(np.pi * (fwhm / 2) ** 2))
    assert limiting_magnitude(None, 30.0, fallback_fwhm=fwhm) == pytest.approx(expected, abs=1e-6)
    # Moments that fail (here an unresolved single-pixel PSF) take the same path.
    point = np.pad([[1.0]], 5)
    assert limiting_magnitude(point, 30.0, fallback_fwhm=fwhm) == pytest.approx(expected, abs=1e-6)
    assert math.isnan(limiting_magnitude(None, 30.0))
    assert math.isnan(limiting_magnitude(point, 30.0))


@pytest.mark.parametrize(
    "args",
    [
        (None, np.nan),
        (None, 30.0, 0.0),
        (None, 30.0, 5.0, -1.0),
        (np.ones(5), 30.0),
    ],
)
def test_limiting_magnitude_bad_input(args):
    with pytest.raises(InvalidInputError):
        limiting_magnitude(*args)


def test_diffim_limiting_magnitude():
    m_s, m_t = 24.3, 25.1
    f_s = (m_s * u.ABmag).to_value(u.nJy)
    f_t = (m_t * u.ABmag).to_value(u.nJy)
    expected = (np.sqrt(f_s**2 + f_t**2) * u.nJy).to_value(u.ABmag)
    assert diffim_limiting_magnitude(m_s, m_t) == pytest.approx(expected, abs=1e-6)
    # Equal limits: 2.5 log10(sqrt(2)) brighter.
    assert diffim_limiting_magnitude(25.0, 25.0) == pytest.approx(
        25.0 - 1.25 * np.log10(2.0), abs=1e-12
    )
    assert diffim_limiting_magnitude(m_s, np.nan) == m_s
    assert math.isnan(diffim_limiting_magnitude(np.nan, m_t))
