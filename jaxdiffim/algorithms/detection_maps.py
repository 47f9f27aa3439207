"""The whole-image part of the built-in detector: matched-filter maps and peak flags (jittable).

Used by :func:`jaxdiffim.algorithms.detection.detect_sources` (its step 1-3 and the pixel flags of
its cuts, see there) and, in the subtraction, inside the prepare program
(:mod:`jaxdiffim.algorithms.prepare`).
"""

import jax
import jax.numpy as jnp

from ..core.convolve import dilate_mask, fft_correlate, window_bound
from .sky import coarse_sky_grid, fine_sky_grid, interpolate

__all__ = ["detection_maps_impl", "detection_maps_jit"]

#: Pixels within a PSF footprint of S/N above this are left out of the second sky estimate.
_SKY_MASK_SNR = 3.0
#: Minimum fraction of the PSF² weight on good pixels for the S/N map to be defined.
_MIN_COVERAGE = 0.5


def detection_maps_impl(
    image,
    variance,
    mask,
    psf,
    exclude_bits,
    sat_bits,
    saturation,
    low_threshold,
    interp,
    sides,
    *,
    n_bins,
    size,
    stride,
):
    """Whole-image part of :func:`detect_sources` (jitted; see there for the method).

    ``sides`` (int32, shape (2,), traced, so that another seeing compiles nothing) holds the
    side of the bad-pixel footprint and that of the PSF itself (``psf`` may be zero-padded
    beyond it); both at most :func:`~jaxdiffim.core.convolve.window_bound` of the padded PSF's
    side.

    Returns the flux, flux-error and S/N maps (float32) and a uint8 map whose bit 0 marks local
    S/N maxima >= ``low_threshold``, bit 1 excluded pixels within the bad-pixel footprint and
    bit 2 saturated pixels within the PSF footprint (2 pixels narrower).
    """
    bad_footprint, k = sides[0], sides[1]
    bound = window_bound(psf.shape[0] + 2)
    bad = ((mask & exclude_bits) != 0) | ~jnp.isfinite(image) | ~jnp.isfinite(variance)
    bad = bad | (variance < 0)
    sat = ((mask & sat_bits) != 0) | (image >= saturation)

    psf2 = psf * psf
    sum_p2 = jnp.sum(psf2)
    var0 = jnp.where(bad, 0.0, variance)
    var_f = fft_correlate(var0, psf2) / (sum_p2 * sum_p2)
    coverage = fft_correlate((~bad).astype(image.dtype), psf2) / sum_p2
    defined = (coverage > _MIN_COVERAGE) & (var_f > 0)
    sigma = jnp.sqrt(jnp.where(defined, var_f, 1.0))

    # Pass 1 finds the sources; pass 2 corrects the sky by the binned clipped mean of the
    # residual outside their footprints (a residual, so that holes in a bin do not move its
    # effective centre along a sky gradient).
    (coarse_y, fine_y), (coarse_x, fine_x) = interp
    ignore = bad | sat
    grid, grid_sigma = coarse_sky_grid(jnp.where(ignore, jnp.nan, image), n_bins, size, stride)
    sky = interpolate(grid, coarse_y, coarse_x)
    flux = fft_correlate(jnp.where(bad, 0.0, image - sky), psf) / sum_p2
    snr = jnp.where(defined, flux / sigma, 0.0)
    ignore = ignore | (dilate_mask((snr > _SKY_MASK_SNR).astype(jnp.uint8), k, bound) != 0)
    residual = jnp.where(ignore, jnp.nan, image - sky)
    # the correction is bilinear between bin centres: its matched filter is the correction
    # itself (exact for a linear piece and a symmetric PSF), wherever the PSF footprint has
    # no bad pixel and lies on the image -- as for every detection kept by the cuts below
    correction = interpolate(fine_sky_grid(residual, grid_sigma, n_bins, size), fine_y, fine_x)
    flux = flux - correction * (jnp.sum(psf) / sum_p2)
    snr = jnp.where(defined, flux / sigma, 0.0)
    sigma = jnp.where(defined, sigma, jnp.inf)

    # Strict local maximum with a raster-order tie break (one peak per flat pair).
    height, width = snr.shape
    padded = jnp.pad(snr, 1, constant_values=-jnp.inf)
    peak = snr >= low_threshold
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            nb = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            earlier = dy < 0 or (dy == 0 and dx < 0)
            peak = peak & ((snr > nb) if earlier else (snr >= nb))

    near_bad = dilate_mask(bad.astype(jnp.uint8), bad_footprint, bound) != 0
    near_sat = dilate_mask(sat.astype(jnp.uint8), bad_footprint - 2, bound) != 0
    flags = (
        peak.astype(jnp.uint8)
        | (near_bad.astype(jnp.uint8) << 1)
        | (near_sat.astype(jnp.uint8) << 2)
    )
    return flux, sigma, snr, flags


detection_maps_jit = jax.jit(detection_maps_impl, static_argnames=("n_bins", "size", "stride"))
