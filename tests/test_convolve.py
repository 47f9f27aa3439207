"""Whole-image convolution (jaxdiffim.core.convolve) against independent numpy/scipy truth.

Convention (afw orientation, a correlation with zeros beyond the image):
``out(y, x) = sum_{v,u} K[v + h, u + h] * in(y + v, x + u)``, ``h = k // 2``, kernels indexed
``[row=y, col=x]``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxdiffim.core import convolve
from jaxdiffim.core.convolve import MaskedImage, spatial_factors

EDGE = 1 << 4
NO_DATA = 1 << 8

# Whole functions under jit: one XLA compile per call signature is far cheaper than eager
# op-by-op dispatch (and is how the pipeline runs them).
fft_correlate = jax.jit(convolve.fft_correlate, static_argnames="tile")
correlate_terms = jax.jit(convolve.correlate_terms, static_argnames="tile")
apply_kernel = jax.jit(
    convolve.apply_kernel, static_argnames=("bbox", "order", "kind", "origin", "tile")
)
dilate_mask = jax.jit(convolve.dilate_mask, static_argnames="kernel_size")


# ---------------------------------------------------------------- independent truth helpers


def brute_correlate(image, kernel):
    """Plain numpy correlation with zero padding: sum over kernel offsets of shifted images."""
    image = np.asarray(image, np.float64)
    kernel = np.asarray(kernel, np.float64)
    height, width = image.shape
    k = kernel.shape[0]
    h = k // 2
    padded = np.zeros((height + 2 * h, width + 2 * h))
    padded[h : h + height, h : h + width] = image
    out = np.zeros((height, width))
    for v in range(-h, h + 1):
        for u in range(-h, h + 1):
            out += kernel[v + h, u + h] * padded[h + v : h + v + height, h + u : h + u + width]
    return out


def cheb_order1(x, y, bbox):
    """Chebyshev order-1 terms (1, x', y') written by hand over Box2D(bbox)."""
    x0, y0, x1, y1 = bbox
    xn = (x - (x0 + x1) / 2.0) / ((x1 - x0 + 1) / 2.0)
    yn = (y - (y0 + y1) / 2.0) / ((y1 - y0 + 1) / 2.0)
    return np.array([1.0, xn, yn])


def brute_apply(image, variance, kernels, bbox):
    """Per-pixel local kernel K(x, y) = sum_k f_k(x, y) K_k applied on the interior only.

    Returns image/variance arrays with NaN on the border (which has no truth here).
    """
    height, width = image.shape
    k = kernels.shape[-1]
    h = k // 2
    out = np.full((height, width), np.nan)
    out_var = np.full((height, width), np.nan)
    for y in range(h, height - h):
        for x in range(h, width - h):
            f = cheb_order1(x, y, bbox)
            local = np.tensordot(f, kernels, axes=1)
            patch = image[y - h : y + h + 1, x - h : x + h + 1]
            vpatch = variance[y - h : y + h + 1, x - h : x + h + 1]
            out[y, x] = np.sum(local * patch)
            out_var[y, x] = np.sum(local**2 * vpatch)
    return out, out_var


def brute_dilate(mask, k):
    """OR of the mask over the k x k window around every pixel, by explicit pixel loops."""
    height, width = mask.shape
    h = k // 2
    out = np.zeros_like(mask)
    for y in range(height):
        for x in range(width):
            acc = 0
            for yy in range(max(0, y - h), min(height, y + h + 1)):
                for xx in range(max(0, x - h), min(width, x + h + 1)):
                    acc |= int(mask[yy, xx])
            out[y, x] = acc
    return out


def brute_dilate_sparse(mask, k):
    """Same as :func:`brute_dilate`, looping only over the set pixels (faster for big k)."""
    h = k // 2
    out = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask), strict=True):
        out[max(0, y - h) : y + h + 1, max(0, x - h) : x + h + 1] |= mask[y, x]
    return out


def border(shape, h):
    rows = np.zeros(shape[0], bool)
    cols = np.zeros(shape[1], bool)
    rows[:h] = rows[shape[0] - h :] = True
    cols[:h] = cols[shape[1] - h :] = True
    return rows[:, None] | cols[None, :]


def random_kernels(rng, n, k):
    """Asymmetric random kernels (a flip or transpose would change the answer)."""
    kern = rng.normal(size=(n, k, k))
    kern[:, 0, -1] += 3.0  # strongly asymmetric corner
    kern[:, 1, 0] -= 2.0
    return kern


# ---------------------------------------------------------------- 1. fft_correlate / tiling


def test_brute_force_helper_matches_scipy():
    """Sanity of the truth itself: scipy.ndimage.correlate with constant zero padding."""
    rng = np.random.default_rng(0)
    img = rng.normal(size=(13, 17))
    kern = random_kernels(rng, 1, 5)[0]
    np.testing.assert_allclose(
        brute_correlate(img, kern),
        ndimage.correlate(img, kern, mode="constant", cval=0.0),
        rtol=1e-12,
        atol=1e-12,
    )
    # and a single delta offset: K[h + 1, h + 2] = 1 reads in(y + 1, x + 2)
    delta = np.zeros((5, 5))
    delta[3, 4] = 1.0
    expected = np.zeros_like(img)
    expected[:-1, :-2] = img[1:, 2:]
    np.testing.assert_array_equal(brute_correlate(img, delta), expected)


@pytest.mark.parametrize("k", [5, 7])
def test_fft_correlate_float64_interior_and_border(k):
    rng = np.random.default_rng(1)
    img = rng.normal(size=(40, 57))
    kern = random_kernels(rng, 1, k)[0]
    expected = brute_correlate(img, kern)
    with jax.enable_x64(True):
        got = np.asarray(fft_correlate(img, kern))
    assert got.dtype == np.float64
    h = k // 2
    edge = border(img.shape, h)
    np.testing.assert_allclose(got[~edge], expected[~edge], rtol=0, atol=1e-10)
    np.testing.assert_allclose(got[edge], expected[edge], rtol=0, atol=1e-10)
    # the flipped kernel must NOT agree (the test can see the orientation)
    flipped = brute_correlate(img, kern[::-1, ::-1])
    assert np.max(np.abs(flipped - got)) > 1.0


def test_fft_correlate_delta_offset():
    """A single off-centre delta shifts the image exactly: out(y, x) = in(y - 1, x + 2)."""
    rng = np.random.default_rng(2)
    img = rng.normal(size=(40, 57))
    kern = np.zeros((5, 5))
    kern[1, 4] = 1.0  # v = -1, u = +2
    expected = np.zeros_like(img)
    expected[1:, :-2] = img[:-1, 2:]
    with jax.enable_x64(True):
        got = np.asarray(fft_correlate(img, kern))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_fft_correlate_float32():
    rng = np.random.default_rng(3)
    img = rng.normal(size=(40, 57)).astype(np.float32)
    kern = random_kernels(rng, 1, 5)[0].astype(np.float32)
    expected = brute_correlate(img, kern)
    got = np.asarray(fft_correlate(img, kern))
    assert got.dtype == np.float32
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("shape", "k", "tile"),
    [((40, 57), 5, 16), ((64, 66), 5, 16), ((64, 64), 7, 20), ((37, 29), 7, 17)],
)
def test_correlate_terms_multi_tile_matches_default_and_truth(shape, k, tile):
    """Overlap-save with small tiles (size not a multiple of the valid width) is exact."""
    rng = np.random.default_rng(4)
    n_q = 3
    img = rng.normal(size=shape)
    kern = random_kernels(rng, n_q, k)
    wy = rng.normal(size=(n_q, shape[0]))
    wx = rng.normal(size=(n_q, shape[1]))
    h = k // 2
    assert shape[0] % (tile - 2 * h) or shape[1] % (tile - 2 * h)
    with jax.enable_x64(True):
        small = np.asarray(correlate_terms(img, kern, wy, wx, tile=tile))
        default = np.asarray(correlate_terms(img, kern, wy, wx))
    np.testing.assert_allclose(small, default, rtol=0, atol=1e-10)
    expected = sum(
        wy[q][:, None] * wx[q][None, :] * brute_correlate(img, kern[q]) for q in range(n_q)
    )
    np.testing.assert_allclose(small, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("shape", "tile"), [((40, 57), 16), ((30, 30), 64)])
def test_correlate_terms_zero_reads_flagged_pixels_as_zero(shape, tile):
    """``zero`` (the bad pixels) gives the correlation of the zero-filled image, whatever the
    values there (NaN included), in several bands and in one."""
    rng = np.random.default_rng(41)
    img = rng.normal(size=shape)
    zero = rng.random(shape) < 0.05
    zero[0, :3] = True  # at the border too
    kern = random_kernels(rng, 2, 5)
    wy, wx = rng.normal(size=(2, shape[0])), rng.normal(size=(2, shape[1]))
    with jax.enable_x64(True):
        filled = np.asarray(correlate_terms(np.where(zero, 0.0, img), kern, wy, wx, tile=tile))
        nan_there = np.where(zero, np.nan, img)
        got = np.asarray(
            jax.jit(convolve.correlate_terms, static_argnames="tile")(
                nan_there, kern, wy, wx, tile=tile, zero=zero
            )
        )
    np.testing.assert_allclose(got, filled, rtol=0, atol=1e-12)
    expected = sum(
        wy[q][:, None] * wx[q][None, :] * brute_correlate(np.where(zero, 0.0, img), kern[q])
        for q in range(2)
    )
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_fft_correlate_small_tile():
    rng = np.random.default_rng(5)
    img = rng.normal(size=(64, 64))
    kern = random_kernels(rng, 1, 5)[0]
    with jax.enable_x64(True):
        got = np.asarray(fft_correlate(img, kern, tile=16))
    np.testing.assert_allclose(got, brute_correlate(img, kern), rtol=0, atol=1e-10)


def test_fft_correlate_default_multi_tile():
    """An image larger than one default (256) tile, not a multiple of the valid width."""
    rng = np.random.default_rng(15)
    img = rng.normal(size=(300, 270))
    kern = random_kernels(rng, 1, 7)[0]
    with jax.enable_x64(True):
        got = np.asarray(fft_correlate(img, kern))
    np.testing.assert_allclose(got, brute_correlate(img, kern), rtol=0, atol=1e-10)


# ---------------------------------------------------------------- 2. correlate_terms


@pytest.mark.parametrize("k", [5, 7])
def test_correlate_terms_float64(k):
    rng = np.random.default_rng(6)
    n_q = 4
    img = rng.normal(size=(40, 57))
    kern = random_kernels(rng, n_q, k)
    wy = rng.normal(size=(n_q, 40))
    wx = rng.normal(size=(n_q, 57))
    expected = np.zeros((40, 57))
    for q in range(n_q):
        corr = brute_correlate(img, kern[q])
        for y in range(40):
            for x in range(57):
                expected[y, x] += wy[q][y] * wx[q][x] * corr[y, x]
    with jax.enable_x64(True):
        got = np.asarray(correlate_terms(img, kern, wy, wx))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


def test_correlate_terms_float32():
    rng = np.random.default_rng(7)
    n_q = 3
    img = rng.normal(size=(40, 57)).astype(np.float32)
    kern = random_kernels(rng, n_q, 5).astype(np.float32)
    wy = rng.normal(size=(n_q, 40)).astype(np.float32)
    wx = rng.normal(size=(n_q, 57)).astype(np.float32)
    expected = sum(
        wy[q].astype(np.float64)[:, None] * wx[q][None, :] * brute_correlate(img, kern[q])
        for q in range(n_q)
    )
    got = np.asarray(correlate_terms(img, kern, wy, wx))
    assert got.dtype == np.float32
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * scale)
    got_tiled = np.asarray(correlate_terms(img, kern, wy, wx, tile=16))
    np.testing.assert_allclose(got_tiled, expected, rtol=1e-5, atol=1e-5 * scale)


# ---------------------------------------------------------------- 3-5. apply_kernel


def _scene(rng, shape=(40, 57)):
    img = rng.normal(size=shape) + 10.0
    var = rng.uniform(0.5, 2.0, size=shape)
    return img, var


@pytest.mark.parametrize(("k", "tile"), [(5, None), (7, None), (5, 16)])
def test_apply_kernel_spatially_varying(k, tile):
    rng = np.random.default_rng(8)
    height, width = 40, 57
    img, var = _scene(rng)
    mask = np.zeros((height, width), np.int32)
    kern = random_kernels(rng, 3, k) * np.array([1.0, 0.5, 0.3])[:, None, None]
    bbox = (0, 0, width - 1, height - 1)
    with jax.enable_x64(True):
        out = apply_kernel(MaskedImage(img, var, mask), kern, bbox, 1, "chebyshev1", tile=tile)
        out_img, out_var, out_mask = (np.asarray(a) for a in out)
    assert out_img.dtype == np.float64 and out_var.dtype == np.float64
    assert np.all(np.isfinite(out_img)) and np.all(np.isfinite(out_var))
    exp_img, exp_var = brute_apply(img, var, kern, bbox)
    h = k // 2
    edge = border((height, width), h)
    np.testing.assert_allclose(out_img[~edge], exp_img[~edge], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out_var[~edge], exp_var[~edge], rtol=1e-10, atol=1e-10)
    # border keeps the input values and gets EDGE; the interior does not get EDGE
    np.testing.assert_array_equal(out_img[edge], img[edge])
    np.testing.assert_array_equal(out_var[edge], var[edge])
    assert np.all(out_mask[edge] & EDGE)
    assert not np.any(out_mask[~edge] & EDGE)
    assert np.array_equal(out_mask, np.where(edge, EDGE, 0))


def test_apply_kernel_spatial_variation_matters():
    """Guard: the truth above really varies over the image (terms 1 and 2 are not negligible)."""
    rng = np.random.default_rng(8)
    img, var = _scene(rng)
    kern = random_kernels(rng, 3, 5)
    bbox = (0, 0, 56, 39)
    full, _ = brute_apply(img, var, kern, bbox)
    const, _ = brute_apply(img, var, kern * np.array([1.0, 0.0, 0.0])[:, None, None], bbox)
    interior = ~border(img.shape, 2)
    assert np.max(np.abs(full - const)[interior]) > 1.0


def test_apply_kernel_float32():
    rng = np.random.default_rng(9)
    height, width = 40, 57
    img, var = _scene(rng)
    img = img.astype(np.float32)
    var = var.astype(np.float32)
    kern = (random_kernels(rng, 3, 5) * np.array([1.0, 0.5, 0.3])[:, None, None]).astype(np.float32)
    bbox = (0, 0, width - 1, height - 1)
    out = apply_kernel(
        MaskedImage(img, var, np.zeros((height, width), np.int32)), kern, bbox, 1, "chebyshev1"
    )
    out_img, out_var = np.asarray(out.image), np.asarray(out.variance)
    assert out_img.dtype == np.float32
    exp_img, exp_var = brute_apply(img.astype(np.float64), var.astype(np.float64), kern, bbox)
    edge = border((height, width), 2)
    scale = np.max(np.abs(exp_img[~edge]))
    np.testing.assert_allclose(out_img[~edge], exp_img[~edge], rtol=1e-5, atol=1e-5 * scale)
    vscale = np.max(np.abs(exp_var[~edge]))
    np.testing.assert_allclose(out_var[~edge], exp_var[~edge], rtol=1e-5, atol=1e-5 * vscale)


@pytest.mark.parametrize("k", [5, 7])
def test_apply_kernel_mask_propagation(k):
    rng = np.random.default_rng(10)
    height, width = 40, 57
    img, var = _scene(rng)
    mask = np.zeros((height, width), np.int32)
    # scattered pixels with different bits, some near and some on the border
    for (y, x), b in [
        ((10, 12), 0),
        ((11, 14), 1),
        ((25, 40), 3),
        ((0, 3), 5),
        ((39, 56), 1),
        ((20, 1), 3),
        ((33, 30), 5),
        ((33, 30), 0),
    ]:
        mask[y, x] |= 1 << b
    kern = random_kernels(rng, 3, k)
    bbox = (0, 0, width - 1, height - 1)
    with jax.enable_x64(True):
        out = apply_kernel(MaskedImage(img, var, mask), kern, bbox, 1, "chebyshev1")
    out_mask = np.asarray(out.mask)
    expected = brute_dilate(mask, k)
    expected[border((height, width), k // 2)] |= EDGE
    np.testing.assert_array_equal(out_mask, expected)
    assert out_mask.dtype == mask.dtype


@pytest.mark.parametrize("k", [5, 7])
def test_apply_kernel_non_finite_inputs(k):
    rng = np.random.default_rng(11)
    height, width = 40, 57
    h = k // 2
    img, var = _scene(rng)
    mask = np.zeros((height, width), np.int32)
    mask[30, 8] = 1 << 3  # an unrelated bit, should just be dilated
    p_nan, p_inf = (12, 15), (27, 44)
    img_bad = img.copy()
    var_bad = var.copy()
    img_bad[p_nan] = np.nan
    var_bad[p_inf] = np.inf
    kern = random_kernels(rng, 3, k) * np.array([1.0, 0.5, 0.3])[:, None, None]
    bbox = (0, 0, width - 1, height - 1)
    with jax.enable_x64(True):
        out = apply_kernel(MaskedImage(img_bad, var_bad, mask), kern, bbox, 1, "chebyshev1")
        out_img, out_var, out_mask = (np.asarray(a) for a in out)
    assert np.all(np.isfinite(out_img)) and np.all(np.isfinite(out_var))

    footprint = np.zeros((height, width), bool)
    for y, x in (p_nan, p_inf):
        footprint[y - h : y + h + 1, x - h : x + h + 1] = True
    np.testing.assert_array_equal((out_mask & NO_DATA) != 0, footprint)
    edge = border((height, width), h)
    expected_mask = brute_dilate(mask, k) | np.where(footprint, NO_DATA, 0)
    expected_mask[edge] |= EDGE
    np.testing.assert_array_equal(out_mask, expected_mask)

    # the bad input pixels count as 0 in both image and variance
    img0 = img.copy()
    var0 = var.copy()
    for p in (p_nan, p_inf):
        img0[p] = 0.0
        var0[p] = 0.0
    exp_img, exp_var = brute_apply(img0, var0, kern, bbox)
    good = ~edge
    np.testing.assert_allclose(out_img[good], exp_img[good], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out_var[good], exp_var[good], rtol=1e-10, atol=1e-10)
    # and away from the footprints, the same as convolving the clean image
    clean_img, clean_var = brute_apply(img, var, kern, bbox)
    away = good & ~footprint
    np.testing.assert_allclose(out_img[away], clean_img[away], rtol=0, atol=1e-10)
    np.testing.assert_allclose(out_var[away], clean_var[away], rtol=1e-10, atol=1e-10)
    # the footprints themselves differ from the clean result (the zeros are really used)
    assert np.max(np.abs(out_img - clean_img)[footprint & good]) > 1e-3


# ---------------------------------------------------------------- 6. dilate_mask


def test_brute_dilate_helpers_agree():
    rng = np.random.default_rng(12)
    mask = np.where(rng.random((20, 23)) < 0.05, 1 << rng.integers(0, 9, (20, 23)), 0)
    mask = mask.astype(np.int32)
    for k in (1, 3, 5):
        np.testing.assert_array_equal(brute_dilate(mask, k), brute_dilate_sparse(mask, k))


@pytest.mark.parametrize("k", [1, 3, 5, 15, 17, 21, 33, 51, 91])
def test_dilate_mask(k):
    rng = np.random.default_rng(13)
    shape = (40, 57)
    sparse = rng.random(shape) < 0.02
    bits = 1 << rng.integers(0, 9, shape)
    mask = np.where(sparse, bits, 0).astype(np.int32)
    mask[0, 0] |= 1 << 2  # a corner
    mask[39, 56] |= 1 << 7  # the opposite corner
    got = np.asarray(dilate_mask(mask, k))
    assert got.dtype == np.int32
    expected = brute_dilate(mask, k) if k <= 5 else brute_dilate_sparse(mask, k)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("k", [2, 16, 18, 34, 64])
def test_dilate_mask_even_window_is_reduce_windows(k):
    """Even sides (a halo of kernel size + 2 FWHM can be even) keep ``reduce_window``'s SAME
    window, ``(k - 1) // 2`` pixels before and ``k // 2`` after, on the wide-window path too."""
    rng = np.random.default_rng(14)
    mask = np.where(rng.random((40, 57)) < 0.03, 1 << rng.integers(0, 9, (40, 57)), 0)
    mask = jnp.asarray(mask, jnp.int32)
    zero = np.zeros((), np.int32)
    rows = jax.lax.reduce_window(mask, zero, jax.lax.bitwise_or, (1, k), (1, 1), "SAME")
    expected = jax.lax.reduce_window(rows, zero, jax.lax.bitwise_or, (k, 1), (1, 1), "SAME")
    np.testing.assert_array_equal(np.asarray(dilate_mask(mask, k)), np.asarray(expected))


