"""Step 1-3 of the subtraction: validated arrays, coverage, variance scaling, masks, PSF sizes.

Port of ip_diffim's ``AlardLuptonSubtractTask._prepareInputs`` (and ``_validateExposures`` for
arrays) on plain arrays; also the catalogue reader (:func:`catalogue_columns`) shared by the
source step. Differences: an input without ``DETECTED`` pixels gets source footprints for
ScaleVariance only (:func:`detected_mask`), since ip_diffim's inputs always carry them.
"""

import logging
from typing import NamedTuple

import numpy as np

from ..core.convolve import MaskedImage
from ..core.masks import bit, bits
from ..errors import InvalidInputError
from .inputs import check_template_coverage, update_masks
from .photometry import AB_NJY_ZEROPOINT, diffim_limiting_magnitude, limiting_magnitude
from .psf_shape import evaluate_psf, psf_size
from .scale_variance import coarse_background, scale_variance, source_footprints

__all__ = ["Prepared", "as_masked", "catalogue_columns", "detected_mask", "prepare_inputs"]

log = logging.getLogger(__name__)


def as_masked(name, masked, dtype=None):
    """``masked`` as a MaskedImage of numpy arrays (float image/variance, int32 mask), checked."""
    if not isinstance(masked, MaskedImage):
        raise InvalidInputError(f"{name} must be a MaskedImage(image, variance, mask).")
    image = np.asarray(masked.image)
    if image.ndim != 2:
        raise InvalidInputError(f"{name}.image must be 2-D, got shape {image.shape}.")
    if dtype is None:
        dtype = image.dtype if image.dtype in (np.float32, np.float64) else np.float32
    var = np.asarray(masked.variance)
    mask = np.asarray(masked.mask)
    if var.shape != image.shape or mask.shape != image.shape:
        raise InvalidInputError(
            f"{name}: image {image.shape}, variance {var.shape} and mask {mask.shape} must have "
            "one shape."
        )
    if not np.issubdtype(mask.dtype, np.integer):
        raise InvalidInputError(f"{name}.mask must be an integer array, got {mask.dtype}.")
    return MaskedImage(image.astype(dtype), var.astype(dtype), mask.astype(np.int32))


def catalogue_columns(sources):
    """x, y, snr (or None), rating, flags, isolated from a catalogue-like object."""

    def get(name):
        try:
            return np.asarray(sources[name])
        except (KeyError, ValueError, IndexError):
            return None

    x, y = get("x"), get("y")
    if x is None or y is None:
        raise InvalidInputError("sources must have 'x' and 'y' columns (array pixel positions).")
    flux, err, snr = get("flux"), get("flux_err"), get("snr")
    if snr is None and flux is not None and err is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = flux / err
    rating = flux if flux is not None else snr
    return x.astype(float), y.astype(float), snr, rating, get("flags"), get("isolated")


def _zeropoint(calibration):
    """``instFluxToMagnitude(1)`` for a calibration in nJy per count."""
    return AB_NJY_ZEROPOINT - 2.5 * np.log10(calibration)


class Prepared(NamedTuple):
    """The inputs after ip_diffim's ``_prepareInputs``: rescaled variances, updated masks,
    PSF sizes, coverage and the metrics so far."""

    template: MaskedImage
    science: MaskedImage
    template_size: object
    science_size: object
    coverage: float
    metrics: dict


def detected_mask(masked, psf, flat=False):
    """The mask, with source footprints as ``DETECTED`` if it has no detection planes at all.

    Only ScaleVariance sees this mask (ip_diffim's inputs always carry ``DETECTED``).
    """
    mask = np.asarray(masked.mask)
    if np.any(mask & bits(("DETECTED", "DETECTED_NEGATIVE"))):
        return mask
    h, w = mask.shape
    try:
        image = evaluate_psf(psf, (w - 1) / 2.0, (h - 1) / 2.0)
    except Exception:  # noqa: BLE001 - no PSF at the centre: leave the mask as it is
        return mask
    found = source_footprints(masked.image, masked.variance, mask, image, flat=flat)
    return np.where(found, mask | bit("DETECTED"), mask).astype(np.int32)


