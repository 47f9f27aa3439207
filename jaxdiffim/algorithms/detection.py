"""Built-in point-source detector: kernel sources when no catalogue is given.

:func:`detect_sources` finds isolated, unsaturated point sources: a two-pass binned sky, a PSF
matched filter evaluated at every pixel with FFT correlations, local maxima of the S/N map, a
Gaussian (log-quadratic) sub-pixel refinement, and cuts on masks, saturation, edge, crowding and
shape. It plays the role of ip_diffim's fallback kernel-source detection
(``allowKernelSourceDetection``: threshold 10σ, minimal measurement), so that two images and
their PSFs are enough to subtract. Coordinates are 0-based array pixels (``x`` the column).
"""

import math
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..core import programs
from ..core.convolve import pad_to_bucket
from ..core.masks import DETECTION_EXCLUDE, bits
from ..errors import InvalidInputError
from .detection_maps import detection_maps_jit
from .peaks import curvature_field, gather_3x3, local_curvature, psf_reference, refine_peaks
from .psf_shape import psf_fwhm
from .sky import sky_layout
from .sources import _check_int, _crowded

__all__ = [
    "DetectionPlan",
    "Detections",
    "detect_sources",
    "detections_from_maps",
    "plan_detection",
    "unit_psf",
]


class Detections(NamedTuple):
    """Result of :func:`detect_sources`, sorted by decreasing ``snr``.

    Attributes
    ----------
    x, y : ndarray, shape (n,), float64
        Sub-pixel centres in array pixel coordinates (column, row).
    flux : ndarray, shape (n,), float64
        PSF-matched-filter flux, in image units (the PSF is normalised to unit sum).
    flux_err : ndarray, shape (n,), float64
        Its standard deviation from the variance plane (same units).
    snr : ndarray, shape (n,), float64
        ``flux / flux_err``.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    flux_err: np.ndarray
    snr: np.ndarray


def _validate_detection_inputs(image, variance, mask, psf):
    # host-side checks in numpy (no device program); the detector's program converts
    image = np.asarray(image)
    variance = np.asarray(variance)
    if image.ndim != 2:
        raise InvalidInputError(f"image must be 2-D; got shape {image.shape}.")
    if variance.shape != image.shape:
        raise InvalidInputError(
            f"variance has shape {variance.shape}; expected the image shape {image.shape}."
        )
    for name, arr in (("image", image), ("variance", variance)):
        if not jnp.issubdtype(arr.dtype, jnp.number) or jnp.issubdtype(
            arr.dtype, jnp.complexfloating
        ):
            raise InvalidInputError(f"{name} must be real-valued; got dtype {arr.dtype}.")
    if mask is None:
        mask = np.zeros(image.shape, np.int32)
    else:
        mask = np.asarray(mask)
        if mask.shape != image.shape:
            raise InvalidInputError(
                f"mask has shape {mask.shape}; expected the image shape {image.shape}."
            )
        if not jnp.issubdtype(mask.dtype, jnp.integer):
            raise InvalidInputError(f"mask must be an integer array; got dtype {mask.dtype}.")
    return (
        image.astype(np.float32, copy=False),
        variance.astype(np.float32, copy=False),
        mask.astype(np.int32, copy=False),
        unit_psf(psf),
    )


def unit_psf(psf):
    """``psf`` checked (odd, square, finite, positive sum) and normalised to unit sum."""
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != 2 or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0 or psf.shape[0] < 3:
        raise InvalidInputError(
            f"psf must be an odd square image at least 3 pixels wide; got shape {psf.shape}."
        )
    if not np.all(np.isfinite(psf)):
        raise InvalidInputError("psf has non-finite pixels.")
    total = psf.sum()
    if not total > 0:
        raise InvalidInputError(f"psf must have a positive sum; got {total}.")
    return psf / total


def detect_sources(
    image,
    variance,
    mask,
    psf,
    *,
    threshold=10.0,
    exclude_planes=DETECTION_EXCLUDE,
    saturated_planes=("SAT",),
    saturation=None,
    isolation_radius=None,
    edge=None,
    max_sources=None,
    background_bin=64,
    reject_blends=True,
    psf_at=None,
    extended=False,
):
    """Detect isolated, unsaturated point sources for kernel fitting (no catalogue needed).

    Method
    ------
    1. **Sky**, in two passes over ``background_bin``-pixel bins, each interpolated bilinearly
       between bin centres and extrapolated linearly to the border (this follows sky
       gradients, which a single median would not). Pass 1: the median of about 16² samples
       per bin after one 3-sigma MAD clip, excluded and saturated pixels ignored. Pass 2: the
       pass-1 residual's 3-sigma-clipped mean over every pixel of the bin, leaving out the PSF
       footprints of pixels whose pass-1 S/N exceeds 3; it removes the upward bias that
       the stars give a median, and working on a residual keeps those holes from moving a
       bin's effective centre along a gradient.
    2. **Matched filter** with the unit-sum PSF ``P``: at every pixel
       ``F = sum P (I - sky) / sum P²`` and ``var_F = sum P² var / (sum P²)²`` (two
       :func:`~jaxdiffim.core.convolve.fft_correlate` passes), ``snr = F / sqrt(var_F)``. Excluded
       and non-finite pixels get zero weight (image and variance set to 0 there); where less
       than half of the ``P²`` weight falls on good pixels the S/N is set to 0. ``F`` is
       filtered once, with the pass-1 sky; the pass-2 correction ``c`` is bilinear, so it
       enters as ``F - c / sum P²`` (its matched filter wherever the PSF footprint is on good
       pixels, which the cuts below demand of every detection).
    3. **Peaks**: strict local maxima of the S/N map over 3x3 pixels. Those with
       ``snr >= threshold / 2`` are the neighbours of the isolation test; those with
       ``snr >= threshold`` are candidates.
    4. **Refinement**: a quadratic fit to ``log F`` over the 3x3 neighbourhood gives the
       sub-pixel centre and the peak flux (exact for a Gaussian PSF; a quadratic in ``F`` where
       a neighbour is not positive). ``flux_err`` is ``sqrt(var_F)`` at the peak pixel.
    5. **Cuts**: any excluded or non-finite pixel within the PSF footprint plus 1 pixel (the
       fit's neighbours); any saturated pixel (``saturated_planes`` or ``image >= saturation``)
       within the PSF footprint (the footprint: a square of 3 FWHM from the centre, at most the
       PSF stamp); closer than ``edge`` pixels to the border (and always the
       outermost pixel); another peak within ``isolation_radius`` unless it is more than 100x
       fainter in flux; and, if ``reject_blends``, a 3x3 curvature of ``log F`` that does not
       match the PSF's own (see below; with ``extended``, only one sharper than the PSF's).

    Two stars closer than about twice the PSF sigma merge into a single peak of the matched
    filter, so the isolation test alone cannot see them. The shape test catches them: a blend
    is flatter than the PSF along the pair's axis (4 px apart with sigma 2 px: half the
    curvature). The tolerance is ``max(0.3, 5 sigma)``, sigma being the sky-limited noise of
    the curvature at the peak's S/N, so faint blends (S/N below about 30) can pass.

    Parameters
    ----------
    image, variance : array_like, shape (H, W)
        Pixel values and their variance (image units and units²). NaN/inf allowed (ignored).
    mask : array_like of int, shape (H, W), or None
        Integer mask (planes of :data:`jaxdiffim.core.masks.MASK_PLANES`).
    psf : array_like, shape (k, k)
        PSF image centred on pixel ``k // 2``; odd ``k >= 3``; normalised to unit sum here.
    threshold : float
        Detection S/N threshold (> 0).
    exclude_planes : sequence of str
        Planes whose pixels carry no data.
    saturated_planes : sequence of str
        Planes that mark saturation.
    saturation : float, optional
        Pixel value at or above which a pixel counts as saturated.
    isolation_radius : float, optional
        Pixels; default ``max(5, 2 FWHM)`` with the FWHM from the PSF's adaptive second
        moments (:func:`~jaxdiffim.algorithms.psf_shape.psf_fwhm`).
    edge : int, optional
        Minimum distance of a detection from the border in pixels; default half the
        footprint's side.
    max_sources : int, optional
        Keep at most this many (the highest S/N).
    background_bin : int
        Sky bin size in pixels (>= 8).
    reject_blends : bool
        Apply the shape test.
    psf_at : callable, optional
        ``psf_at(x, y)`` -> the PSF image at column ``x``, row ``y`` (any sum), for an image
        whose PSF varies: the shape test then compares each peak with the filter's response
        to the PSF at its position (on a 5 x 5 grid of nodes, interpolated) instead of to
        ``psf``; the filter stays ``psf``.
    extended : bool
        Keep sources broader than the PSF (galaxies, blends): with ``reject_blends``, the shape
        test then rejects only peaks sharper than the PSF (cosmic rays, hot pixels).

    Returns
    -------
    Detections
        Empty arrays when nothing is found (for example on an all-masked image).

    Raises
    ------
    InvalidInputError
        Wrong ranks or shapes, a non-integer mask, a PSF that is not odd, square, finite with a
        positive sum, or a non-positive threshold.
    """
    image, variance, mask, psf = _validate_detection_inputs(image, variance, mask, psf)
    plan = plan_detection(
        image.shape,
        psf,
        threshold=threshold,
        exclude_planes=exclude_planes,
        saturated_planes=saturated_planes,
        saturation=saturation,
        isolation_radius=isolation_radius,
        edge=edge,
        max_sources=max_sources,
        background_bin=background_bin,
        reject_blends=reject_blends,
        psf_at=None if psf_at is None else lambda x, y: unit_psf(psf_at(x, y)),
        extended=extended,
    )
    maps = programs.call(detection_maps_jit, image, variance, mask, *plan.arrays, **plan.static)
    return detections_from_maps(maps, plan)


class DetectionPlan(NamedTuple):
    """Everything :func:`detect_sources` needs besides the image (from :func:`plan_detection`).

    Attributes
    ----------
    arrays : tuple
        Traced arguments of :func:`detection_maps` after the image, variance and mask.
    static : dict
        Its static keyword arguments.
    host : dict
        Settings of the host-side part (:func:`detections_from_maps`).
    """

    arrays: tuple
    static: dict
    host: dict


#: Half-side of the detector's footprint (bad and saturated pixels, edge) in FWHM.
_FOOTPRINT_FWHM = 3.0


def plan_detection(
    shape,
    psf,
    *,
    threshold=10.0,
    exclude_planes=DETECTION_EXCLUDE,
    saturated_planes=("SAT",),
    saturation=None,
    isolation_radius=None,
    edge=None,
    max_sources=None,
    background_bin=64,
    reject_blends=True,
    psf_at=None,
    extended=False,
):
    """Validate the settings of :func:`detect_sources` for an image of ``shape`` (host side).

    ``psf`` must be validated and normalised already (odd, square, unit sum). ``psf_at``
    (optional, ``psf_at(x, y)`` -> the unit-sum PSF image there) makes the shape test compare
    each peak with the filter's response to the PSF at its own position
    (:func:`~jaxdiffim.algorithms.peaks.curvature_field`) instead of to ``psf`` itself.

    Returns
    -------
    DetectionPlan
    """
    threshold = float(threshold)
    if not (np.isfinite(threshold) and threshold > 0):
        raise InvalidInputError(f"threshold must be a positive number; got {threshold!r}.")
    background_bin = _check_int(background_bin, "background_bin", 8)
    if max_sources is not None:
        max_sources = _check_int(max_sources, "max_sources", 0)
    fwhm, curvature, noise = psf_reference(psf)
    try:  # adaptive moments: the unweighted ones grow with a Moffat's wings and the stamp
        fwhm = psf_fwhm(psf)
    except InvalidInputError:
        pass
    # the footprint of the cuts: 3 FWHM from the centre, at most the stamp (a stamp that holds
    # the wings out to 5 FWHM made every source within 30 px of a masked pixel a reject)
    footprint = min(psf.shape[0], 2 * math.ceil(_FOOTPRINT_FWHM * fwhm) + 1)
    edge = footprint // 2 if edge is None else _check_int(edge, "edge", 0)
    sat_level = np.inf if saturation is None else float(saturation)
    if np.isnan(sat_level):
        raise InvalidInputError("saturation must be a number or None; got NaN.")
    radius = max(5.0, 2.0 * fwhm) if isolation_radius is None else float(isolation_radius)
    if not (np.isfinite(radius) and radius >= 0):
        raise InvalidInputError(f"isolation_radius must be >= 0; got {isolation_radius!r}.")
    height, width = shape
    layout_y = sky_layout(height, background_bin)
    layout_x = sky_layout(width, background_bin)
    # the PSF zero-padded to a bucket side and the footprints traced: another seeing compiles
    # nothing
    arrays = (
        pad_to_bucket(np.asarray(psf, np.float32)),
        bits(exclude_planes),
        bits(saturated_planes),
        np.float32(sat_level),
        np.float32(0.5 * threshold),
        (layout_y[3:], layout_x[3:]),
        np.array([footprint + 2, psf.shape[0]], np.int32),
    )
    static = dict(
        n_bins=(layout_y[0], layout_x[0]),
        size=(layout_y[1], layout_x[1]),
        stride=(layout_y[2], layout_x[2]),
    )
    field = None
    if psf_at is not None and curvature is not None:
        field = curvature_field(psf, psf_at, shape, curvature)
    host = dict(
        threshold=threshold,
        edge=edge,
        radius=radius,
        curvature=curvature,
        curvature_field=field,
        noise=noise,
        reject_blends=bool(reject_blends),
        extended=bool(extended),
        max_sources=max_sources,
    )
    return DetectionPlan(arrays, static, host)


def detections_from_maps(maps, plan):
    """The host-side part of :func:`detect_sources`: peaks, refinement and cuts.

    Parameters
    ----------
    maps : tuple of 4 arrays, shape (H, W)
        From :func:`detection_maps`.
    plan : DetectionPlan

    Returns
    -------
    Detections
    """
    flux_map, sigma_map, snr_map, flag_map = maps
    threshold, edge, radius = plan.host["threshold"], plan.host["edge"], plan.host["radius"]
    flag_map = np.asarray(flag_map)
    height, width = flag_map.shape
    py, px = np.nonzero(flag_map & 1)
    interior = (py >= 1) & (py <= height - 2) & (px >= 1) & (px <= width - 2)
    py, px = py[interior], px[interior]
    empty = np.zeros(0)
    if py.size == 0:
        return Detections(empty, empty, empty, empty, empty)

    n = py.size
    padded_n = max(16, 1 << int(np.ceil(np.log2(n))))
    pad = padded_n - n
    values, err, snr_pix = programs.call(
        gather_3x3,
        flux_map,
        sigma_map,
        snr_map,
        np.pad(py, (0, pad), constant_values=1).astype(np.int32),
        np.pad(px, (0, pad), constant_values=1).astype(np.int32),
    )
    values = np.asarray(values, np.float64)[:n]
    err = np.asarray(err, np.float64)[:n]
    snr_pix = np.asarray(snr_pix, np.float64)[:n]
    curvature = plan.host["curvature"]
    if plan.host["curvature_field"] is not None:
        curvature = local_curvature(plan.host["curvature_field"], px, py)
    dx, dy, flux, shape_ok = refine_peaks(
        values, snr_pix, curvature, plan.host["noise"], plan.host["extended"]
    )
    x = px + dx
    y = py + dy

    keep = snr_pix >= threshold
    keep &= (flag_map[py, px] & 0b110) == 0
    distance = np.minimum(np.minimum(x, width - 1 - x), np.minimum(y, height - 1 - y))
    keep &= distance >= edge
    keep &= ~_crowded(x, y, radius, flux)
    if plan.host["reject_blends"]:
        keep &= shape_ok
    keep &= np.isfinite(flux) & np.isfinite(err) & (err > 0)

    idx = np.nonzero(keep)[0]
    snr = flux[idx] / err[idx]
    order = np.argsort(-snr, kind="stable")
    if plan.host["max_sources"] is not None:
        order = order[: plan.host["max_sources"]]
    idx = idx[order]
    return Detections(x[idx], y[idx], flux[idx], err[idx], snr[order])
