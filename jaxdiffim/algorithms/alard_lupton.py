"""The whole Alard-Lupton subtraction, as ip_diffim's tasks run it, without the Task layer.

:func:`alard_lupton_subtract` is ``AlardLuptonSubtractTask.run`` and
:func:`alard_lupton_preconvolve_subtract` is ``AlardLuptonPreconvolveSubtractTask.run``
(ip_diffim.md §2.11); both run one implementation on plain arrays, as two jitted programs with
the kernel-source selection between them:

1. validate on the host;
2. the *prepare* program (:func:`jaxdiffim.algorithms.prepare.prepare_inputs`): template
   coverage (:class:`NoWorkFound` below ``required_template_fraction``), each image's sky
   (``subtract_sky``), ``ScaleVariance`` (with source footprints for inputs without
   ``DETECTED``), ip_diffim's mask update, and without a catalogue the built-in detector's maps
   of the prepared science image; then, on the host, the PSF sizes (at the average position,
   else on a grid) and limiting magnitudes;
3. choose the mode (``auto``: convolve the template unless it is wider in both axes); the score
   variant filters the science image with its PSF and always convolves the template;
4. kernel sources (host): from the catalogue, or from the detector's peaks;
5. the *subtraction* program (:func:`jaxdiffim.core.pipeline.subtract_and_decorrelate`): fit,
   convolve, subtract, decorrelate (one kernel at the centre, or spatially varying), flag
   non-finite pixels, the background image and the per-star QA ratios -- with the
   spatial-order policy of :mod:`jaxdiffim.algorithms.config` (a singular spatial fit runs it
   once more with constant orders); a fit failure with coverage below
   ``min_template_fraction_for_expected_success`` becomes :class:`NoWorkFound`;
6. the QA policy: :class:`BadSubtractionError` for a bad subtraction.

Both images are on one pixel grid (cut the template to the science bounding box first; the Task
layer does this). PSFs are 2-D arrays (constant) or callables ``psf(x, y) -> array`` in array
pixel coordinates. Sources are any mapping of columns (``dict``, astropy ``Table``, numpy
structured array) with ``x`` and ``y`` and optionally ``flux`` with ``flux_err`` (or ``snr``),
``flags`` (True = bad) and ``isolated``. Inputs are never modified.

Deliberate differences from ip_diffim: ``SAT_TEMPLATE`` is in the default
``exclude_mask_planes``; non-finite difference pixels get ``NO_DATA``; spatial orders are
maxima, lowered on small images and for a singular spatial system
(:mod:`jaxdiffim.algorithms.config`), where ip_diffim goes on with a pseudo-inverse.
"""

import functools
import logging
import time

import jax
import numpy as np

from ..core import host, programs
from ..core import status as st
from ..core.afterburner import Decorrelation
from ..core.basis import FWHM_PER_SIGMA
from ..core.convolve import MaskedImage
from ..core.decorrelation import DECORRELATION_IGNORE_PLANES
from ..core.masks import DIFFERENCE_SKY_IGNORE, bits
from ..core.pipeline import subtract_and_decorrelate
from ..core.preconvolution import preconvolution_kernel, preconvolve
from ..core.spatial import n_spatial_terms
from ..core.stamps import make_candidates
from ..errors import InvalidInputError, KernelFitError, NoWorkFound, SingularSystemError
from .config import MIN_SOURCES_PER_SPATIAL_TERM, SubtractionConfig
from .convolution_mode import best_mode
from .decorrelate import check_mean_variances
from .difference_psf import DifferencePsf
from .kernel_sources import kernel_setup, kernel_sources, unsmeared_bits
from .prepare import prepare_inputs
from .psf_shape import choose_convolution_mode, evaluate_psf
from .quality import qa_table, summarize_ratios
from .result import SubtractionResult, finalize_result, solution_metrics, sources_out

__all__ = ["alard_lupton_subtract", "alard_lupton_preconvolve_subtract"]

log = logging.getLogger(__name__)


