"""Variance-plane rescaling from the measured pixel noise.

Port of meas_algorithms ``ScaleVarianceTask`` (``scaleVariance.py``), which ip_diffim applies to
the science image and the template in ``_prepareInputs`` (ip_diffim.md §2.10):

1. Subtract a coarse background made of ``bin_size`` x ``bin_size`` bins.
2. Keep pixels without any of ``mask_planes``, with a finite image value and a finite, positive
   variance.
3. Pixel-based estimate: ``factor = (0.7413 IQR(image / sqrt(variance)))²``.
4. If that exceeds ``limit``, image-based estimate:
   ``factor = (0.7413 IQR(image))² / median(variance)``; if that exceeds ``limit`` as well, give up
   (:class:`~jaxdiffim.errors.VarianceScalingError`).

The returned factor is what the variance plane should be multiplied by; nothing is modified here.

Background model. meas_algorithms uses afw ``BackgroundMI`` with the ``MEANCLIP`` statistic and
an Akima spline through the bin centres. Here each bin's level is the same afw ``MEANCLIP``
(3 sigma, 3 passes, the first centred on the median with half-width ``3 * 0.7413 * IQR``) of its
good pixels, and the levels are joined by *bilinear* interpolation between bin centres, constant
beyond the outermost centres. Bins without any good pixel take the mean of their neighbouring
bins, repeated until every bin has a level (afw interpolates over such bins along rows and
columns). The background only has to remove large-scale sky structure before taking an
inter-quartile range, so the interpolant makes a negligible difference to the factor.

Deliberate differences:

* the inter-quartile constant is afw's ``0.741301109252802`` (meas_algorithms writes ``0.74``);
* fewer than two usable pixels raise :class:`~jaxdiffim.errors.VarianceScalingError`
  (meas_algorithms silently returns 1), and so does a factor that is not finite and positive
  (e.g. an image without noise, IQR = 0), which would otherwise zero the variance plane;
* quantiles are computed in float32, and above :data:`QUARTILE_PIXELS` good-or-bad pixels on
  a regular subsample (every ``n``-th pixel; the pixel count stays exact).

The statistics run in one jitted function (``bin_size`` static); the image is padded to a
multiple of ``bin_size`` with masked pixels, so any shape works. Quantiles are exact order
statistics found by bisection on the float bit patterns instead of a sort, which XLA does slowly
on CPUs (about 2.5 s for a 4096 x 4096 image on two CPU cores, against 12 s with sorts).
"""

import logging
import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..core import programs
from ..core.masks import bits
from ..core.stats import IQ_TO_STDEV, masked_quantiles
from ..errors import InvalidInputError, VarianceScalingError

__all__ = [
    "DEFAULT_MASK_PLANES",
    "choose_factor",
    "coarse_background",
    "scale_variance",
    "variance_statistics",
]

#: Planes ignored by ``ScaleVarianceTask`` (its ``maskPlanes`` and background ``ignoredPixelMask``).
DEFAULT_MASK_PLANES = ("DETECTED", "DETECTED_NEGATIVE", "BAD", "SAT", "NO_DATA", "INTRP")

_log = logging.getLogger(__name__)

#: Above this many pixels the quartiles come from a regular subsample (every n-th pixel): the
#: inter-quartile range of millions of noise pixels is known to 0.1 % from 2 million of them.
QUARTILE_PIXELS = 1 << 21

#: Pixels per bin from which the clipped mean's starting median and quartiles are taken.
_START_SAMPLES = 256

#: Largest credible variance factor (``ScaleVarianceConfig.limit``).
DEFAULT_LIMIT = 10.0

#: Side of the background bins in pixels (meas_algorithms' default for this task).
DEFAULT_BIN_SIZE = 32


# ---------------------------------------------------------------------------------------------
# jitted core


