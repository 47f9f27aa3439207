"""Kernel set-up and kernel sources: ip_diffim's width rule and source selection (or detection).

Port of the parts of ``AlardLuptonSubtractTask`` that choose the basis widths and kernel size
(``makeKernelBasisList`` with ``scaleByFwhm``) and the kernel sources
(``_sourceSelector``); without a catalogue the built-in detector
(:func:`jaxdiffim.algorithms.detection.detect_sources`) finds them on the science image.
"""

import functools
import logging

import numpy as np

from ..core.basis import alard_lupton_sigmas
from ..core.masks import MASK_PLANES, bits
from ..errors import InsufficientKernelSourcesError
from .flux_agreement import flux_agreement
from .prepare import catalogue_columns
from .sources import select_kernel_sources

__all__ = ["kernel_setup", "kernel_sources", "unsmeared_bits"]

log = logging.getLogger(__name__)


def kernel_setup(config, convolved_fwhm, reference_fwhm):
    """ip_diffim's width rule: Alard-Lupton widths (pixels) and the fit config with its size.

    Parameters
    ----------
    config : SubtractionConfig
    convolved_fwhm, reference_fwhm : float
        FWHMs in pixels of the image that is convolved and of the one it is matched to.

    Returns
    -------
    sigmas : numpy.ndarray, shape (n_gauss,)
    KernelFitConfig
    """
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


def kernel_sources(sources, prep, kernel_size, config, extra_edge=0):
    """Select kernel sources from ``sources``, or detect them on the science image.

    Without an ``isolated`` column a source counts as isolated when no other catalogue source
    lies within two science FWHMs (a blend); neighbours further away sit in both images' stamps
    and are fitted like the source itself. Besides the selection, the result holds every input
    position on the image (``qa_x``, ``qa_y``): ip_diffim measures the footprint ratio on all
    of them.

    When fewer than ``min_kernel_sources`` pass, the selection is repeated
    once without the upper S/N limit (saturated stars stay out through the mask cut) and with
    only the stamps required inside the image (no ``restrict_kernel_edge_sources`` margin):
    small cut-outs hold a handful of stars, and the brightest or an off-centre one makes the
    difference between a kernel and none.

    Returns
    -------
    dict
        ``x``, ``y``, ``index``, ``rating`` of the chosen sources; ``qa_x``, ``qa_y``;
        ``relaxed`` (None, or the message saying how the selection was widened: the caller
        logs it as a warning for the direction it fits).
    """
    science, template = prep.science, prep.template
    mask = np.asarray(science.mask) | np.asarray(template.mask)
    if sources is None:  # the built-in detector ran in prepare_inputs (prep.detection)
        found = prep.detection
        x, y, snr, rating = found.x, found.y, found.snr, found.flux
        flags = isolated = None
        origin = "sources the built-in detection found on the science image"
    else:
        x, y, snr, rating, flags, isolated = catalogue_columns(sources)
        origin = "catalogue sources"
    select = functools.partial(
        select_kernel_sources,
        x,
        y,
        shape=science.image.shape,
        mask=mask,
        kernel_size=kernel_size,
        snr=snr,
        flags=flags,
        isolated=isolated,
        min_snr=config.detection_threshold,
        extra_edge=extra_edge,
        isolation_radius=2.0 * prep.science_size.fwhm,
        exclude_planes=config.exclude_mask_planes,
        max_sources=config.max_kernel_sources,
        min_sources=config.min_kernel_sources,
        origin=origin,
    )
    relaxed = None
    try:
        selection = select(
            max_snr=config.detection_threshold_max,
            restrict_edge=config.restrict_kernel_edge_sources,
        )
    except InsufficientKernelSourcesError as err:
        if np.isinf(config.detection_threshold_max) and not config.restrict_kernel_edge_sources:
            raise  # nothing to widen
        # policy (jaxdiffim.algorithms.config): widen the window once before giving up
        selection = select(max_snr=np.inf, restrict_edge=False)
        relaxed = (  # logged by the caller, for the direction it fits
            f"{err} Kept {len(selection.indices)} sources with no upper S/N limit and only the "
            "stamp inside the image."
        )
    idx = selection.indices
    fwhm = max(prep.template_size.fwhm, prep.science_size.fwhm)
    agree, _ = flux_agreement(
        template,
        science,
        np.asarray(x, float)[idx],
        np.asarray(y, float)[idx],
        fwhm,
        bits(config.exclude_mask_planes),
    )
    if agree.sum() >= max(config.min_kernel_sources, 3):
        if not agree.all():
            log.info(
                "%d of %d kernel sources left out: their template flux does not follow the "
                "others' ratio (transients, variables).",
                int((~agree).sum()),
                agree.size,
            )
        idx = idx[agree]
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
        "relaxed": relaxed,
    }


def unsmeared_bits(config, template=True):
    """Planes copied through a convolution unsmeared: labels (injections, renamed template
    planes) always, and the preserved template planes when the template is convolved."""
    labels = [name + "_TEMPLATE" for name in config.rename_template_mask]
    labels += ["INJECTED", "INJECTED_CORE", "INJECTED_TEMPLATE"]
    out = bits(n for n in labels if n in MASK_PLANES)
    return out | bits(config.preserve_template_mask) if template else out
