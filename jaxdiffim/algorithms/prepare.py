"""The prepare step: validated arrays, then one program for coverage, sky, variance scaling,
masks (and the detector's maps); PSF sizes and limiting magnitudes on the host.

Port of ip_diffim's ``AlardLuptonSubtractTask._prepareInputs`` (and ``_validateExposures`` for
arrays) on plain arrays; also the catalogue reader (:func:`catalogue_columns`) shared by the
source step. Differences: an input without ``DETECTED`` pixels gets source footprints for
ScaleVariance only (:mod:`jaxdiffim.algorithms.footprints`), since ip_diffim's inputs always
carry them; each image's sky is removed first when ``subtract_sky``.
"""

import functools
import logging
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..core import programs
from ..core.background import source_free_sky
from ..core.convolve import MaskedImage, pad_to_bucket, window_bound
from ..core.masks import bit, bits, integer_mask
from ..errors import InvalidInputError, VarianceScalingError
from .detection import detections_from_maps, plan_detection, unit_psf
from .detection_maps import detection_maps_impl
from .footprints import footprint_filter, footprint_map
from .inputs import coverage_fraction, mask_update, require_coverage
from .photometry import AB_NJY_ZEROPOINT, diffim_limiting_magnitude, limiting_magnitude
from .psf_shape import evaluate_psf, psf_size
from .scale_variance import (
    DEFAULT_BIN_SIZE,
    DEFAULT_LIMIT,
    DEFAULT_MASK_PLANES,
    choose_factor,
    variance_statistics,
)

__all__ = ["Prepared", "as_masked", "catalogue_columns", "detection_plan", "prepare_inputs"]

log = logging.getLogger(__name__)

#: Pixels beyond ± this value are flagged NO_DATA: their squares and sums overflow float32.
MAX_PIXEL = 1e30


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
    return MaskedImage(  # no copies: nothing here writes into the arrays
        image.astype(dtype, copy=False),
        var.astype(dtype, copy=False),
        integer_mask(mask, f"{name}.mask"),
    )


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
    PSF sizes, coverage and the metrics so far; and, when asked for, the built-in detector's
    detections on the prepared science image
    (:class:`~jaxdiffim.algorithms.detection.Detections`)."""

    template: MaskedImage
    science: MaskedImage
    template_size: object
    science_size: object
    coverage: float
    metrics: dict
    detection: tuple = None


@functools.partial(
    jax.jit,
    static_argnames=("sky_bin", "scale", "footprints", "preserve", "rename", "detect"),
)
def _prepare_arrays(
    template,
    science,
    psfs,
    grows,
    limit,
    detection,
    *,
    sky_bin,
    scale,
    footprints,
    preserve,
    rename,
    detect,
):
    """Coverage, sky, ScaleVariance and the mask update of both images in one program.

    ``psfs`` holds the matched filter of each image's PSF at its centre
    (:func:`~jaxdiffim.algorithms.footprints.footprint_filter`, zero-padded), ``grows`` the
    side of its footprints' growth (traced) and ``footprints`` per image the filter's binning
    and the growth's static bound (0: the image keeps its mask for ScaleVariance). Returns the two
    images, the coverage, and per image the sky mean, whether the sky is finite, and
    :func:`~jaxdiffim.algorithms.scale_variance.variance_statistics`.
    """
    ignored = bits(DEFAULT_MASK_PLANES)
    flat = bool(sky_bin)  # after the sky subtraction there is no background to fit again
    (template, t_flagged), (science, s_flagged) = _flag_invalid(template), _flag_invalid(science)
    flagged = (t_flagged, s_flagged)
    coverage = coverage_fraction(template.mask, science.mask)
    images, skies, stats = [], [], []
    for masked, psf, grow, size in zip((template, science), psfs, grows, footprints, strict=True):
        image, mask = masked.image, masked.mask
        sky_mean, sky_ok = jnp.float32(0.0), jnp.bool_(True)
        if sky_bin:
            good = ((mask & ignored) == 0) & jnp.isfinite(image)
            sky = source_free_sky(image, masked.variance, good, sky_bin)
            sky_ok, sky_mean = jnp.all(jnp.isfinite(sky)), jnp.mean(sky)
            image = (image - sky).astype(image.dtype)
        variance = masked.variance
        n, pixel, image_factor = jnp.int32(0), jnp.float32(1.0), jnp.float32(jnp.nan)
        if scale:
            if size:  # inputs without any detection plane get source footprints
                binning, bound = size
                hit = footprint_map(image, variance, mask, psf, 5.0, grow, flat, binning, bound)
                hit = hit != 0
                mask = jnp.where(hit, mask | bit("DETECTED"), mask)
            n, pixel, image_factor = variance_statistics(
                image, variance, mask, ignored, limit, bin_size=DEFAULT_BIN_SIZE, flat=flat
            )
            factor = jnp.where(pixel > limit, image_factor, pixel).astype(variance.dtype)
            variance = variance * factor
        images.append(MaskedImage(image, variance, masked.mask))
        skies.append((sky_mean, sky_ok))
        stats.append((n, pixel, image_factor))
    t_mask, s_mask = mask_update(images[0].mask, images[1].mask, preserve, rename)
    science = images[1]._replace(mask=s_mask)
    maps = None
    if detect:  # the built-in detector's maps of the prepared science image
        maps = detection_maps_impl(
            science.image, science.variance, science.mask, *detection, **dict(detect)
        )
    return images[0]._replace(mask=t_mask), science, coverage, skies, stats, maps, flagged


def _flag_invalid(masked):
    """Flag non-finite pixels and pixels beyond ±:data:`MAX_PIXEL` ``NO_DATA``, and pixels with a
    usable value but a variance that is not a positive number ``BAD``; also the numbers of
    pixels newly flagged so (int32, ())."""
    image, variance, mask = masked
    no_data = ~(jnp.abs(image) <= MAX_PIXEL)  # NaN too
    bad = ~no_data & ~(jnp.isfinite(variance) & (variance > 0))
    new_no_data = no_data & ((mask & bit("NO_DATA")) == 0)
    new_bad = bad & ((mask & bits(("NO_DATA", "BAD"))) == 0)
    flags = jnp.where(no_data, bit("NO_DATA"), 0) | jnp.where(bad, bit("BAD"), 0)
    counts = (jnp.sum(new_no_data, dtype=jnp.int32), jnp.sum(new_bad, dtype=jnp.int32))
    return MaskedImage(image, variance, (mask | flags).astype(mask.dtype)), counts


def _footprint_psf(masked, psf):
    """Unit-sum PSF at the centre and footprint side for an image without detection planes;
    ``(None, 0)`` when the mask has them (or there is no PSF at the centre)."""
    if np.any(np.asarray(masked.mask) & bits(("DETECTED", "DETECTED_NEGATIVE"))):
        return None, 0
    h, w = masked.image.shape
    try:
        image = evaluate_psf(psf, (w - 1) / 2.0, (h - 1) / 2.0)
    except Exception:  # noqa: BLE001 - no PSF at the centre: leave the mask as it is
        return None, 0
    p, size, binning = footprint_filter(image)
    return pad_to_bucket(np.asarray(p, np.float32)), (size, binning)


def _named_factor(name, values, limit):
    """:func:`~.scale_variance.choose_factor` with the image's name in its error."""
    try:
        return choose_factor(*values, limit)
    except VarianceScalingError as err:
        raise VarianceScalingError(f"{name}: {err}") from None


