"""Smooth backgrounds on a grid of bins: the sky of an image, with its sources left out.

:func:`binned_background` is the coarse background of meas_algorithms' ``ScaleVarianceTask``
(ip_diffim.md §2.10): each ``bin_size`` × ``bin_size`` bin's level is afw's ``MEANCLIP``
(3σ, 3 passes, the first centred on the median with half-width ``3 × 0.7413 IQR``) of its good
pixels, and the levels are joined by *bilinear* interpolation between bin centres (afw uses an
Akima spline), constant beyond the outermost centres unless ``extrapolate``. Bins without any
good pixel take the mean of their neighbouring bins, repeated until every bin has a level (afw
interpolates over such bins along rows and columns).

:func:`source_free_sky` (a jaxdiffim addition) measures the background twice, the second time
without the pixels of sources: the sky of an image whose sky was not subtracted
(``SubtractionConfig.subtract_sky``), and the residual sky of the difference image.

Everything here is jittable; bin sizes are static.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .convolve import dilate_mask
from .stats import IQ_TO_STDEV, masked_quantiles

__all__ = [
    "SKY_SOURCE_GROW",
    "SKY_SOURCE_SNR",
    "binned_background",
    "residual_sky",
    "source_free_sky",
    "source_pixels",
]

#: Pixels per bin from which the clipped mean's starting median and quartiles are taken.
_START_SAMPLES = 256
#: Pixels from which the spread of the 3 × 3 means is measured (a regular subsample).
_SPREAD_SAMPLES = 1 << 18
#: Significance (σ of a 3 × 3 mean) above which pixels count as sources for the sky.
SKY_SOURCE_SNR = 3.0
#: Side of the square that grows the source pixels left out of the sky.
SKY_SOURCE_GROW = 9


def _bin_levels(image, good, bin_size, n_sigma=3.0, n_iter=3):
    """afw ``MEANCLIP`` of the good pixels of every bin; NaN for bins without good pixels.

    ``image`` and ``good`` have shape (nby * bin_size, nbx * bin_size); returns (nby, nbx).
    The clip's sums run over axes 1 and 3 of the (nby, bin_size, nbx, bin_size) view: a
    transpose to one axis per bin costs XLA a slow fusion with the pixels' producers.
    """
    nby, nbx = image.shape[0] // bin_size, image.shape[1] // bin_size
    x = image.reshape(nby, bin_size, nbx, bin_size)
    g = good.reshape(nby, bin_size, nbx, bin_size)
    n = bin_size * bin_size
    step = max(1, n // _START_SAMPLES)  # the clip's start from a regular subsample

    def subsample(a):  # every step-th pixel of each bin in row-major order: (nby, nbx, n / step)
        return a.transpose(0, 2, 1, 3).reshape(nby, nbx, n)[..., ::step]

    start = masked_quantiles(subsample(x), subsample(g), (0.25, 0.5, 0.75))
    q25, centre, q75 = jnp.moveaxis(start, -1, 0)
    half = n_sigma * IQ_TO_STDEV * (q75 - q25)
    mean = centre

    def per_bin(a):  # (nby, nbx) -> broadcastable against the 4-D view
        return a[:, None, :, None]

    for _ in range(n_iter):
        keep = g & (jnp.abs(x - per_bin(centre)) <= per_bin(half))
        nk = jnp.sum(keep, axis=(1, 3))
        mean = jnp.sum(jnp.where(keep, x, 0.0), axis=(1, 3)) / jnp.maximum(nk, 1)
        dev = jnp.where(keep, x - per_bin(mean), 0.0)
        var = jnp.sum(dev * dev, axis=(1, 3)) / jnp.maximum(nk - 1, 1)
        mean = jnp.where(nk > 0, mean, jnp.nan)
        centre, half = mean, n_sigma * jnp.sqrt(var)
    return mean


def fill_missing(levels):
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


def binned_background(image, good, bin_size, extrapolate=False, sample=1):
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
    levels = fill_missing(levels)
    x0, x1, fx = _axis_weights(width, bin_size, extrapolate)
    y0, y1, fy = _axis_weights(height, bin_size, extrapolate)
    fx, fy = jnp.asarray(fx, image.dtype), jnp.asarray(fy, image.dtype)
    along_x = levels[:, x0] * (1.0 - fx) + levels[:, x1] * fx  # (nby, W)
    return along_x[y0, :] * (1.0 - fy)[:, None] + along_x[y1, :] * fy[:, None]


def source_pixels(image, variance, good, sky_bin):
    """Pixels of sources: 3 × 3 means of ``image`` minus its binned background (every second
    pixel along each axis when ``sky_bin`` is even) above :data:`SKY_SOURCE_SNR` σ of their
    noise, grown by :data:`SKY_SOURCE_GROW` pixels. The σ is the variance plane's, times the
    measured spread (0.7413 IQR) of the means in those units, so that correlated noise (a
    convolved image) is not taken for sources.

    Parameters
    ----------
    image, variance : Array, shape (H, W)
        Image (any unit) and its variance (unit²).
    good : Array of bool, shape (H, W)
        Pixels that may enter the background's bins.
    sky_bin : int
        Bin side in pixels (static).

    Returns
    -------
    Array of bool, shape (H, W)
    """
    sample = 2 if sky_bin % 2 == 0 else 1  # a quarter of each bin's pixels is plenty
    sky = binned_background(image, good, sky_bin, extrapolate=True, sample=sample)
    sigma = jnp.sqrt(jnp.where(variance > 0, variance, jnp.inf))
    resid = jnp.where(good, image - sky, 0.0)
    box = jax.lax.reduce_window(
        resid, np.zeros((), resid.dtype), jax.lax.add, (3, 3), (1, 1), "SAME"
    )
    z = (box / 3.0) / sigma  # the 3 × 3 mean in units of its noise, for white noise
    # correlated noise (a convolved image) spreads z wider: measure its spread
    step = max(1, -(-z.size // _SPREAD_SAMPLES))
    q25, q75 = masked_quantiles(z.ravel()[::step], good.ravel()[::step], (0.25, 0.75))
    spread = jnp.clip(IQ_TO_STDEV * (q75 - q25), 0.5, 10.0)
    spread = jnp.where(jnp.isfinite(spread), spread, 1.0)
    hot = (z > SKY_SOURCE_SNR * spread).astype(jnp.uint8)
    return dilate_mask(hot, SKY_SOURCE_GROW) != 0


def source_free_sky(image, variance, good, sky_bin, sources=None):
    """The sky of ``image``: its binned background without the pixels of its sources
    (:func:`source_pixels`) nor those of ``sources``.

    One pass leaves the light of sources in the bins: a transient raised the science sky under
    itself by about 1 % of its flux (its photometry in the difference was 1-1.5 % low).

    Parameters
    ----------
    image, variance : Array, shape (H, W)
        Image (any unit) and its variance (unit²).
    good : Array of bool, shape (H, W)
        Pixels that may enter the bins.
    sky_bin : int
        Bin side in pixels (static).
    sources : Array of bool, shape (H, W), optional
        More pixels to leave out (for a difference image: the sources of the images it was
        made of, whose unmatched wings are no sky).

    Returns
    -------
    Array, shape (H, W)
        The sky in the image's unit; NaN where no bin of the image has a good pixel.
    """
    sample = 2 if sky_bin % 2 == 0 else 1
    good = good & ~source_pixels(image, variance, good, sky_bin)
    if sources is not None:
        good = good & ~sources
    return binned_background(image, good, sky_bin, extrapolate=True, sample=sample)


def residual_sky(image, variance, mask, unconvolved, bin_size, ignored):
    """The residual sky of a difference image (0 where it cannot be measured).

    :func:`source_free_sky` of ``image`` that also leaves out the pixels of the sources of
    ``unconvolved`` (the image that was not convolved): their wings that the kernel did not
    match are no sky.

    Parameters
    ----------
    image, variance : Array, shape (H, W)
        The difference and its variance.
    mask : Array of int, shape (H, W)
        The difference's mask.
    unconvolved : MaskedImage
        The image that was not convolved (same shape).
    bin_size : int
        Bin side in pixels (static).
    ignored : int
        Mask bits of pixels left out (of both images).

    Returns
    -------
    Array, shape (H, W)
    """
    good = ((mask & ignored) == 0) & jnp.isfinite(image) & (variance > 0)
    u_good = ((unconvolved.mask & ignored) == 0) & jnp.isfinite(unconvolved.image)
    u_good &= unconvolved.variance > 0
    sources = source_pixels(
        jnp.where(u_good, unconvolved.image, 0.0), unconvolved.variance, u_good, bin_size
    )
    level = source_free_sky(jnp.where(good, image, 0.0), variance, good, bin_size, sources)
    return jnp.where(jnp.isfinite(level), level, 0.0)
