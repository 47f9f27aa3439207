"""Source footprints for images that come without a ``DETECTED`` mask plane.

ip_diffim's inputs carry ``DETECTED`` from single-frame processing, and ScaleVariance
(:mod:`jaxdiffim.algorithms.scale_variance`) leaves those pixels out. For an image without it (a
FITS file from elsewhere, a simulation) :func:`source_footprints` makes the equivalent: afw's
5-sigma detection of both polarities on the PSF-matched filter, grown by ``nSigmaToGrow`` PSF
sigmas.
"""

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from ..core.masks import bits
from .scale_variance import DEFAULT_MASK_PLANES, _background

__all__ = ["footprint_filter", "footprint_map", "source_footprints"]


def source_footprints(
    image, variance, mask, psf, *, threshold=5.0, n_sigma_to_grow=2.4, flat=False
):
    """Pixels of detected sources, for images that come without a ``DETECTED`` plane.

    ip_diffim's inputs carry ``DETECTED`` from single-frame processing, and ScaleVariance leaves
    those pixels out. For an image without it (a FITS file from elsewhere, a simulation) this
    makes the equivalent: the PSF-matched-filter S/N after :func:`coarse_background`,
    ``|S/N| > threshold`` (both polarities, as afw's 5-sigma detection), grown by
    ``n_sigma_to_grow`` PSF sigmas (afw's ``nSigmaToGrow``).

    Parameters
    ----------
    image, variance : array_like, shape (H, W)
    mask : array_like of int, shape (H, W)
    psf : array_like, shape (k, k)
        PSF image (normalised here).
    threshold, n_sigma_to_grow : float
    flat : bool
        The image's sky was subtracted already: skip the background.

    Returns
    -------
    numpy.ndarray of bool, shape (H, W)
    """
    p, size = footprint_filter(psf, n_sigma_to_grow)
    hit = footprint_map(
        jnp.asarray(image, jnp.float32),
        jnp.asarray(variance, jnp.float32),
        jnp.asarray(mask, jnp.int32),
        jnp.asarray(p, jnp.float32),
        jnp.float32(threshold),
        size,
        bool(flat),
    )
    return np.asarray(hit) != 0


def footprint_filter(psf, n_sigma_to_grow=2.4):
    """The unit-sum PSF and the (odd) side of the square footprints are grown by (host side)."""
    from ..core.basis import FWHM_PER_SIGMA
    from .psf_shape import psf_fwhm

    p = np.asarray(psf, np.float64)
    p = p / p.sum()
    sigma = psf_fwhm(p) / FWHM_PER_SIGMA
    return p, 2 * int(math.ceil(n_sigma_to_grow * sigma)) + 1


@partial(jax.jit, static_argnames=("size", "flat"))
def footprint_map(image, variance, mask, p, threshold, size, flat):
    """Jitted core of :func:`source_footprints`: an int32 map, nonzero on footprints."""
    from ..core.convolve import dilate_mask, fft_correlate

    bad = bits(DEFAULT_MASK_PLANES)
    good = ((mask & bad) == 0) & jnp.isfinite(image) & jnp.isfinite(variance) & (variance > 0)
    if flat:
        background = jnp.zeros_like(image)
    else:
        background = _background(image, ((mask & bad) == 0) & jnp.isfinite(image), 32)
    residual = jnp.where(good, image - background, 0.0)
    num = fft_correlate(residual, p)
    den = fft_correlate(jnp.where(good, variance, 0.0), p * p)
    snr = num / jnp.sqrt(jnp.maximum(den, 1e-30))
    hit = (jnp.abs(snr) > threshold) & (den > 0)
    return dilate_mask(hit.astype(jnp.int32), size)
