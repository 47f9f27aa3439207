"""The whole Alard-Lupton subtraction, as ip_diffim's tasks run it, without the Task layer.

:func:`alard_lupton_subtract` is ``AlardLuptonSubtractTask.run`` and
:func:`alard_lupton_preconvolve_subtract` is ``AlardLuptonPreconvolveSubtractTask.run``
(ip_diffim.md §2.11), on plain arrays:

1. validate; template coverage (:class:`NoWorkFound` below ``required_template_fraction``);
2. rescale both variance planes (``ScaleVariance``); update the masks;
3. PSF sizes (at the average position, else on a grid) and limiting magnitudes;
4. choose the mode (``auto``: convolve the template unless it is wider in both axes);
5. kernel sources from the catalogue, or from the built-in detector when there is none;
6. fit, convolve, subtract (:func:`jaxdiffim.core.pipeline.subtract_images`, one jitted call); a fit
   failure with coverage below ``min_template_fraction_for_expected_success`` becomes
   :class:`NoWorkFound`;
7. decorrelate (one kernel at the centre, or spatially varying);
8. QA metrics, and :class:`BadSubtractionError` for a bad subtraction.

Both images are on one pixel grid (cut the template to the science bounding box first; the Task
layer does this). PSFs are 2-D arrays (constant) or callables ``psf(x, y) -> array`` in array
pixel coordinates. Sources are any mapping of columns (``dict``, astropy ``Table``, numpy
structured array) with ``x`` and ``y`` and optionally ``flux`` with ``flux_err`` (or ``snr``),
``flags`` (True = bad) and ``isolated``. Inputs are never modified.

Deliberate differences from ip_diffim: ``SAT_TEMPLATE`` is in the default
``exclude_mask_planes`` (ip_diffim renames the template's ``SAT`` before selecting sources, so
its check never sees saturated template stars); non-finite difference pixels get ``NO_DATA``; a
singular spatial system (kernel sources that cannot constrain the spatial model) raises
:class:`SingularSystemError`, where ip_diffim falls back to a pseudo-inverse and goes on.
"""

import dataclasses
import logging
import time
from typing import NamedTuple

import numpy as np

from ..core import status as st
from ..core.basis import FWHM_PER_SIGMA, alard_lupton_sigmas
from ..core.config import KernelFitConfig
from ..core.convolve import MaskedImage
from ..core.decorrelation import decorrelate, decorrelate_spatially, fill_bad_pixels, mean_variance
from ..core.masks import MASK_PLANES, bit, bits
from ..core.pipeline import subtract_images
from ..core.preconvolution import BAD_MASK_PLANES, preconvolution_kernel, preconvolve
from ..core.stamps import make_candidates
from ..core.subtract import background_image, kernel_image
from ..errors import (
    BadSubtractionError,
    InvalidInputError,
    KernelFitError,
    NoWorkFound,
    SingularSystemError,
    VarianceScalingError,
)
from .detection import detect_sources
from .inputs import (
    PRESERVE_TEMPLATE_MASK,
    RENAME_TEMPLATE_MASK,
    check_template_coverage,
    update_masks,
)
from .psf_shape import (
    choose_convolution_mode,
    diffim_limiting_magnitude,
    evaluate_psf,
    limiting_magnitude,
    psf_size,
)
from .quality import check_subtraction_quality, footprint_residual_ratio
from .scale_variance import scale_variance, source_footprints
from .sources import select_kernel_sources

__all__ = [
    "MODES",
    "SubtractionConfig",
    "SubtractionResult",
    "alard_lupton_subtract",
    "alard_lupton_preconvolve_subtract",
]

log = logging.getLogger(__name__)

#: Allowed values of ``SubtractionConfig.mode``.
MODES = ("auto", "convolveTemplate", "convolveScience")

#: AB magnitude of one nJy.
_AB_NJY = 31.4