def _psf_error(shape, template_psf, science_psf):
    """The first problem of the two PSFs at the image centre, as an exception naming the PSF
    (``None`` when both are usable, or when a callable PSF raises by itself: that error is
    raised where the PSF is used, after the coverage check, as in ip_diffim)."""
    h, w = shape
    for name, psf in (("template_psf", template_psf), ("science_psf", science_psf)):
        try:
            image = evaluate_psf(psf, (w - 1) / 2.0, (h - 1) / 2.0)
        except InvalidInputError as err:
            return InvalidInputError(f"{name}: {err}")
        except Exception:  # noqa: BLE001 - the callable's own error is raised where it is used
            continue
        if image.shape[0] > h or image.shape[1] > w:
            return InvalidInputError(
                f"{name}: the PSF image ({image.shape[0]}x{image.shape[1]}) is larger than the "
                f"images ({h}x{w}); crop it to the PSF's extent."
            )
    return None


def _report_flagged(flagged, metrics):
    """Log (warning) and record the pixels that :func:`_flag_invalid` flagged in each input."""
    for name, (no_data, bad) in zip(("template", "science"), flagged, strict=True):
        no_data, bad = int(no_data), int(bad)
        metrics[f"{name}FlaggedNoData"], metrics[f"{name}FlaggedBadVariance"] = no_data, bad
        if no_data:
            log.warning(
                "%s: %d non-finite (NaN or Inf) pixels or pixels beyond ±%g without NO_DATA "
                "were flagged NO_DATA.",
                name,
                no_data,
                MAX_PIXEL,
            )
        if bad:
            log.warning(
                "%s: %d pixels with a variance that is NaN, Inf or <= 0 were flagged BAD (give "
                "a positive variance, or flag them yourself).",
                name,
                bad,
            )


