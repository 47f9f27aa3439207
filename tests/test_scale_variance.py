"""Variance-plane rescaling (jaxdiffim.algorithms.scale_variance, port of ScaleVarianceTask)."""

import logging

import numpy as np
import pytest

from jaxdiffim.algorithms.scale_variance import coarse_background, scale_variance
from jaxdiffim.core.masks import bit
from jaxdiffim.errors import InvalidInputError, VarianceScalingError
from jaxdiffim.testing.synthetic import make_test_image, plant_stars

DETECTED = bit("DETECTED")


def star_field(shape=(200, 300), noise=5.0, seed=3, n_stars=25, sigma=2.0):
    """White noise with a spatially varying (correct) variance, a sky gradient and masked stars.

    The shape is not a multiple of the bin size, so the padding path is exercised.
    """
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    sky = 120.0 + 0.3 * xx - 0.2 * yy + 1e-3 * (xx - width / 2) ** 2
    variance = noise**2 * (1.0 + 0.8 * xx / width)  # the noise level changes across the image
    x = rng.uniform(10, width - 10, n_stars)
    y = rng.uniform(10, height - 10, n_stars)
    stars = plant_stars(shape, x, y, rng.uniform(2e4, 5e4, n_stars), sigma)
    image = sky + stars + rng.normal(size=shape) * np.sqrt(variance)
    mask = np.zeros(shape, np.int32)
    for xi, yi in zip(x, y, strict=True):
        mask[(xx - xi) ** 2 + (yy - yi) ** 2 <= (5 * sigma) ** 2] |= DETECTED
    return image.astype(np.float32), variance.astype(np.float32), mask


def test_correct_variance_gives_one():
    image, variance, mask = star_field()
    assert scale_variance(image, variance, mask) == pytest.approx(1.0, abs=0.05)


def test_underestimated_variance():
    image, variance, mask = star_field()
    factor = scale_variance(image, variance / 1.345, mask)
    assert factor == pytest.approx(1.345, abs=0.05)
    assert isinstance(factor, float)


@pytest.mark.parametrize("rescale", [1.0, 1.345])
def test_make_test_image(rescale):
    """ip_diffim's test recipe: stars, a sky gradient added after the variance plane."""
    scene = make_test_image(
        psf_sigma=2.4,
        noise_level=4.0,
        n_src=40,
        background=lambda x, y: 50.0 + 0.05 * x + 0.1 * y,
    )
    yy, xx = np.mgrid[0 : scene.image.shape[0], 0 : scene.image.shape[1]]
    mask = np.zeros(scene.image.shape, np.int32)
    for x, y in zip(scene.x, scene.y, strict=True):
        mask[(xx - x) ** 2 + (yy - y) ** 2 <= (5 * scene.psf_sigma) ** 2] |= DETECTED
    factor = scale_variance(scene.image, scene.variance / rescale, mask)
    assert factor == pytest.approx(rescale, abs=0.05)


def test_fallback_to_image_based(caplog):
    """A variance plane 9x too small on 40 % of the image.

    The pixel-based estimate (about 2.1) exceeds a limit of 1.5; the image-based one uses the
    median variance, which the 60 % correct pixels set, and gives 1.
    """
    rng = np.random.default_rng(11)
    shape = (200, 300)
    image = (rng.normal(size=shape) * 3.0 + 0.1 * np.arange(shape[1])).astype(np.float32)
    variance = np.full(shape, 9.0, np.float32)
    mask = np.zeros(shape, np.int32)
    low = np.zeros(image.shape, bool)
    low[:, : int(0.4 * image.shape[1])] = True
    variance[low] /= 9.0
    pixel_only = scale_variance(image, variance, mask, limit=100.0)
    assert pixel_only == pytest.approx(2.1, abs=0.2)
    with caplog.at_level(logging.WARNING, logger="jaxdiffim.algorithms.scale_variance"):
        factor = scale_variance(image, variance, mask, limit=1.5)
    assert factor == pytest.approx(1.0, abs=0.05)
    assert any("image-based" in r.message for r in caplog.records)


def test_both_estimates_too_large_raise():
    image, variance, mask = star_field()
    with pytest.raises(VarianceScalingError, match=r"pixel-based 2\d\.\d+, image-based") as info:
        scale_variance(image, variance * 0.05, mask)
    assert "units" in str(info.value)
    # With a larger limit the same data give the factor 20.
    assert scale_variance(image, variance * 0.05, mask, limit=30.0) == pytest.approx(20.0, rel=0.05)