def alard_lupton_subtract(
    template,
    science,
    template_psf,
    science_psf,
    sources=None,
    config=None,
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
    config : SubtractionConfig, optional
        Default ``SubtractionConfig()`` (ip_diffim's defaults).
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
    return _subtract(
        template,
        science,
        template_psf,
        science_psf,
        sources,
        config,
        (science_calibration, template_calibration),
        score=False,
    )


def alard_lupton_preconvolve_subtract(
    template,
    science,
    template_psf,
    science_psf,
    sources=None,
    config=None,
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
    return _subtract(
        template,
        science,
        template_psf,
        science_psf,
        sources,
        config,
        (science_calibration, template_calibration),
        score=True,
    )


def _subtract(template, science, template_psf, science_psf, sources, config, calibrations, score):
    t0 = time.perf_counter()
    leaves = jax.tree_util.tree_leaves((template, science, sources, calibrations))
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        raise InvalidInputError(
            "alard_lupton_subtract runs host steps with data-dependent shapes (source detection "
            "and selection, PSF sizes, the mode) and cannot be traced by jit/grad/vmap. Choose "
            "the kernel sources once, then trace jaxdiffim.subtract_and_decorrelate (the whole "
            "subtraction from kernel sources to the decorrelated difference) or subtract_images."
        )
    config = SubtractionConfig() if config is None else config
    programs.release_near_map_limit()  # a long-lived process: before XLA runs out of mappings
    host.release_free_memory()  # what the reading and the PSF estimates freed
    prep = prepare_inputs(
        template, science, template_psf, science_psf, config, calibrations, sources is None
    )
    template, science, metrics = prep.template, prep.science, prep.metrics
    timings = metrics["timings"] = {"prepare": time.perf_counter() - t0}
    t_fwhm, s_fwhm = prep.template_size.fwhm, prep.science_size.fwhm
    preconv, extra_edge, reference, chosen = None, 0, science, None
    if score:
        mode = "convolveTemplate"
        h, w = science.image.shape
        preconv = preconvolution_kernel(evaluate_psf(science_psf, (w - 1) / 2.0, (h - 1) / 2.0))
        extra_edge = preconv.shape[0] // 2
        bad = tuple(config.bad_mask_planes)
        reference = preconvolve(science, preconv, bad, unsmeared_bits(config, template=False))
        fwhms = (t_fwhm, np.sqrt(2.0) * s_fwhm)
    else:
        mode = config.mode
        if mode == "auto":
            mode = choose_convolution_mode(prep.template_size, prep.science_size)
            log.info("mode=auto resolved to %s", mode)
        elif mode == "best":
            mode, scores, chosen = best_mode(prep, sources, config)
            metrics["modeScores"] = scores
        fwhms = (t_fwhm, s_fwhm) if mode == "convolveTemplate" else (s_fwhm, t_fwhm)
    metrics["convolvedExposure"] = "Template" if mode == "convolveTemplate" else "Science"
    sigmas, kcfg = kernel_setup(config, *fwhms)
    t1 = time.perf_counter()
    try:
        if chosen is None:  # (mode=best selected them already)
            chosen = kernel_sources(sources, prep, kcfg.kernel_size, config, extra_edge)
        if chosen["relaxed"]:
            log.warning(chosen["relaxed"])
        timings["sources"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        radius = 5.0 * s_fwhm / FWHM_PER_SIGMA  # QA footprints: 5 sigma of the science PSF
        qa = (*qa_table(chosen["qa_x"], chosen["qa_y"]), radius)
        program = functools.partial(
            _fit_once,
            template,
            science,
            reference,
            chosen,
            sigmas,
            mode=mode,
            config=config,
            preconvolution=preconv,
            qa=qa,
            halo=kcfg.kernel_size + 2 * int(np.ceil(max(fwhms))),
        )
        host.release_free_memory()  # the prepare program's working memory, before the largest
        out, kcfg = _fit_and_subtract(program, chosen, kcfg, config, metrics, prep.coverage)
    except KernelFitError as err:
        _tolerate(err, prep.coverage, config)
        raise
    timings["fit_subtract_decorrelate"] = time.perf_counter() - t1
    solution = out.solution
    solution_metrics(metrics, solution, chosen)
    if config.subtract_sky:
        metrics["differenceSkyMean"] = float(out.sky)
    if config.do_decorrelation:
        names = ("science", "template") if mode == "convolveTemplate" else ("template", "science")
        check_mean_variances(out.mean_variances, names)
    difference = MaskedImage(*(np.asarray(a) for a in out.difference))
    kernel = (solution, kcfg) if mode == "convolveScience" else (None, None)
    psf = DifferencePsf(science_psf, np.asarray(out.psf_filter), *kernel)
    ratio = summarize_ratios(out.qa_ratios, out.qa_used)
    result = SubtractionResult(
        difference,
        out.matched_template,
        out.matched_science,
        np.asarray(out.background),
        float(out.background_scale),
        solution,
        kcfg,
        mode,
        sources_out(chosen, solution),
        metrics,
        psf,
    )
    return finalize_result(result, ratio, config, t0)


def _fit_and_subtract(program, chosen, kcfg, config, metrics, coverage):
    """Steps 6-8 (``program(kcfg)``) with the spatial-order policy; returns the program's
    :class:`~jaxdiffim.core.pipeline.SubtractionArrays` and the fit config used.

    Orders are maxima: each is lowered until the kernel sources number at least
    :data:`~jaxdiffim.algorithms.config.MIN_SOURCES_PER_SPATIAL_TERM` per spatial term, and
    the fit is repeated once with a constant kernel and background when the kernel sources
    cannot determine the spatial model. The orders used and the reason for
    lowering them are reported in ``metrics``. Below ``min_template_fraction_for_expected_success``
    coverage a failure is expected (ip_diffim's rule) and the orders are kept as given.
    """
    reason = None
    constant = kcfg.replace(spatial_kernel_order=0, spatial_bg_order=0)
    lower = coverage >= config.min_template_fraction_for_expected_success and kcfg != constant
    if lower:
        n = len(chosen["x"])
        orders = tuple(
            _supported_order(o, n, per_term)
            for o, per_term in zip(
                (kcfg.spatial_kernel_order, kcfg.spatial_bg_order),
                MIN_SOURCES_PER_SPATIAL_TERM,
                strict=True,
            )
        )
        if orders != (kcfg.spatial_kernel_order, kcfg.spatial_bg_order):
            kcfg = kcfg.replace(spatial_kernel_order=orders[0], spatial_bg_order=orders[1])
            reason = f"{n} kernel sources"
    out = program(kcfg)
    code = int(out.solution.status)
    if code & st.SINGULAR and lower and kcfg != constant:
        reason = "singular spatial system"
        log.warning(
            "The %d kernel sources do not determine the spatial model (%s); refitting with a "
            "constant kernel and background.",
            len(chosen["x"]),
            st.describe_status(code)[0],
        )
        try:
            out = program(constant)
        except KernelFitError as err:
            raise SingularSystemError(
                f"The {len(chosen['x'])} kernel sources do not determine the spatial model and a "
                f"constant kernel and background failed too ({err}); give a catalogue with more "
                "isolated stars (sources), or lower detection_threshold."
            ) from err
        kcfg, code = constant, int(out.solution.status)
    if code & st.SINGULAR:
        raise SingularSystemError(
            f"The kernel is not determined by the {len(chosen['x'])} kernel sources "
            f"({st.describe_status(code)[0]}); give a catalogue with more isolated stars "
            "(sources), or lower detection_threshold or raise detection_threshold_max."
        )
    if code & st.NOT_CONVERGED:
        log.warning("Kernel candidate rejection: %s", st.describe_status(st.NOT_CONVERGED)[0])
    metrics["spatialKernelOrder"] = kcfg.spatial_kernel_order
    metrics["spatialBgOrder"] = kcfg.spatial_bg_order
    metrics["spatialOrderReduced"] = reason
    if reason:
        log.info(
            "Spatial orders lowered to %d/%d: %s.",
            kcfg.spatial_kernel_order,
            kcfg.spatial_bg_order,
            reason,
        )
    return out, kcfg


def _supported_order(order, n_sources, per_term):
    """The highest order up to ``order`` that ``n_sources`` kernel sources can support."""
    while order > 0 and n_sources < per_term * n_spatial_terms(order):
        order -= 1
    return order


def _fit_once(
    template, science, reference, chosen, sigmas, kcfg, *, mode, config, preconvolution, qa, halo
):
    """One run of :func:`jaxdiffim.core.pipeline.subtract_and_decorrelate`; raises a fatal
    fit status. ``halo`` is the side of the ``SUSPECT`` square around saturated pixels."""
    decorrelation = None
    if config.do_decorrelation:
        decorrelation = Decorrelation(
            n_nodes=config.decorrelation_nodes if config.spatially_varying_decorrelation else 0,
            complete=config.complete_var_plane_propagation,
            fill_bits=bits(config.bad_mask_planes),
            ignore_bits=bits(DECORRELATION_IGNORE_PLANES),
        )
    out = subtract_and_decorrelate(
        template,
        science,
        make_candidates(chosen["x"], chosen["y"], chosen["rating"]),
        kcfg,
        sigmas,
        mode=mode,
        subtract_background=config.do_subtract_background,
        preserve_bits=unsmeared_bits(config, mode == "convolveTemplate"),
        reference=reference,
        preconvolution=preconvolution,
        decorrelation=decorrelation,
        qa=qa,
        sky=(config.sky_bin_size, bits(DIFFERENCE_SKY_IGNORE)) if config.subtract_sky else None,
        halo=halo,
    )
    st.raise_for_status(out.solution.status)
    return out


def _tolerate(err, coverage, config):
    if coverage < config.min_template_fraction_for_expected_success:
        raise NoWorkFound(
            f"The template covers {100 * coverage:.1f}% of the science image, below "
            "min_template_fraction_for_expected_success="
            f"{config.min_template_fraction_for_expected_success}, and the kernel could not be "
            f"determined ({err}); this failure is tolerated."
        ) from err