@dataclasses.dataclass(frozen=True)
class SubtractionConfig:
    """Configuration of the whole subtraction (ip_diffim field names in snake_case).

    Attributes
    ----------
    mode : {"auto", "convolveTemplate", "convolveScience"}
    kernel : KernelFitConfig
        The fit (``makeKernel.kernel.active``); its ``kernel_size`` is replaced by the
        ``scale_by_fwhm`` rule unless that is off.
    scale_by_fwhm, alard_sig_gauss, alard_gauss_beta, alard_min_sig, alard_min_sig_deconv,
    kernel_size_fwhm_scaling, kernel_size_min, kernel_size_max
        The basis-width rule (:func:`jaxdiffim.core.basis.alard_lupton_sigmas`).
    do_decorrelation, complete_var_plane_propagation : bool
        Decorrelation afterburner and its full variance propagation.
    spatially_varying_decorrelation : bool
        Follow the spatially varying kernel with ``decorrelation_nodes``² filters.
    do_scale_variance : bool
        Rescale both variance planes to the pixel noise first (``ScaleVariance``).
    do_subtract_background : bool
        Remove the fitted differential background.
    required_template_fraction, min_template_fraction_for_expected_success : float
        Coverage guards.
    max_kernel_sources, min_kernel_sources, restrict_kernel_edge_sources,
    exclude_mask_planes, detection_threshold, detection_threshold_max
        Kernel-source selection (the S/N window is ``detection_threshold`` to
        ``detection_threshold_max``, ip_diffim's 10-500).
    bad_mask_planes : tuple of str
        Filled with the median before preconvolution.
    preserve_template_mask, rename_template_mask : tuple of str
        Mask semantics (:func:`jaxdiffim.algorithms.inputs.update_masks`); the preserved planes
        are also
        not smeared by the convolution.
    fwhm_exposure_grid, fwhm_exposure_buffer
        PSF-size grid fallback.
    raise_on_bad_subtraction_ratio, bad_subtraction_ratio_threshold,
    bad_subtraction_variation_threshold
        QA thresholds on the footprint residual ratio.
    """

    mode: str = "convolveTemplate"
    kernel: KernelFitConfig = KernelFitConfig()
    scale_by_fwhm: bool = True
    alard_sig_gauss: tuple = (0.7, 1.5, 3.0)
    alard_gauss_beta: float = 2.0
    alard_min_sig: float = 0.7
    alard_min_sig_deconv: float = 0.4
    kernel_size_fwhm_scaling: float = 6.0
    kernel_size_min: int = 21
    kernel_size_max: int = 35
    do_decorrelation: bool = True
    complete_var_plane_propagation: bool = False
    spatially_varying_decorrelation: bool = False
    decorrelation_nodes: int = 4
    do_scale_variance: bool = True
    do_subtract_background: bool = False
    required_template_fraction: float = 0.1
    min_template_fraction_for_expected_success: float = 0.2
    max_kernel_sources: int = 1000
    min_kernel_sources: int = 3
    restrict_kernel_edge_sources: bool = True
    exclude_mask_planes: tuple = ("NO_DATA", "BAD", "SAT", "EDGE", "FAKE", "SAT_TEMPLATE")
    detection_threshold: float = 10.0
    detection_threshold_max: float = 500.0
    bad_mask_planes: tuple = BAD_MASK_PLANES
    preserve_template_mask: tuple = PRESERVE_TEMPLATE_MASK
    rename_template_mask: tuple = RENAME_TEMPLATE_MASK
    fwhm_exposure_grid: int = 10
    fwhm_exposure_buffer: float = 0.05
    raise_on_bad_subtraction_ratio: bool = True
    bad_subtraction_ratio_threshold: float = 0.2
    bad_subtraction_variation_threshold: float = 0.4

    def __post_init__(self):
        for name in (
            "alard_sig_gauss",
            "exclude_mask_planes",
            "bad_mask_planes",
            "preserve_template_mask",
            "rename_template_mask",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if len(self.alard_sig_gauss) != len(self.kernel.degrees):
            raise InvalidInputError(
                f"alard_sig_gauss has {len(self.alard_sig_gauss)} widths but kernel.degrees "
                f"has {len(self.kernel.degrees)} entries; give one degree per Gaussian."
            )
        for name in ("required_template_fraction", "min_template_fraction_for_expected_success"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.decorrelation_nodes < 1:
            raise InvalidInputError("decorrelation_nodes must be >= 1.")
        for name in self.rename_template_mask:
            if name + "_TEMPLATE" not in MASK_PLANES:
                known = [n[: -len("_TEMPLATE")] for n in MASK_PLANES if n.endswith("_TEMPLATE")]
                raise InvalidInputError(
                    f"rename_template_mask: there is no {name}_TEMPLATE plane; "
                    f"renamable planes are {known}."
                )
        for planes in (
            self.exclude_mask_planes,
            self.bad_mask_planes,
            self.preserve_template_mask,
        ):
            bits(planes)  # unknown names raise

    def replace(self, **changes):
        """Return a validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


class SubtractionResult(NamedTuple):
    """Outputs of :func:`alard_lupton_subtract` (ip_diffim's ``Struct`` fields).

    Attributes
    ----------
    difference : MaskedImage
        The (decorrelated) difference, or the score image for the preconvolution variant.
    matched_template, matched_science : MaskedImage
        The two images that were subtracted (one of them convolved).
    background : numpy.ndarray, shape (H, W)
        The fitted differential background model on the science grid, with ip_diffim's sign
        (negated in convolveScience mode, and divided by κ there, so that
        ``difference = matched_science - matched_template - background`` before decorrelation
        when ``do_subtract_background``).
    solution : KernelSolution
        The spatially varying kernel (:func:`jaxdiffim.core.subtract.kernel_image` evaluates it).
    kernel_config : KernelFitConfig
        The fit configuration actually used (kernel size from the PSFs).
    mode : str
        ``"convolveTemplate"`` or ``"convolveScience"`` (``auto`` resolved).
    kernel_sources : dict
        ``x``, ``y`` and ``index`` (rows of the input catalogue, or of the detections) of the
        sources given to the fit, and ``used`` (which entered the final spatial fit).
    metrics : dict
        ip_diffim's metadata: coverage, variance factors, PSF sizes, limiting magnitudes, kernel
        sum, condition number, footprint residual ratio, timings.
    """

    difference: MaskedImage
    matched_template: MaskedImage
    matched_science: MaskedImage
    background: np.ndarray
    solution: object
    kernel_config: KernelFitConfig
    mode: str
    kernel_sources: dict
    metrics: dict


def _as_masked(name, masked, dtype=None):
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


def _columns(sources):
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
    return _AB_NJY - 2.5 * np.log10(calibration)


class _Prepared(NamedTuple):
    template: MaskedImage
    science: MaskedImage
    template_size: object
    science_size: object
    coverage: float
    metrics: dict


def _detected_mask(masked, psf):
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
    found = source_footprints(masked.image, masked.variance, mask, image)
    return np.where(found, mask | bit("DETECTED"), mask).astype(np.int32)


def _prepare(template, science, template_psf, science_psf, config, calibrations):
    """Steps 1-3 of ip_diffim's ``_prepareInputs``."""
    science = _as_masked("science", science)
    template = _as_masked("template", template, science.image.dtype)
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
    if config.do_scale_variance:
        t_factor = scale_variance(
            template.image, template.variance, _detected_mask(template, template_psf)
        )
        s_factor = scale_variance(
            science.image, science.variance, _detected_mask(science, science_psf)
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
    return _Prepared(template, science, t_size, s_size, coverage, metrics)


def _kernel_setup(config, convolved_fwhm, reference_fwhm):
    sigmas, size = alard_lupton_sigmas(
        convolved_fwhm,
        reference_fwhm,
        n_gauss=len(config.alard_sig_gauss),
        sig_gauss=config.alard_sig_gauss,
        gauss_beta=config.alard_gauss_beta,
        min_sig=config.alard_min_sig,
        min_sig_deconv=config.alard_min_sig_deconv,
        kernel_size=config.kernel.kernel_size,
        kernel_size_fwhm_scaling=config.kernel_size_fwhm_scaling,
        kernel_size_min=config.kernel_size_min,
        kernel_size_max=config.kernel_size_max,
        scale_by_fwhm=config.scale_by_fwhm,
    )
    return np.asarray(sigmas, float), config.kernel.replace(kernel_size=int(size))


def _kernel_sources(sources, prep, science_psf, kernel_size, config, extra_edge=0):
    """Select kernel sources from ``sources``, or detect them on the science image.

    Without an ``isolated`` column a source counts as isolated when no other catalogue source
    lies within two science FWHMs (a blend); neighbours further away sit in both images' stamps
    and are fitted like the source itself. A selection failure follows ip_diffim's coverage
    rule (:func:`_tolerate`). Besides the selection, the result holds every input position on
    the image (``qa_x``, ``qa_y``): ip_diffim measures the footprint ratio on all of them.
    """
    try:
        return _select_sources(sources, prep, science_psf, kernel_size, config, extra_edge)
    except KernelFitError as err:
        _tolerate(err, prep.coverage, config)
        raise


def _select_sources(sources, prep, science_psf, kernel_size, config, extra_edge):
    science, template = prep.science, prep.template
    mask = np.asarray(science.mask) | np.asarray(template.mask)
    if sources is None:
        h, w = science.image.shape
        psf = evaluate_psf(science_psf, (w - 1) / 2.0, (h - 1) / 2.0)
        found = detect_sources(
            science.image,
            science.variance,
            science.mask,
            np.asarray(psf),
            threshold=config.detection_threshold,
        )
        x, y, snr, rating = found.x, found.y, found.snr, found.flux
        flags = isolated = None
        log.info("Detected %d candidate kernel sources on the science image.", x.size)
    else:
        x, y, snr, rating, flags, isolated = _columns(sources)
    selection = select_kernel_sources(
        x,
        y,
        shape=science.image.shape,
        mask=mask,
        kernel_size=kernel_size,
        snr=snr,
        flags=flags,
        isolated=isolated,
        min_snr=config.detection_threshold,
        max_snr=config.detection_threshold_max,
        restrict_edge=config.restrict_kernel_edge_sources,
        extra_edge=extra_edge,
        isolation_radius=2.0 * prep.science_size.fwhm,
        exclude_planes=config.exclude_mask_planes,
        max_sources=config.max_kernel_sources,
        min_sources=config.min_kernel_sources,
    )
    idx = selection.indices
    rating = None if rating is None else np.asarray(rating, float)[idx]
    h, w = science.image.shape
    x, y = np.asarray(x, float), np.asarray(y, float)
    on_image = np.isfinite(x) & np.isfinite(y) & (x > -0.5) & (x < w - 0.5)
    on_image &= (y > -0.5) & (y < h - 0.5)
    return {
        "x": x[idx],
        "y": y[idx],
        "index": idx,
        "rating": rating,
        "qa_x": x[on_image],
        "qa_y": y[on_image],
    }


def _unsmeared_bits(config, template=True):
    """Planes copied through a convolution unsmeared: labels (injections, renamed template
    planes) always, and the preserved template planes when the template is convolved."""
    labels = [name + "_TEMPLATE" for name in config.rename_template_mask]
    labels += ["INJECTED", "INJECTED_CORE", "INJECTED_TEMPLATE"]
    out = bits(n for n in labels if n in MASK_PLANES)
    return out | bits(config.preserve_template_mask) if template else out


def _fit_and_subtract(template, science, chosen, sigmas, kcfg, mode, config, coverage):
    """Steps 5-6, with ip_diffim's coverage rule for fit failures."""
    try:
        cands = make_candidates(chosen["x"], chosen["y"], chosen["rating"])
        diff, solution = subtract_images(
            template,
            science,
            cands,
            kcfg,
            sigmas,
            mode=mode,
            subtract_background=config.do_subtract_background,
            preserve_bits=_unsmeared_bits(config, mode == "convolveTemplate"),
        )
        code = int(solution.status)
        if code & st.SINGULAR:
            raise SingularSystemError(
                f"The spatial kernel model is not determined by the {len(chosen['x'])} kernel "
                f"sources ({st.describe_status(code)[0]})"
            )
        if code & st.NOT_CONVERGED:
            log.warning("Kernel candidate rejection: %s", st.describe_status(st.NOT_CONVERGED)[0])
        return diff, solution
    except KernelFitError as err:
        _tolerate(err, coverage, config)
        raise


def _finish(diff, metrics, positions, reference, radius, t_start):
    """Flag non-finite pixels, QA against ``reference`` (same filtering as ``diff``), timings."""
    image = np.asarray(diff.image)
    mask = np.asarray(diff.mask)
    mask = np.where(np.isfinite(image), mask, mask | bit("NO_DATA")).astype(np.int32)
    diff = MaskedImage(image, np.asarray(diff.variance), mask)
    ratio = footprint_residual_ratio(diff.image, reference.image, mask, *positions, radius)
    metrics["differenceFootprintRatioMean"] = ratio.mean
    metrics["differenceFootprintRatioStdev"] = ratio.std
    if not np.isfinite(ratio.mean):
        log.warning("No source has a usable footprint; the residual ratio is undefined.")
    metrics["timings"]["total"] = time.perf_counter() - t_start
    return diff, ratio


def _solution_metrics(metrics, solution, chosen):
    metrics["nPsfSources"] = int(len(chosen["x"]))
    metrics["nKernelSourcesUsed"] = int(np.count_nonzero(np.asarray(solution.used)))
    metrics["spatialKernelSum"] = float(solution.kernel_sum)
    metrics["spatialConditionNum"] = float(solution.condition_number)
    metrics["backgroundParameters"] = [
        float(v) for v in np.asarray(solution.background_coefficients)
    ]


def _centre_kernel(solution, kcfg):
    b = np.asarray(solution.bbox, float)
    return kernel_image(solution, (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, kcfg)


def _decorrelate(diff, solution, kcfg, unconvolved, convolved, config, scale, preconv=None):
    """Step 7 with the unconvolved/convolved roles of the mode (score: ``preconv``)."""
    s2_u = float(mean_variance(unconvolved.variance, unconvolved.mask))
    s2_c = float(mean_variance(convolved.variance, convolved.mask))
    for name, value in (("unconvolved", s2_u), ("convolved", s2_c)):
        if not (np.isfinite(value) and value > 0):
            raise VarianceScalingError(
                f"The {name} image's variance plane has no usable positive pixels (clipped mean "
                f"{value}); give a positive variance plane or unmask some pixels."
            )
    if s2_c / s2_u > 1e8:
        log.warning("Decorrelation: variance ratio %.3g exceeds 1e8.", s2_c / s2_u)
    common = (unconvolved.variance, convolved.variance, s2_u, s2_c, preconv, scale)
    complete = config.complete_var_plane_propagation
    diff = fill_bad_pixels(diff, config.bad_mask_planes)
    if config.spatially_varying_decorrelation:
        return decorrelate_spatially(
            diff,
            solution,
            *common,
            config=kcfg,
            n_nodes=config.decorrelation_nodes,
            complete=complete,
        )
    kernel = _centre_kernel(solution, kcfg).astype(diff.image.dtype)
    return decorrelate(diff, kernel, *common, complete=complete)


def alard_lupton_subtract(
    template,
    science,
    template_psf,
    science_psf,
    sources=None,
    config=SubtractionConfig(),
    *,
    template_calibration=1.0,
    science_calibration=1.0,
):
    """PSF-match and subtract a template from a science image (``AlardLuptonSubtractTask.run``).

    Parameters
    ----------
    template, science : MaskedImage
        Image, variance and integer mask on one pixel grid, shape (H, W). Not modified.
    template_psf, science_psf : array_like or callable
        PSF images (odd, square) or callables ``psf(x, y)`` in array pixel coordinates.
    sources : mapping of columns, optional
        Kernel-source catalogue on the science image (see the module docstring); ``None``
        runs the built-in detector.
    config : SubtractionConfig
    template_calibration, science_calibration : float
        Photometric calibrations in nJy per count (for the limiting magnitudes).

    Returns
    -------
    SubtractionResult

    Raises
    ------
    InvalidInputError
        Bad arrays, PSFs, catalogue or config.
    NoWorkFound
        Template coverage below ``required_template_fraction``, or a failed fit with coverage
        below ``min_template_fraction_for_expected_success``.
    InsufficientKernelSourcesError, NoKernelCandidatesError, SingularSystemError
        The kernel could not be fitted.
    BadSubtractionError
        QA failure (when ``raise_on_bad_subtraction_ratio``); the exception's ``result``
        attribute holds the :class:`SubtractionResult`.
    VarianceScalingError
        A variance plane is wildly inconsistent with its image.
    """
    t0 = time.perf_counter()
    timings = {}
    prep = _prepare(
        template,
        science,
        template_psf,
        science_psf,
        config,
        (science_calibration, template_calibration),
    )
    template, science, metrics = prep.template, prep.science, prep.metrics
    metrics["timings"] = timings
    timings["prepare"] = time.perf_counter() - t0
    mode = config.mode
    if mode == "auto":
        mode = choose_convolution_mode(prep.template_size, prep.science_size)
        log.info("mode=auto resolved to %s", mode)
    metrics["convolvedExposure"] = "Template" if mode == "convolveTemplate" else "Science"
    if mode == "convolveTemplate":
        convolved_fwhm, reference_fwhm = prep.template_size.fwhm, prep.science_size.fwhm
    else:
        convolved_fwhm, reference_fwhm = prep.science_size.fwhm, prep.template_size.fwhm
    sigmas, kcfg = _kernel_setup(config, convolved_fwhm, reference_fwhm)
    t1 = time.perf_counter()
    chosen = _kernel_sources(sources, prep, science_psf, kcfg.kernel_size, config)
    timings["sources"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    diff, solution = _fit_and_subtract(
        template, science, chosen, sigmas, kcfg, mode, config, prep.coverage
    )
    timings["fit_and_subtract"] = time.perf_counter() - t1
    _solution_metrics(metrics, solution, chosen)
    background = np.asarray(background_image(solution, science.image.shape, kcfg))
    kappa = float(solution.kernel_sum)
    if mode == "convolveTemplate":
        matched_template, matched_science = diff.matched, science
        unconvolved, convolved, scale = science, template, 1.0
    else:
        safe = kappa if kappa != 0 else 1.0
        background = -background / safe
        matched_template = MaskedImage(
            template.image / safe, template.variance / safe**2, template.mask
        )
        matched_science = diff.matched
        unconvolved, convolved, scale = template, science, 1.0 / safe**2
    difference = diff.difference
    t1 = time.perf_counter()
    if config.do_decorrelation:
        difference = _decorrelate(difference, solution, kcfg, unconvolved, convolved, config, scale)
    timings["decorrelate"] = time.perf_counter() - t1
    result = SubtractionResult(
        difference,
        matched_template,
        matched_science,
        background,
        solution,
        kcfg,
        mode,
        _sources_out(chosen, solution),
        metrics,
    )
    return _finalize_result(result, science, chosen, prep, config, t0)


def _sources_out(chosen, solution):
    n = len(chosen["x"])
    return {
        "x": np.asarray(chosen["x"]),
        "y": np.asarray(chosen["y"]),
        "index": np.asarray(chosen["index"]),
        "used": np.asarray(solution.used)[:n],
    }


def _finalize_result(result, reference, chosen, prep, config, t0):
    """Finish the result; a QA exception carries the finished result in its ``result``.

    The footprint ratio is measured on every input source (``chosen["qa_x"/"qa_y"]``), in
    circles of radius 5 σ of the science PSF, against ``reference``.
    """
    radius = 5.0 * prep.science_size.fwhm / FWHM_PER_SIGMA
    positions = (chosen["qa_x"], chosen["qa_y"])
    diff, ratio = _finish(result.difference, result.metrics, positions, reference, radius, t0)
    result = result._replace(difference=diff)
    if config.raise_on_bad_subtraction_ratio:
        try:
            check_subtraction_quality(
                ratio,
                config.bad_subtraction_ratio_threshold,
                config.bad_subtraction_variation_threshold,
            )
        except BadSubtractionError as err:
            err.result = result
            raise
    return result


def _tolerate(err, coverage, config):
    if coverage < config.min_template_fraction_for_expected_success:
        raise NoWorkFound(
            f"The template covers {100 * coverage:.1f}% of the science image, below "
            "min_template_fraction_for_expected_success="
            f"{config.min_template_fraction_for_expected_success}, and the kernel could not be "
            f"determined ({err}); this failure is tolerated."
        ) from err


def alard_lupton_preconvolve_subtract(
    template,
    science,
    template_psf,
    science_psf,
    sources=None,
    config=SubtractionConfig(),
    *,
    template_calibration=1.0,
    science_calibration=1.0,
):
    """Score image: ``AlardLuptonPreconvolveSubtractTask.run`` (ip_diffim.md §2.8-§2.9).

    The science image is filtered with its unit-sum PSF ``P`` (masked pixels filled with the
    median first); the kernel is fitted for the template against that image (widths for
    ``√2 FWHM_S``); the score ``P ⊛ S - K ⊛ T (- bg)`` is decorrelated with ip_diffim's score
    filter (no square root) and the border that ``P`` cannot reach is flagged ``EDGE``.
    Parameters, returns and errors as :func:`alard_lupton_subtract`; ``difference`` is the
    score image, ``matched_science`` the preconvolved science image, and the mode is always
    ``convolveTemplate`` (``config.mode`` is ignored).
    """
    t0 = time.perf_counter()
    prep = _prepare(
        template,
        science,
        template_psf,
        science_psf,
        config,
        (science_calibration, template_calibration),
    )
    template, science, metrics = prep.template, prep.science, prep.metrics
    metrics["timings"] = {"prepare": time.perf_counter() - t0}
    metrics["convolvedExposure"] = "Template"
    h, w = science.image.shape
    pre = preconvolution_kernel(evaluate_psf(science_psf, (w - 1) / 2.0, (h - 1) / 2.0))
    half = pre.shape[0] // 2
    pre_science = preconvolve(
        science, pre, tuple(config.bad_mask_planes), _unsmeared_bits(config, template=False)
    )
    sigmas, kcfg = _kernel_setup(
        config, prep.template_size.fwhm, np.sqrt(2.0) * prep.science_size.fwhm
    )
    chosen = _kernel_sources(sources, prep, science_psf, kcfg.kernel_size, config, half)
    diff, solution = _fit_and_subtract(
        template, pre_science, chosen, sigmas, kcfg, "convolveTemplate", config, prep.coverage
    )
    _solution_metrics(metrics, solution, chosen)
    score = diff.difference
    if config.do_decorrelation:
        score = _decorrelate(score, solution, kcfg, science, template, config, 1.0, pre)
    # the p // 2 border that P cannot reach is EDGE already: pre_science carries it
    background = np.asarray(background_image(solution, science.image.shape, kcfg))
    result = SubtractionResult(
        score,
        diff.matched,
        pre_science,
        background,
        solution,
        kcfg,
        "convolveTemplate",
        _sources_out(chosen, solution),
        metrics,
    )
    return _finalize_result(result, pre_science, chosen, prep, config, t0)
