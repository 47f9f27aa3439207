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

Background model: :func:`jaxdiffim.core.background.binned_background` (afw's ``MEANCLIP`` per
bin, bilinear between bin centres instead of afw's Akima spline). The background only has to
remove large-scale sky structure before taking an inter-quartile range, so the interpolant
makes a negligible difference to the factor.

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
from ..core.background import binned_background
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

#: Largest credible variance factor (``ScaleVarianceConfig.limit``).
DEFAULT_LIMIT = 10.0

#: Side of the background bins in pixels (meas_algorithms' default for this task).
DEFAULT_BIN_SIZE = 32


# ---------------------------------------------------------------------------------------------
# jitted core


def _good_pixels(image, variance, mask, bad_bits):
    return ((mask & bad_bits) == 0) & jnp.isfinite(image) & jnp.isfinite(variance) & (variance > 0)


@partial(jax.jit, static_argnames=("bin_size", "extrapolate"))
def _background_jit(image, mask, bad_bits, bin_size, extrapolate):
    good = ((mask & bad_bits) == 0) & jnp.isfinite(image)
    return binned_background(image, good, bin_size, extrapolate)


def _iqr_statistics(image, variance, mask, bad_bits, bin_size, image_based, flat):
    """Inter-quartile statistics of ``ScaleVarianceTask``: ``iqr(snr)``, or with
    ``image_based`` ``iqr(residual) / sqrt(median(variance))``."""
    if flat:  # the sky was subtracted already
        bg = jnp.zeros_like(image)
    else:
        bg = binned_background(image, ((mask & bad_bits) == 0) & jnp.isfinite(image), bin_size)
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
