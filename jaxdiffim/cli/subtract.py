"""Subtract two FITS files: read, find PSFs, run the Task, write the difference and a summary.

What ``jaxdiffim subtract`` does for one pair (:func:`subtract_files`). Inputs without a PSF
(no ``--*-psf`` file and none in an afw-layout file) get an empirical one from their stars,
varying across the image (:func:`jaxdiffim.algorithms.psf_grid.estimate_psf_grid`: the shape
measured in each cell of a 3 x 3 grid, interpolated by :class:`~jaxdiffim.image.GridImagePsf`;
starting from the header ``FWHM`` when there is one). The subtraction is
:class:`~jaxdiffim.tasks.AlardLuptonSubtractTask` with the Task config written from one
:class:`~jaxdiffim.algorithms.config.SubtractionConfig` (:func:`file_config`: ip_diffim's
defaults, with ``mode="auto"`` and the fitted background subtracted, as files from outside the
Rubin pipeline keep their sky). Every policy (spatial
orders, singular systems, QA) is the algorithm's.
"""

import concurrent.futures
import hashlib
import json
import logging
import os
import time

import numpy as np
from astropy.io import fits

from ..algorithms.config import FILE_DEFAULTS, SubtractionConfig, apply_overrides
from ..algorithms.psf_grid import estimate_psf_grid
from ..core import programs
from ..errors import InvalidInputError, OutputExistsError
from ..image import GridImagePsf, ImagePsf, read_sources
from ..io import read_exposure, read_psf, write_exposure
from ..io.atomic import atomic_output, refuse_input_targets
from ..tasks import AlardLuptonPreconvolveSubtractTask, AlardLuptonSubtractTask
from ..tasks.config_map import apply_to_task, core_path

__all__ = [
    "file_config",
    "task_config",
    "subtract_files",
    "load_exposure",
    "ensure_psf",
    "write_json",
]

log = logging.getLogger(__name__)


def file_config(overrides=None):
    """The :class:`SubtractionConfig` of the file path: :data:`FILE_DEFAULTS`, then ``overrides``.

    Parameters
    ----------
    overrides : dict, optional
        ``{name: value}`` with SubtractionConfig paths (``min_kernel_sources``,
        ``kernel.spatial_kernel_order``) or ip_diffim Task paths (``minKernelSources``,
        ``makeKernel.kernel.active.spatialKernelOrder``).
    """
    changes = dict(FILE_DEFAULTS)
    for name, value in (overrides or {}).items():
        changes[core_path(name)] = value
    return apply_overrides(SubtractionConfig(), changes)


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
    grid = estimate_psf_grid(mi.image, mi.variance, mi.mask, fwhm_guess=guess)
    if grid.images.shape[:2] == (1, 1):
        exp.setPsf(ImagePsf(grid.images[0, 0], average_position=exp.getBBox().getCenter()))
    else:
        x0, y0 = exp.getXY0()
        exp.setPsf(GridImagePsf(grid.images, grid.x_nodes + x0, grid.y_nodes + y0))
    log.info(
        "%s: PSF estimated from its stars on a %dx%d grid (FWHM %.2f-%.2f px).",
        name,
        *grid.images.shape[:2],
        grid.fwhm.min(),
        grid.fwhm.max(),
    )
    return exp