def _subtract_sky(masked, bin_size):
    """``masked`` less its smooth sky (binned 3σ-clipped background); the sky's mean.

    Sources are left out by the clipping (and by ``DETECTED`` where the input has it): the
    footprints of a PSF-filtered detection mask half of a crowded image, and the bins then
    follow a gradient worse than the clipped ones do.
    """
    sky = np.asarray(
        coarse_background(masked.image, masked.mask, bin_size=bin_size, extrapolate=True)
    )
    if not np.isfinite(sky).all():
        raise InvalidInputError(
            "The sky cannot be measured (no usable pixels in some sky bins); set "
            "subtract_sky=False, or a larger sky_bin_size."
        )
    image = (np.asarray(masked.image) - sky).astype(np.asarray(masked.image).dtype)
    return masked._replace(image=image), float(np.mean(sky))


def prepare_inputs(template, science, template_psf, science_psf, config, calibrations):
    """Steps 1-3 of ip_diffim's ``_prepareInputs``: validate, coverage, ScaleVariance, masks, PSF
    sizes.

    Parameters
    ----------
    template, science : MaskedImage
        Shape (H, W) each, on one pixel grid.
    template_psf, science_psf : array_like or callable
    config : SubtractionConfig
    calibrations : tuple of 2 floats
        Science and template calibrations in nJy per count.

    Returns
    -------
    Prepared
    """
    science = as_masked("science", science)
    template = as_masked("template", template, science.image.dtype)
    if template.image.shape != science.image.shape:
        raise InvalidInputError(
            f"template {template.image.shape} and science {science.image.shape} must be on one "
            "pixel grid; cut the template to the science bounding box."
        )
    metrics = {}
    coverage = check_template_coverage(
        template.mask,
        science.mask,
        config.required_template_fraction,
        "not attempting the subtraction",
    )
    metrics["templateCoveragePercent"] = 100.0 * coverage
    if config.subtract_sky:
        template, t_sky = _subtract_sky(template, config.sky_bin_size)
        science, s_sky = _subtract_sky(science, config.sky_bin_size)
        metrics["templateSkyMean"], metrics["scienceSkyMean"] = t_sky, s_sky
        log.info("Sky subtracted: template mean %.4g, science mean %.4g", t_sky, s_sky)
    if config.do_scale_variance:
        flat = config.subtract_sky  # the sky is gone: no background to fit again
        t_factor = scale_variance(
            template.image,
            template.variance,
            detected_mask(template, template_psf, flat),
            flat=flat,
        )
        s_factor = scale_variance(
            science.image,
            science.variance,
            detected_mask(science, science_psf, flat),
            flat=flat,
        )
        template = template._replace(variance=template.variance * np.float32(t_factor))
        science = science._replace(variance=science.variance * np.float32(s_factor))
        metrics["scaleTemplateVarianceFactor"] = t_factor
        metrics["scaleScienceVarianceFactor"] = s_factor
        log.info("Variance scaling factors: template %.3f, science %.3f", t_factor, s_factor)
    t_mask, s_mask = update_masks(
        template.mask, science.mask, config.preserve_template_mask, config.rename_template_mask
    )
    template, science = template._replace(mask=t_mask), science._replace(mask=s_mask)
    h, w = science.image.shape
    bbox = (0.0, 0.0, float(w), float(h))
    grid = dict(grid=config.fwhm_exposure_grid, buffer=config.fwhm_exposure_buffer)
    t_size = psf_size(template_psf, bbox, **grid)
    s_size = psf_size(science_psf, bbox, **grid)
    metrics["sciencePsfSize"] = s_size.fwhm
    metrics["templatePsfSize"] = t_size.fwhm
    centre = ((w - 1) / 2.0, (h - 1) / 2.0)
    mags = []
    for psf, size, calib in zip(
        (science_psf, template_psf), (s_size, t_size), calibrations, strict=True
    ):
        try:
            image = evaluate_psf(psf, *centre)
        except Exception:  # noqa: BLE001 - any PSF failure means "use the fallback size"
            image = None
        mags.append(limiting_magnitude(image, _zeropoint(calib), fallback_fwhm=size.fwhm))
    metrics["scienceLimitingMagnitude"] = mags[0]
    metrics["templateLimitingMagnitude"] = mags[1]
    metrics["diffimLimitingMagnitude"] = diffim_limiting_magnitude(*mags)
    return Prepared(template, science, t_size, s_size, coverage, metrics)