def _bin_levels(image, good, bin_size, n_sigma=3.0, n_iter=3):
    """afw ``MEANCLIP`` of the good pixels of every bin; NaN for bins without good pixels.

    ``image`` and ``good`` have shape (nby * bin_size, nbx * bin_size); returns (nby, nbx).
    """
    nby, nbx = image.shape[0] // bin_size, image.shape[1] // bin_size

    def blocks(a):
        a = a.reshape(nby, bin_size, nbx, bin_size).transpose(0, 2, 1, 3)
        return a.reshape(nby, nbx, bin_size * bin_size)

    x, g = blocks(image), blocks(good)
    step = max(1, x.shape[-1] // _START_SAMPLES)  # the clip's start from a regular subsample
    start = masked_quantiles(x[..., ::step], g[..., ::step], (0.25, 0.5, 0.75))
    q25, centre, q75 = jnp.moveaxis(start, -1, 0)
    half = n_sigma * IQ_TO_STDEV * (q75 - q25)
    mean = centre
    for _ in range(n_iter):
        keep = g & (jnp.abs(x - centre[..., None]) <= half[..., None])
        nk = jnp.sum(keep, axis=-1)
        mean = jnp.sum(jnp.where(keep, x, 0.0), axis=-1) / jnp.maximum(nk, 1)
        dev = jnp.where(keep, x - mean[..., None], 0.0)
        var = jnp.sum(dev * dev, axis=-1) / jnp.maximum(nk - 1, 1)
        mean = jnp.where(nk > 0, mean, jnp.nan)
        centre, half = mean, n_sigma * jnp.sqrt(var)
    return mean


def _fill_missing(levels):
    """Give bins without a level (NaN) the mean of their defined 3x3 neighbours, repeatedly."""
    nby, nbx = levels.shape

    def step(_, lev):
        ok = jnp.isfinite(lev)
        v = jnp.pad(jnp.where(ok, lev, 0.0), 1)
        w = jnp.pad(ok.astype(lev.dtype), 1)
        vs = sum(v[i : i + nby, j : j + nbx] for i in range(3) for j in range(3))
        ws = sum(w[i : i + nby, j : j + nbx] for i in range(3) for j in range(3))
        return jnp.where(ok, lev, jnp.where(ws > 0, vs / jnp.maximum(ws, 1.0), jnp.nan))

    return jax.lax.fori_loop(0, nby + nbx, step, levels)


def _axis_weights(n_pix, bin_size, extrapolate=False):
    """Static bilinear weights along one axis: lower bin index, upper bin index, fraction.

    Bin ``i`` covers pixels ``[i b, min((i + 1) b, n_pix))``; its centre is the middle of those
    pixels. Beyond the first and last centres the fraction is clipped (constant extrapolation,
    as afw's background), or with ``extrapolate`` the line through the two outer centres goes on
    (a sky gradient is followed up to the image edge).
    """
    n_bins = -(-n_pix // bin_size)
    start = np.arange(n_bins) * bin_size
    end = np.minimum(start + bin_size, n_pix)
    centres = 0.5 * (start + end - 1)
    pix = np.arange(n_pix, dtype=float)
    if n_bins == 1:
        zeros = np.zeros(n_pix, np.int32)
        return zeros, zeros, np.zeros(n_pix)
    i0 = np.clip(np.searchsorted(centres, pix, side="right") - 1, 0, n_bins - 2)
    frac = (pix - centres[i0]) / (centres[i0 + 1] - centres[i0])
    if not extrapolate:
        frac = np.clip(frac, 0.0, 1.0)
    return i0.astype(np.int32), (i0 + 1).astype(np.int32), frac


def _background(image, good, bin_size, extrapolate=False, sample=1):
    """Coarse background of ``image`` (shape (H, W)) from the pixels where ``good`` is True;
    with ``sample`` > 1 (dividing ``bin_size``) from every ``sample``-th pixel along each axis."""
    height, width = image.shape
    pad_y, pad_x = -height % bin_size, -width % bin_size
    sub = np.s_[::sample, ::sample]
    levels = _bin_levels(
        jnp.pad(image, ((0, pad_y), (0, pad_x)))[sub],
        jnp.pad(good, ((0, pad_y), (0, pad_x)))[sub],
        bin_size // sample,
    )
    levels = _fill_missing(levels)
    x0, x1, fx = _axis_weights(width, bin_size, extrapolate)
    y0, y1, fy = _axis_weights(height, bin_size, extrapolate)
    fx, fy = jnp.asarray(fx, image.dtype), jnp.asarray(fy, image.dtype)
    along_x = levels[:, x0] * (1.0 - fx) + levels[:, x1] * fx  # (nby, W)
    return along_x[y0, :] * (1.0 - fy)[:, None] + along_x[y1, :] * fy[:, None]


def _good_pixels(image, variance, mask, bad_bits):
    return ((mask & bad_bits) == 0) & jnp.isfinite(image) & jnp.isfinite(variance) & (variance > 0)


@partial(jax.jit, static_argnames=("bin_size", "extrapolate"))
def _background_jit(image, mask, bad_bits, bin_size, extrapolate):
    good = ((mask & bad_bits) == 0) & jnp.isfinite(image)
    return _background(image, good, bin_size, extrapolate)


def _iqr_statistics(image, variance, mask, bad_bits, bin_size, image_based, flat):
    """Inter-quartile statistics of ``ScaleVarianceTask``: ``iqr(snr)``, or with
    ``image_based`` ``iqr(residual) / sqrt(median(variance))``."""
    if flat:  # the sky was subtracted already
        bg = jnp.zeros_like(image)
    else:
        bg = _background(image, ((mask & bad_bits) == 0) & jnp.isfinite(image), bin_size)
    good = _good_pixels(image, variance, mask, bad_bits).ravel()
    resid = (image - bg).ravel()
    # the quartiles of a regular subsample (every step-th pixel) above QUARTILE_PIXELS pixels
    step = max(1, -(-good.size // QUARTILE_PIXELS))
    good, resid, var = good[::step], resid[::step], variance.ravel()[::step]
    if not image_based:
        snr = resid / jnp.sqrt(jnp.where(good, var, 1.0))
        q25, q75 = masked_quantiles(snr, good, (0.25, 0.75))
        return q75 - q25
    q25, q75 = masked_quantiles(resid, good, (0.25, 0.75))
    (median_var,) = masked_quantiles(var, good, (0.5,))
    return (q75 - q25) / jnp.sqrt(median_var)


def variance_statistics(image, variance, mask, bad_bits, limit, *, bin_size, flat=False):
    """Usable pixels and both variance factors of ``ScaleVarianceTask`` (jittable).

    Parameters
    ----------
    image, variance : Array, shape (H, W)
    mask : Array of int, shape (H, W)
    bad_bits : int
        Bits of the ignored planes.
    limit : float
        Largest credible factor: the image-based factor is computed only above it.
    bin_size : int
        Background bin side (static).
    flat : bool
        The sky was subtracted already: no background (static).

    Returns
    -------
    n : Array of int, shape ()
        Usable pixels.
    pixel_factor, image_factor : Array, shape ()
        ``(0.7413 IQR(image / sqrt(variance)))²`` and ``(0.7413 IQR(image))² / median(variance)``
        (NaN unless ``pixel_factor > limit``).
    """
    n = jnp.sum(_good_pixels(image, variance, mask, bad_bits))
    args = (image, variance, mask, bad_bits, bin_size)
    pixel = (IQ_TO_STDEV * _iqr_statistics(*args, False, flat)) ** 2
    image_factor = jax.lax.cond(
        pixel > limit,
        lambda: (IQ_TO_STDEV * _iqr_statistics(*args, True, flat)) ** 2,
        lambda: jnp.full((), jnp.nan, pixel.dtype),
    )
    return n, pixel, image_factor


_variance_statistics = jax.jit(variance_statistics, static_argnames=("bin_size", "flat"))


def choose_factor(n, pixel_factor, image_factor, limit, mask_planes=DEFAULT_MASK_PLANES):
    """``ScaleVarianceTask``'s choice between the two factors (host side); raises when neither
    is credible.

    Parameters
    ----------
    n, pixel_factor, image_factor
        From :func:`variance_statistics`.
    limit : float
    mask_planes : sequence of str
        The ignored planes (for the messages).

    Returns
    -------
    float

    Raises
    ------
    VarianceScalingError
    """
    if int(n) < 2:
        raise VarianceScalingError(
            f"No usable pixels for variance scaling ({int(n)} found, 2 needed): the others have "
            f"one of the planes {tuple(mask_planes)}, a non-finite value, or a non-positive "
            "variance."
        )
    factor = float(pixel_factor)
    if factor > limit:
        _log.warning(
            "Pixel-based variance rescaling factor (%g) exceeds the limit (%g); trying the "
            "image-based method.",
            factor,
            limit,
        )
        pixel_factor, factor = factor, float(image_factor)
        if factor > limit:
            raise VarianceScalingError(
                f"Variance rescaling factors exceed the limit {limit:g}: pixel-based "
                f"{pixel_factor:.4g}, image-based {factor:.4g}. The variance plane does not "
                "describe the pixel noise: check that it is in the image's units squared "
                "(gain, photometric calibration), and that sources and defects are masked "
                f"with {tuple(mask_planes)}."
            )
    if not (math.isfinite(factor) and factor > 0):
        raise VarianceScalingError(
            f"Variance rescaling factor is {factor}: the selected pixels show no noise "
            "(zero inter-quartile range), so no credible factor exists."
        )
    return factor


# ---------------------------------------------------------------------------------------------
# host-side wrappers


def _prepare(image, variance, mask, mask_planes, bin_size):
    image = jnp.asarray(image)
    mask = jnp.asarray(mask)
    if image.ndim != 2:
        raise InvalidInputError(f"image must be 2-D, got shape {image.shape}.")
    if mask.shape != image.shape:
        raise InvalidInputError(
            f"mask shape {mask.shape} differs from the image shape {image.shape}."
        )
    if not jnp.issubdtype(mask.dtype, jnp.integer):
        raise InvalidInputError(f"mask must be an integer array, got dtype {mask.dtype}.")
    if variance is not None:
        variance = jnp.asarray(variance)
        if variance.shape != image.shape:
            raise InvalidInputError(
                f"variance shape {variance.shape} differs from the image shape {image.shape}."
            )
        if not jnp.issubdtype(variance.dtype, jnp.floating):
            variance = variance.astype(jnp.float32)
    if not jnp.issubdtype(image.dtype, jnp.floating):
        image = image.astype(jnp.float32)
    if isinstance(bin_size, bool) or not isinstance(bin_size, (int, np.integer)) or bin_size < 1:
        raise InvalidInputError(f"bin_size must be a positive integer, got {bin_size!r}.")
    if mask.dtype.itemsize < 4:  # room for every plane's bit
        mask = mask.astype(jnp.int32)
    bad_bits = jnp.asarray(bits(mask_planes), mask.dtype)
    return image, variance, mask, bad_bits, int(bin_size)


def coarse_background(
    image, mask, *, bin_size=DEFAULT_BIN_SIZE, mask_planes=DEFAULT_MASK_PLANES, extrapolate=False
):
    """The background model that :func:`scale_variance` subtracts (see the module docstring).

    Parameters
    ----------
    image : array_like, shape (H, W)
        Image in any flux unit.
    mask : array_like of int, shape (H, W)
        Mask bits (:mod:`jaxdiffim.core.masks`).
    bin_size : int
        Bin side in pixels.
    mask_planes : sequence of str
        Pixels with any of these planes (or a non-finite value) do not contribute.
    extrapolate : bool
        Continue the outer bins' gradient to the edges (else constant beyond the outer centres).

    Returns
    -------
    jax.Array, shape (H, W)
        Background in the image's unit; NaN everywhere if no pixel is usable.
    """
    image, _, mask, bad_bits, bin_size = _prepare(image, None, mask, mask_planes, bin_size)
    return programs.call(
        _background_jit, image, mask, bad_bits, bin_size=bin_size, extrapolate=bool(extrapolate)
    )


def scale_variance(
    image,
    variance,
    mask,
    *,
    bin_size=DEFAULT_BIN_SIZE,
    limit=DEFAULT_LIMIT,
    mask_planes=DEFAULT_MASK_PLANES,
    flat=False,
):
    """Factor by which the variance plane should be multiplied to match the pixel noise.

    Parameters
    ----------
    image : array_like, shape (H, W)
        Image (any flux unit). Not modified.
    variance : array_like, shape (H, W)
        Variance plane in the image's unit squared. Not modified.
    mask : array_like of int, shape (H, W)
        Mask bits (:mod:`jaxdiffim.core.masks`).
    bin_size : int
        Side in pixels of the background bins (meas_algorithms' default for this task: 32).
    limit : float
        Largest credible factor (``ScaleVarianceConfig.limit``).
    mask_planes : sequence of str
        Pixels with any of these planes are ignored, both for the background and the statistics.
    flat : bool
        The image's sky was subtracted already (``subtract_sky``): no background is fitted
        (saves one binned background per image; the statistics are the same up to the
        difference between the two sky models).

    Returns
    -------
    float
        Dimensionless factor; the corrected variance plane is ``factor * variance``.

    Raises
    ------
    InvalidInputError
        Wrong shapes or dtypes, an unknown plane, a non-positive ``bin_size`` or ``limit``.
    VarianceScalingError
        Fewer than two usable pixels; both estimates above ``limit``; or a factor that is not
        finite and positive.
    """
    image, variance, mask, bad_bits, bin_size = _prepare(
        image, variance, mask, mask_planes, bin_size
    )
    limit = float(limit)
    if not limit > 0:
        raise InvalidInputError(f"limit must be positive, got {limit}.")
    stats = _variance_statistics(
        image, variance, mask, bad_bits, jnp.float32(limit), bin_size=bin_size, flat=flat
    )
    return choose_factor(*stats, limit, mask_planes)