def _ensure_psfs(first, second):
    """:func:`ensure_psf` of two ``(exposure, name)`` pairs at once, the second in a thread.

    The estimates alternate between the host (stamps, moments, fits: NumPy, which releases
    the GIL in its loops) and the compiled detector (XLA), so that the two overlap. An error
    of ``first`` is raised before one of ``second``, as if one ran after the other.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jaxdiffim-psf") as pool:
        later = pool.submit(ensure_psf, *second)
        try:
            ensure_psf(*first)
        finally:
            error = later.exception()  # waits for it
    if error is not None:
        raise error


def _summary(task, result, template_path, science_path, timings):
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
        "mode_scores": {  # mode=best: median held-out residual score of each direction
            k: (float(v) if np.isfinite(v) else None) for k, v in md.get("modeScores", {}).items()
        },
        "kernel_basis": kernel.config.kernel_basis,
        "kernel_size": int(kernel.config.kernel_size),
        "kernel_sum": float(kernel.getKernelSum()),
        "spatial_kernel_order": int(md["spatialKernelOrder"]),
        "spatial_bg_order": int(md["spatialBgOrder"]),
        "spatial_orders_lowered": md.get("spatialOrderReduced"),
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
    config=None,
    score=False,
    overwrite=False,
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
    config : SubtractionConfig, optional
        Default :func:`file_config` ``()``.
    score : bool
        Write the score (preconvolved) image instead of the difference.
    overwrite : bool
        Replace existing outputs.
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
    config = file_config() if config is None else config
    t0 = time.perf_counter()
    inputs = {"template": template_path, "science": science_path, "sources": sources}
    inputs.update({"template PSF": template_psf, "science PSF": science_psf})
    for who, planes in (("template", template_planes), ("science", science_planes)):
        inputs.update({f"{who} {kind}": path for kind, path in (planes or {}).items()})
    refuse_input_targets({"output": output, "summary": summary_path}, inputs)
    for path in (output, summary_path):
        if path is None:
            continue
        if os.path.exists(path) and not overwrite:
            raise OutputExistsError(f"{os.fspath(path)!r} exists; pass --overwrite to replace it.")
        if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise InvalidInputError(f"The folder of {os.fspath(path)!r} does not exist.")
    name = _job_name((template_path, science_path), config, score, sources is not None)
    with programs.job(name):  # the stored programs load while the files are read
        template = read_exposure(template_path, **(template_planes or {}))
        science = read_exposure(science_path, **(science_planes or {}))
        log.info(
            "Read %s and %s (%d x %d pixels) in %.1f s.",
            os.fspath(template_path),
            os.fspath(science_path),
            *science.image.array.shape,
            time.perf_counter() - t0,
        )
        if not template.getBBox().contains(science.getBBox()):
            raise InvalidInputError(
                f"The template (bbox {template.getBBox()}) does not cover the science image (bbox "
                f"{science.getBBox()}); both must be on one pixel grid."
            )
        for exp, psf in ((template, template_psf), (science, science_psf)):
            if psf is not None:
                exp.setPsf(read_psf(psf))
        given = (template.psf is not None, science.psf is not None)
        _ensure_psfs((template, template_path), (science, science_path))
        catalogue = None if sources is None else read_sources(sources)
        t1 = time.perf_counter()
        task_class = AlardLuptonPreconvolveSubtractTask if score else AlardLuptonSubtractTask
        task = task_class(config=task_config(task_class, config))
        log.info("Subtracting (%s)...", "score image" if score else "difference image")
        result = task.run(template, science, catalogue)
        t2 = time.perf_counter()
        log.info("Subtracted in %.1f s (%s).", t2 - t1, result.mode)
        diff = result.scoreExposure if score else result.difference
        if not score and _template_psf_is_better(template, science, given, result):
            diff.setPsf(diff.psf.rebased(template.psf))
            log.info("The difference's PSF is built on the template's (the better-known PSF).")
        write_exposure(diff, output, overwrite=overwrite)
        log.info("Wrote %s.", os.fspath(output))
        timings = {"read": t1 - t0, "subtract": t2 - t1, "write": time.perf_counter() - t2}
        summary = _summary(task, result, template_path, science_path, timings)
        summary["output"] = os.fspath(output)
        if summary_path is not None:
            write_json(summary, summary_path, overwrite)
        return summary


def _template_psf_is_better(template, science, given, result):
    """Whether the difference's PSF is better built on the template's PSF (the unconvolved
    image's, through the decorrelation filter) than on the science PSF through the kernel.

    Only in convolveScience mode (in convolveTemplate the science image is the unconvolved
    one, and its PSF is the base as in ip_diffim). ``given`` says which PSFs came with the
    inputs (the others were estimated from the stars); a science PSF that was given is kept. A
    given template PSF is better than an estimate; between two estimates, the deeper image's
    is: the one whose stars have the higher S/N, that is the lower noise in the science
    image's flux units (the template's sigma times the flux ratio science/template, the
    inverse of the kernel's sum). On the quality benchmark's FITS pairs (a template 4 times
    deeper in variance) the sharp scene's transient fluxes (6 seeds) came out +0.1 % (median)
    against +1.4 % on the science estimate through the kernel. (On the template's PSF through
    the kernel in convolveTemplate mode the kernel's mismatch comes in: the strong scene's
    fluxes -3.3 % against +0.3 %; not done.)
    """
    if result.mode != "convolveScience" or given[1] or template.psf is None:
        return False
    if given[0]:
        return True
    kernel_sum = float(result.psfMatchingKernel.getKernelSum())
    if not (np.isfinite(kernel_sum) and kernel_sum > 0):
        return False
    template_sigma, science_sigma = (_noise(exp) for exp in (template, science))
    return bool(template_sigma / kernel_sum < science_sigma)


def _noise(exp):
    """Median sigma of an exposure's usable pixels (every fourth row and column)."""
    var = np.asarray(exp.variance.array)[::4, ::4]
    var = var[np.isfinite(var) & (var > 0)]
    return float(np.sqrt(np.median(var))) if var.size else np.inf


def _job_name(paths, config, score, catalogue):
    """What identifies the job's programs: the images' shapes (from the headers), the output,
    whether a catalogue is given and the configuration."""
    parts = ["score" if score else "difference", "catalogue" if catalogue else "detect"]
    for path in paths:
        shape = "unknown"
        try:
            with fits.open(path) as hdul:  # headers only
                shape = next(
                    f"{h.header['NAXIS2']}x{h.header['NAXIS1']}"
                    for h in hdul
                    if h.header.get("NAXIS") == 2
                )
        except Exception:  # noqa: BLE001 - reading the file proper reports what is wrong
            pass
        parts.append(shape)
    parts.append(hashlib.sha256(repr(config).encode()).hexdigest()[:12])
    return "-".join(parts)


def task_config(task_class, config):
    """A Task config of ``task_class`` carrying ``config`` (through the one table)."""
    return apply_to_task(config, task_class.ConfigClass())


def write_json(data, path, overwrite=False):
    """Write ``data`` as JSON, atomically (refuses an existing file unless ``overwrite``)."""
    with atomic_output(path, overwrite) as tmp, open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
