"""Subtract two FITS files: read, find PSFs, run the Task, write the difference and a summary.

What ``jaxdiffim subtract`` does for one pair (:func:`subtract_files`). Inputs without a PSF
(no ``--*-psf`` file and none in an afw-layout file) get an empirical one from their stars
(:func:`jaxdiffim.algorithms.psf_estimate.estimate_psf`, starting from the header ``FWHM`` when
there is
one). Unless spatial orders are given, images smaller than 512 pixels on a side get a constant
kernel and background (a few cells hold too few kernel sources for ip_diffim's orders 1 and 2),
larger ones ip_diffim's orders; and a kernel whose spatial model the kernel sources cannot
determine (:class:`~jaxdiffim.errors.SingularSystemError`) is refitted once as a constant kernel
with a constant background, which the summary reports.
"""

import dataclasses
import json
import logging
import os
import time

import numpy as np

from ..algorithms.psf_estimate import estimate_psf
from ..errors import InvalidInputError, OutputExistsError, SingularSystemError
from ..image import ImagePsf, read_sources
from ..io import read_exposure, read_psf, write_exposure
from ..io.atomic import atomic_output
from ..tasks import AlardLuptonPreconvolveSubtractTask, AlardLuptonSubtractTask

__all__ = ["SubtractOptions", "subtract_files", "load_exposure", "ensure_psf", "write_json"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SubtractOptions:
    """Options of one subtraction (the CLI's flags; the defaults are the CLI's).

    Attributes
    ----------
    mode : {"auto", "convolveTemplate", "convolveScience"}
    kernel : {"al", "df"}
    decorrelate, score, overwrite : bool
    spatial_kernel_order, spatial_bg_order : int or None
        ``None``: chosen as described in the module docstring.
    """

    mode: str = "auto"
    kernel: str = "al"
    decorrelate: bool = True
    score: bool = False
    overwrite: bool = False
    spatial_kernel_order: int | None = None
    spatial_bg_order: int | None = None


def load_exposure(path, *, psf=None, variance=None, weight=None, sigma=None, mask=None):
    """Read an exposure and make sure it has a PSF (from ``psf``, the file, or its stars)."""
    exp = read_exposure(path, variance=variance, weight=weight, sigma=sigma, mask=mask)
    if psf is not None:
        exp.setPsf(read_psf(psf))
    return ensure_psf(exp, path)


def ensure_psf(exp, name="exposure"):
    """Give ``exp`` an empirical PSF from its stars if it has none (header ``FWHM`` as a start)."""
    if exp.psf is not None:
        return exp
    mi = exp.maskedImage
    guess = 4.0
    if exp.metadata is not None and "FWHM" in exp.metadata:
        try:
            value = float(exp.metadata["FWHM"])
        except (TypeError, ValueError):
            value = float("nan")
        guess = value if np.isfinite(value) and value > 0 else 4.0
    stamp = estimate_psf(mi.image, mi.variance, mi.mask, fwhm_guess=guess)
    exp.setPsf(ImagePsf(stamp, average_position=exp.getBBox().getCenter()))
    log.info("%s: PSF estimated from its stars (FWHM %.2f px).", name, exp.psf.computeFwhm())
    return exp


def _config(task_class, options, orders):
    config = task_class.ConfigClass()
    config.mode = options.mode
    config.doDecorrelation = bool(options.decorrelate)
    config.makeKernel.kernel.name = {"al": "AL", "df": "DF"}[options.kernel]
    kernel = config.makeKernel.kernel.active
    kernel.spatialKernelOrder, kernel.spatialBgOrder = orders
    return config


#: Below this many pixels on the shorter side, the CLI fits a constant kernel and background.
SMALL_IMAGE = 512


def _default_orders(task_class, science):
    """ip_diffim's spatial orders, or (0, 0) for images under :data:`SMALL_IMAGE` pixels.

    A small cut-out (a few 128-px cells) holds too few kernel sources to pin down a spatially
    varying kernel and a quadratic background: the fit extrapolates wildly between them.
    """
    if min(science.image.array.shape) < SMALL_IMAGE:
        return 0, 0
    default = task_class.ConfigClass().makeKernel.kernel.active
    return default.spatialKernelOrder, default.spatialBgOrder


def _run(task_class, options, template, science, sources):
    given = (options.spatial_kernel_order, options.spatial_bg_order)
    auto = _default_orders(task_class, science)
    orders = tuple(a if g is None else g for g, a in zip(given, auto, strict=True))
    task = task_class(config=_config(task_class, options, orders))
    try:
        return task, task.run(template, science, sources), orders, False
    except SingularSystemError as err:
        if given != (None, None) or orders == (0, 0):
            raise
        log.warning("%s Refitting with a constant kernel and background.", err)
        task = task_class(config=_config(task_class, options, (0, 0)))
        return task, task.run(template, science, sources), (0, 0), True


def _summary(task, result, orders, fallback, template_path, science_path, timings):
    md = task.metadata
    kernel = result.psfMatchingKernel
    used = np.asarray(result.kernelSources["used"], bool)

    def num(key):
        value = md.get(key)
        return None if value is None or not np.isfinite(value) else float(value)

    return {
        "template": os.fspath(template_path),
        "science": os.fspath(science_path),
        "mode": result.mode,
        "kernel_basis": kernel.config.kernel_basis,
        "kernel_size": int(kernel.config.kernel_size),
        "kernel_sum": float(kernel.getKernelSum()),
        "spatial_kernel_order": int(orders[0]),
        "spatial_bg_order": int(orders[1]),
        "constant_kernel_fallback": bool(fallback),
        "background_parameters": result.backgroundModel.getParameters(),
        "n_kernel_sources": int(len(used)),
        "n_kernel_sources_used": int(used.sum()),
        "condition_number": num("spatialConditionNum"),
        "template_psf_fwhm": num("templatePsfSize"),
        "science_psf_fwhm": num("sciencePsfSize"),
        "qa": {
            "footprint_ratio_mean": num("differenceFootprintRatioMean"),
            "footprint_ratio_std": num("differenceFootprintRatioStdev"),
            "template_coverage_percent": num("templateCoveragePercent"),
            "science_variance_scale": num("scaleScienceVarianceFactor"),
            "template_variance_scale": num("scaleTemplateVarianceFactor"),
            "science_limiting_magnitude": num("scienceLimitingMagnitude"),
            "template_limiting_magnitude": num("templateLimitingMagnitude"),
            "diffim_limiting_magnitude": num("diffimLimitingMagnitude"),
        },
        "timings_s": {k: round(float(v), 3) for k, v in timings.items()},
    }


def subtract_files(
    template_path,
    science_path,
    output,
    *,
    options=None,
    sources=None,
    template_psf=None,
    science_psf=None,
    template_planes=None,
    science_planes=None,
    summary_path=None,
):
    """Subtract ``template_path`` from ``science_path`` and write ``output`` (afw layout).

    Parameters
    ----------
    template_path, science_path, output : str or path-like
    options : SubtractOptions, optional
    sources : str, path-like or astropy Table, optional
        Kernel-source catalogue (science pixel coordinates); ``None``: built-in detection.
    template_psf, science_psf : str or path-like, optional
        PSF stamp files.
    template_planes, science_planes : dict, optional
        ``variance``/``weight``/``sigma``/``mask`` files for plain images.
    summary_path : str or path-like, optional
        Also write the summary there as JSON.

    Returns
    -------
    dict
        The summary: resolved mode, kernel sum, background parameters, QA metrics, kernel
        sources and timings.
    """
    options = options or SubtractOptions()
    t0 = time.perf_counter()
    for path in (output, summary_path):
        if path is None:
            continue
        if os.path.exists(path) and not options.overwrite:
            raise OutputExistsError(f"{os.fspath(path)!r} exists; pass --overwrite to replace it.")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise InvalidInputError(f"The folder of {os.fspath(path)!r} does not exist.")
    template = read_exposure(template_path, **(template_planes or {}))
    science = read_exposure(science_path, **(science_planes or {}))
    if not template.getBBox().contains(science.getBBox()):
        raise InvalidInputError(
            f"The template (bbox {template.getBBox()}) does not cover the science image (bbox "
            f"{science.getBBox()}); both must be on one pixel grid."
        )
    for exp, psf in ((template, template_psf), (science, science_psf)):
        if psf is not None:
            exp.setPsf(read_psf(psf))
    ensure_psf(template, template_path)
    ensure_psf(science, science_path)
    catalogue = None if sources is None else read_sources(sources)
    t1 = time.perf_counter()
    task_class = AlardLuptonPreconvolveSubtractTask if options.score else AlardLuptonSubtractTask
    task, result, orders, fallback = _run(task_class, options, template, science, catalogue)
    t2 = time.perf_counter()
    diff = result.scoreExposure if options.score else result.difference
    write_exposure(diff, output, overwrite=options.overwrite)
    timings = {"read": t1 - t0, "subtract": t2 - t1, "write": time.perf_counter() - t2}
    summary = _summary(task, result, orders, fallback, template_path, science_path, timings)
    summary["output"] = os.fspath(output)
    if summary_path is not None:
        write_json(summary, summary_path, options.overwrite)
    return summary


def write_json(data, path, overwrite=False):
    """Write ``data`` as JSON, atomically (refuses an existing file unless ``overwrite``)."""
    with atomic_output(path, overwrite) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