@pytest.mark.parametrize("dtype", [np.uint8, np.int32])
def test_dilate_mask_with_a_traced_side(dtype):
    """A traced side (one program for every seeing) gives the static side's window, odd and
    even sides alike, up to the bound; 0 gives nothing, sides beyond the bound are clipped."""
    rng = np.random.default_rng(15)
    mask = np.where(rng.random((70, 61)) < 0.01, 1 << rng.integers(0, 7, (70, 61)), 0)
    mask = jnp.asarray(mask, dtype)
    traced = jax.jit(lambda m, k: convolve.dilate_mask(m, k, 63))
    for k in (1, 2, 3, 6, 7, 8, 21, 32, 45, 63):
        expected = np.asarray(dilate_mask(mask, k))
        np.testing.assert_array_equal(np.asarray(traced(mask, np.int32(k))), expected)
    assert not np.asarray(traced(mask, np.int32(0))).any()
    clipped = np.asarray(traced(mask, np.int32(200)))
    np.testing.assert_array_equal(clipped, np.asarray(dilate_mask(mask, 63)))
    assert traced._cache_size() == 1


# ---------------------------------------------------------------- 7. spatial_factors


@pytest.mark.parametrize("kind", ["chebyshev1", "polynomial"])
@pytest.mark.parametrize("bbox", [(-3, 5, 53, 44), (-10, 0, 99, 79)])
def test_spatial_factors_origin(kind, bbox):
    shape = (40, 57)
    origin = (-3.0, 5.0)
    with jax.enable_x64(True):
        fy, fx = spatial_factors(shape, 2, bbox, kind, origin)
        fy, fx = np.asarray(fy), np.asarray(fx)
    assert fy.shape == (6, 40) and fx.shape == (6, 57)
    x0, y0, x1, y1 = bbox
    xs = np.arange(shape[1]) + origin[0]  # array column j sits at x = j - 3
    ys = np.arange(shape[0]) + origin[1]  # array row i sits at y = i + 5
    xn = (xs - (x0 + x1) / 2.0) / ((x1 - x0 + 1) / 2.0)
    yn = (ys - (y0 + y1) / 2.0) / ((y1 - y0 + 1) / 2.0)
    if kind == "chebyshev1":
        sq = lambda t: 2 * t * t - 1  # noqa: E731
    else:
        sq = lambda t: t * t  # noqa: E731
    X, Y = xn[None, :], yn[:, None]
    one = np.ones((40, 57))
    expected = [one, X * one, Y * one, sq(X) * one, X * Y, sq(Y) * one]
    for q in range(6):
        got = fy[q][:, None] * fx[q][None, :]
        np.testing.assert_allclose(got, expected[q], rtol=1e-12, atol=1e-12)
    if bbox == (-3, 5, 53, 44):
        # the image exactly covers the box: first/last pixel centres sit half a pixel inside ±1
        np.testing.assert_allclose(fx[1][[0, -1]], [-1 + 1 / 57, 1 - 1 / 57], rtol=1e-12)
        np.testing.assert_allclose(fy[2][[0, -1]], [-1 + 1 / 40, 1 - 1 / 40], rtol=1e-12)


def test_apply_kernel_with_origin():
    """apply_kernel evaluates the spatial model at array pixel + origin."""
    rng = np.random.default_rng(14)
    height, width = 40, 57
    img, var = _scene(rng)
    kern = random_kernels(rng, 3, 5)
    origin = (-3.0, 5.0)
    bbox = (-3, 5, width - 4, height + 4)
    with jax.enable_x64(True):
        out = apply_kernel(
            MaskedImage(img, var, np.zeros((height, width), np.int32)),
            kern,
            bbox,
            1,
            "chebyshev1",
            origin=origin,
        )
        out_img = np.asarray(out.image)
    # truth in the bbox frame: shift the bbox back by the origin instead of the pixels
    shifted = (bbox[0] - origin[0], bbox[1] - origin[1], bbox[2] - origin[0], bbox[3] - origin[1])
    exp_img, _ = brute_apply(img, var, kern, shifted)
    edge = border((height, width), 2)
    np.testing.assert_allclose(out_img[~edge], exp_img[~edge], rtol=0, atol=1e-10)