def detection_plan(shape, science_psf, config):
    """The built-in detector's plan for the science image: its PSF at the centre as the filter,
    the config's ``detection_threshold``, and a PSF that varies (a callable) as the shape
    test's reference across the image.

    Galaxies and blends are kept (``extended``): whatever is static and in both images
    constrains the kernel, as in HOTPANTS and SFFT, which fit every source, and bright
    galaxies left out of the fit were the commonest residuals of the quality benchmark's scenes
    (CLI, 6 seeds: 16.9 -> 12.1 false positives per Mpix in the strong scene, 9.5 -> 5.9 in the
    moderate one). What changed between the images (transients, variables, cosmic rays) is
    left out by :func:`~jaxdiffim.algorithms.flux_agreement.flux_agreement`, and peaks sharper
    than the PSF by the shape test.
    """
    h, w = shape
    psf = unit_psf(evaluate_psf(science_psf, (w - 1) / 2.0, (h - 1) / 2.0))

    def psf_at(x, y):  # a PSF that varies: each peak's shape against its own PSF
        return unit_psf(evaluate_psf(science_psf, x, y))

    return plan_detection(
        shape,
        psf,
        threshold=config.detection_threshold,
        psf_at=psf_at if callable(science_psf) else None,
        extended=True,
    )


def prepare_inputs(
    template, science, template_psf, science_psf, config, calibrations, detect=False
):
    """Steps 1-3 of ip_diffim's ``_prepareInputs``: validate, coverage, ScaleVariance, masks, PSF
    sizes; with ``detect``, also the detector's maps of the prepared science image (step 5
    without a catalogue), in the same program.

    Parameters
    ----------
    template, science : MaskedImage
        Shape (H, W) each, on one pixel grid.
    template_psf, science_psf : array_like or callable
    config : SubtractionConfig
    calibrations : tuple of 2 floats
        Science and template calibrations in nJy per count.
    detect : bool
        Run the built-in detector on the prepared science image (no catalogue given): its
        whole-image part in the prepare program, then its peaks and cuts.

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
    side = 2 * min(config.kernel_size_min, config.kernel.kernel_size) + 1
    if min(science.image.shape) < side:
        h, w = science.image.shape
        raise InvalidInputError(
            f"template and science are {h}x{w} pixels: too small for kernel stamps of "
            f"{side}x{side} pixels (twice the smallest kernel size, plus one); give images of "
            f"at least {side}x{side} pixels."
        )
    metrics = {}
    psf_error = _psf_error(science.image.shape, template_psf, science_psf)
    if psf_error is not None:  # a PSF that fails by itself fails later, in ip_diffim's order
        raise psf_error
    detection = plan_error = None
    if detect:  # a PSF that fails here fails below in ip_diffim's order (after the coverage)
        try:
            detection = detection_plan(science.image.shape, science_psf, config)
        except Exception as err:  # noqa: BLE001 - re-raised after the checks that come first
            plan_error = err
    psfs, sizes = zip(
        *(
            _footprint_psf(m, p) if config.do_scale_variance else (None, 0)
            for m, p in ((template, template_psf), (science, science_psf))
        ),
        strict=True,
    )
    limit = DEFAULT_LIMIT
    # the footprints' growth traced (another seeing compiles nothing); their binning static
    grows = np.array([size[0] if size else 0 for size in sizes], np.int32)
    template, science, coverage, skies, stats, maps, flagged = programs.call(
        _prepare_arrays,
        template,
        science,
        psfs,
        grows,
        np.float32(limit),
        None if detection is None else detection.arrays,
        sky_bin=int(config.sky_bin_size) if config.subtract_sky else 0,
        scale=bool(config.do_scale_variance),
        footprints=tuple((size[1], window_bound(size[0])) if size else 0 for size in sizes),
        preserve=tuple(config.preserve_template_mask),
        rename=tuple(config.rename_template_mask),
        detect=None if detection is None else tuple(sorted(detection.static.items())),
    )
    _report_flagged(flagged, metrics)
    coverage = require_coverage(
        coverage, config.required_template_fraction, "not attempting the subtraction"
    )
    metrics["templateCoveragePercent"] = 100.0 * coverage
    if config.subtract_sky:
        if not all(bool(ok) for _, ok in skies):
            raise InvalidInputError(
                "The sky cannot be measured (no usable pixels in some sky bins); set "
                "subtract_sky=False, or a larger sky_bin_size."
            )
        t_sky, s_sky = (float(mean) for mean, _ in skies)
        metrics["templateSkyMean"], metrics["scienceSkyMean"] = t_sky, s_sky
        log.info("Sky subtracted: template mean %.4g, science mean %.4g", t_sky, s_sky)
    if config.do_scale_variance:
        t_factor, s_factor = (
            _named_factor(name, values, limit)
            for name, values in zip(("template", "science"), stats, strict=True)
        )
        metrics["scaleTemplateVarianceFactor"] = t_factor
        metrics["scaleScienceVarianceFactor"] = s_factor
        log.info("Variance scaling factors: template %.3f, science %.3f", t_factor, s_factor)
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
    if plan_error is not None:
        raise plan_error
    # the host half of the detector, once (the whole-image maps are dropped here)
    found = None if detection is None else detections_from_maps(maps, detection)
    if found is not None:
        log.info("Detected %d candidate kernel sources on the science image.", found.x.size)
    return Prepared(template, science, t_size, s_size, coverage, metrics, found)
