"""The result of the subtraction, its metrics and the QA policy.

:class:`SubtractionResult` holds ip_diffim's ``Struct`` fields on arrays; :func:`finalize_result`
records the footprint residual ratio (measured inside the subtraction program, see
:mod:`jaxdiffim.core.quality`) and applies the QA policy.
"""

import logging
import time
from typing import NamedTuple

import numpy as np

from ..core.config import KernelFitConfig
from ..core.convolve import MaskedImage
from ..errors import BadSubtractionError
from .quality import check_subtraction_quality

__all__ = ["SubtractionResult", "finalize_result", "solution_metrics", "sources_out"]

log = logging.getLogger(__name__)


class SubtractionResult(NamedTuple):
    """Outputs of :func:`~jaxdiffim.algorithms.alard_lupton.alard_lupton_subtract` (ip_diffim's
    ``Struct`` fields).

    Attributes
    ----------
    difference : MaskedImage
        The (decorrelated) difference, or the score image for the preconvolution variant.
    matched_template, matched_science : MaskedImage
        The two images that were subtracted (one of them convolved).
    background : numpy.ndarray, shape (H, W)
        The fitted differential background model on the science grid, with ip_diffim's sign
        (``background_scale`` times the fitted model, so that
        ``difference = matched_science - matched_template - background`` before decorrelation
        when ``do_subtract_background``).
    background_scale : float
        1 in convolveTemplate mode, ``-1/κ`` in convolveScience mode.
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
    difference_psf : DifferencePsf
        ``difference_psf(x, y)``: the unit-sum PSF of ``difference`` at array position
        ``(x, y)`` (the unconvolved image's PSF through the decorrelation filter and, for the
        score image, the preconvolution; :mod:`jaxdiffim.algorithms.difference_psf`).
    """

    difference: MaskedImage
    matched_template: MaskedImage
    matched_science: MaskedImage
    background: np.ndarray
    background_scale: float
    solution: object
    kernel_config: KernelFitConfig
    mode: str
    kernel_sources: dict
    metrics: dict
    difference_psf: object


def solution_metrics(metrics, solution, chosen):
    metrics["nPsfSources"] = int(len(chosen["x"]))
    metrics["kernelSourceSelectionRelaxed"] = bool(chosen.get("relaxed", False))
    metrics["nKernelSourcesUsed"] = int(np.count_nonzero(np.asarray(solution.used)))
    metrics["spatialKernelSum"] = float(solution.kernel_sum)
    metrics["spatialConditionNum"] = float(solution.condition_number)
    metrics["backgroundParameters"] = [
        float(v) for v in np.asarray(solution.background_coefficients)
    ]


def sources_out(chosen, solution):
    n = len(chosen["x"])
    return {
        "x": np.asarray(chosen["x"]),
        "y": np.asarray(chosen["y"]),
        "index": np.asarray(chosen["index"]),
        "used": np.asarray(solution.used)[:n],
    }


def finalize_result(result, ratio, config, t0):
    """Record the QA ratio and the total time, and apply the QA policy.

    A QA exception carries the finished result in its ``result`` attribute.

    Parameters
    ----------
    result : SubtractionResult
    ratio : FootprintRatio
        Footprint residual ratio over every input source (circles of radius 5 σ of the science
        PSF, measured against the image the kernel was fitted to).
    config : SubtractionConfig
    t0 : float
        ``time.perf_counter()`` at the start.
    """
    metrics = result.metrics
    metrics["differenceFootprintRatioMean"] = ratio.mean
    metrics["differenceFootprintRatioStdev"] = ratio.std
    if not np.isfinite(ratio.mean):
        log.warning("No source has a usable footprint; the residual ratio is undefined.")
    metrics["timings"]["total"] = time.perf_counter() - t0
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