def test_no_good_pixels_raise():
    image, variance, mask = star_field()
    with pytest.raises(VarianceScalingError, match="No usable pixels"):
        scale_variance(image, variance, np.full_like(mask, bit("BAD")))
    with pytest.raises(VarianceScalingError, match="No usable pixels"):
        scale_variance(image, np.zeros_like(variance), mask)
    one = np.full_like(mask, bit("BAD"))
    one[50, 50] = 0
    with pytest.raises(VarianceScalingError, match="1 found"):
        scale_variance(image, variance, one)
    with pytest.raises(VarianceScalingError, match="no noise"):
        scale_variance(np.zeros_like(image), variance, mask)


def test_masked_garbage_is_ignored():
    image, variance, mask = star_field()
    rng = np.random.default_rng(5)
    garbage_image, garbage_var, garbage_mask = image.copy(), variance.copy(), mask.copy()
    planes = ["BAD", "SAT", "NO_DATA", "INTRP", "DETECTED_NEGATIVE"]
    for i, plane in enumerate(planes):
        sel = rng.random(image.shape) < 0.03
        garbage_mask[sel] |= bit(plane)
        garbage_image[sel] = [1e7, -1e7, np.nan, np.inf, 3e4][i]
        garbage_var[sel] = [0.0, np.nan, -1.0, 1e-12, 1e9][i]
    garbage_mask[:40, :50] |= bit("NO_DATA")  # a whole corner, larger than a bin
    garbage_image[:40, :50] = np.nan
    clean = scale_variance(image, variance, garbage_mask)
    assert scale_variance(garbage_image, garbage_var, garbage_mask) == clean
    assert clean == pytest.approx(1.0, abs=0.05)
    # Unmasked non-finite or non-positive variance pixels are skipped as well.
    bad_var = variance.copy()
    bad_var[::7, ::5] = 0.0
    bad_var[3::11, ::3] = np.nan
    assert scale_variance(image, bad_var, mask) == pytest.approx(1.0, abs=0.05)


def test_planes_outside_the_list_are_used():
    image, variance, mask = star_field()
    cr = mask.copy()
    cr[::2] |= bit("CR")  # CR is not in the default list: nothing changes
    assert scale_variance(image, variance, cr) == scale_variance(image, variance, mask)
    # Ignoring CR pixels uses only the odd rows.
    odd = scale_variance(image, variance, cr, mask_planes=("DETECTED", "CR"))
    assert odd == pytest.approx(1.0, abs=0.05)


def test_inputs_not_modified():
    image, variance, mask = star_field()
    copies = [a.copy() for a in (image, variance, mask)]
    scale_variance(image, variance, mask)
    for a, b in zip((image, variance, mask), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_small_mask_dtypes():
    image, variance, mask = star_field()
    ref = scale_variance(image, variance, mask)
    assert scale_variance(image, variance, mask.astype(np.uint16)) == ref
    assert scale_variance(image.astype(np.float64), variance.astype(np.float64), mask) == (
        pytest.approx(ref, rel=1e-6)
    )


def test_background_reproduces_a_plane():
    """Bilinear interpolation between clipped-mean bin levels is exact for a linear sky."""
    height, width = 150, 170
    yy, xx = np.mgrid[0:height, 0:width]
    sky = (10.0 + 0.25 * xx - 0.125 * yy).astype(np.float32)
    mask = np.zeros(sky.shape, np.int32)
    mask[64:96, 64:96] = DETECTED  # one whole bin: filled from its neighbours
    bg = np.asarray(coarse_background(sky, mask, bin_size=32))
    # Between the outermost bin centres (15.5 and the middle of the partial last bins).
    inner = (slice(16, 139), slice(16, 154))
    np.testing.assert_allclose(bg[inner], sky[inner], atol=1e-3)
    # Constant beyond the outer centres.
    np.testing.assert_allclose(bg[:16, 40], bg[15, 40], atol=1e-4)


def test_bad_arguments():
    image, variance, mask = star_field()
    with pytest.raises(InvalidInputError):
        scale_variance(image[:, :10], variance, mask)
    with pytest.raises(InvalidInputError):
        scale_variance(image, variance[:10], mask)
    with pytest.raises(InvalidInputError):
        scale_variance(image, variance, mask.astype(float))
    with pytest.raises(InvalidInputError):
        scale_variance(image[0], variance[0], mask[0])
    with pytest.raises(InvalidInputError):
        scale_variance(image, variance, mask, bin_size=0)
    with pytest.raises(InvalidInputError):
        scale_variance(image, variance, mask, limit=0.0)
    with pytest.raises(InvalidInputError):
        scale_variance(image, variance, mask, mask_planes=("NOT_A_PLANE",))
