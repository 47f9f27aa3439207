"""Peaks of the detector's S/N map: sub-pixel centres, shape test against the PSF.

Used by :func:`jaxdiffim.algorithms.detection.detect_sources`: a 3x3 log-parabola fit around
each peak of the matched-filter S/N map gives its centre and curvature, which must match the
PSF's (``psf_reference``) within a tolerance that widens with the noise.
"""

import jax
import jax.numpy as jnp
import numpy as np

from ..core.basis import FWHM_PER_SIGMA
from ..errors import InvalidInputError

__all__ = [
    "curvature_field",
    "gather_3x3",
    "local_curvature",
    "log_hessian",
    "psf_reference",
    "refine_peaks",
]

#: Shape test: minimum tolerance on the curvature ratio, and its width in noise sigmas.
_SHAPE_MIN_TOLERANCE = 0.3
_SHAPE_N_SIGMA = 5.0


@jax.jit
def gather_3x3(flux, sigma, snr, iy, ix):
    """3x3 flux neighbourhoods ``(n, 3, 3)``, and flux error and S/N at ``(iy, ix)``."""
    off = jnp.arange(-1, 2)
    rows = iy[:, None, None] + off[None, :, None]
    cols = ix[:, None, None] + off[None, None, :]
    return flux[rows, cols], sigma[iy, ix], snr[iy, ix]


def log_hessian(values):
    """Gradient and negated Hessian of a 3x3 sample (central differences), batched.

    ``values`` has shape (n, 3, 3) indexed ``[row, col]``; returns ``(gx, gy)`` and
    ``(bxx, byy, bxy)`` with ``B = -H``.
    """
    gx = 0.5 * (values[:, 1, 2] - values[:, 1, 0])
    gy = 0.5 * (values[:, 2, 1] - values[:, 0, 1])
    bxx = -(values[:, 1, 2] - 2.0 * values[:, 1, 1] + values[:, 1, 0])
    byy = -(values[:, 2, 1] - 2.0 * values[:, 1, 1] + values[:, 0, 1])
    bxy = -0.25 * (values[:, 2, 2] - values[:, 2, 0] - values[:, 0, 2] + values[:, 0, 0])
    return (gx, gy), (bxx, byy, bxy)


def psf_reference(psf):
    """PSF-derived constants for the peak refinement and the shape test.

    Returns
    -------
    fwhm : float
        From the PSF's second moments, ``2.3548 sqrt((Ixx + Iyy) / 2)``.
    curvature : tuple (axx, ayy, axy) or None
        Negated Hessian of ``log R`` at zero lag, ``R`` the PSF autocorrelation (the matched
        filter's noiseless response to a star); None when it is not a proper peak.
    noise : float
        Standard deviation of a Hessian element of ``log F`` at unit S/N, relative to the
        reference curvature (sky-limited noise).
    """
    k = psf.shape[0]
    u = np.arange(k) - k // 2
    xc = np.sum(psf * u[None, :])
    yc = np.sum(psf * u[:, None])
    ixx = np.sum(psf * (u[None, :] - xc) ** 2)
    iyy = np.sum(psf * (u[:, None] - yc) ** 2)
    second = 0.5 * (ixx + iyy)
    fwhm = FWHM_PER_SIGMA * np.sqrt(second) if second > 0 else k / 2.0

    curvature = _response_curvature(psf, psf)
    if curvature is None:
        return fwhm, None, np.inf
    axx, ayy, axy = curvature
    padded = np.pad(psf, 1)
    sum_p2 = np.sum(psf * psf)
    d2x = padded[1:-1, 2:] - 2.0 * psf + padded[1:-1, :-2]
    d2y = padded[2:, 1:-1] - 2.0 * psf + padded[:-2, 1:-1]
    noise = max(
        np.sqrt(np.sum(d2x * d2x) / sum_p2) / axx, np.sqrt(np.sum(d2y * d2y) / sum_p2) / ayy
    )
    return fwhm, (axx, ayy, axy), float(noise)


def _response_curvature(filter_psf, psf):
    """Negated Hessian ``(axx, ayy, axy)`` of ``log R`` at zero lag, ``R`` the matched filter
    ``filter_psf``'s noiseless response to a star of PSF ``psf`` (odd square stamps, centred);
    None when ``R`` has no proper peak there."""
    k = min(filter_psf.shape[0], psf.shape[0])
    crop = [(a.shape[0] - k) // 2 for a in (filter_psf, psf)]
    f = filter_psf[crop[0] : crop[0] + k, crop[0] : crop[0] + k]
    p = np.pad(psf[crop[1] : crop[1] + k, crop[1] : crop[1] + k], 1)
    lags = np.empty((3, 3))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            lags[dy + 1, dx + 1] = np.sum(f * p[1 + dy : 1 + dy + k, 1 + dx : 1 + dx + k])
    if np.any(lags <= 0):
        return None
    (_, _), (axx, ayy, axy) = log_hessian(np.log(lags / lags[1, 1])[None])
    axx, ayy, axy = float(axx[0]), float(ayy[0]), float(axy[0])
    if not (axx > 0 and axx * ayy - axy * axy > 0):
        return None
    return axx, ayy, axy


#: Nodes per axis of :func:`curvature_field`.
FIELD_NODES = 5


def curvature_field(filter_psf, psf_at, shape, fallback, nodes=FIELD_NODES):
    """The shape test's reference curvature across an image whose PSF varies.

    A star is compared with the filter's response to the PSF *at its position*: with one
    reference (the central PSF's), the stars where the PSF is broader or more elongated fail the
    test, and in a field whose FWHM varies by 50 % those were most of the bright stars (which
    then got no kernel fit and left residuals).

    Parameters
    ----------
    filter_psf : ndarray, shape (k, k)
        The matched filter (unit sum).
    psf_at : callable
        ``psf_at(x, y)`` -> the unit-sum PSF image at column ``x``, row ``y``.
    shape : tuple of 2 ints
        ``(H, W)`` of the image.
    fallback : tuple of 3 floats
        Curvature used at a node whose response has no proper peak, or whose PSF image
        ``psf_at`` rejects with :class:`~jaxdiffim.errors.InvalidInputError`.
    nodes : int
        Nodes per axis, at the centres of ``nodes``² equal cells.

    Returns
    -------
    tuple
        ``(node_x (nodes,), node_y (nodes,), curvature (3, nodes, nodes))`` for
        :func:`local_curvature`.
    """
    h, w = shape
    node_x = (np.arange(nodes) + 0.5) * w / nodes - 0.5
    node_y = (np.arange(nodes) + 0.5) * h / nodes - 0.5
    grid = np.empty((3, nodes, nodes))
    for i, y in enumerate(node_y):
        for j, x in enumerate(node_x):
            try:
                found = _response_curvature(filter_psf, np.asarray(psf_at(x, y), np.float64))
            except InvalidInputError:  # no usable PSF image there: the central reference
                found = None
            grid[:, i, j] = fallback if found is None else found
    return node_x, node_y, grid


def local_curvature(field, x, y):
    """Bilinear interpolation of a :func:`curvature_field` at ``(x, y)`` (shape (n,) each),
    constant beyond the outer nodes; returns ``(axx, ayy, axy)``, shape (n,) each.

    ``scipy.ndimage.map_coordinates`` (order 1) at the fractional node indices: ``scipy.ndimage``
    is loaded by the PSF estimate anyway, where ``scipy.interpolate`` would add 0.5 s to every
    command-line start.
    """
    from scipy import ndimage  # only where a PSF varies

    node_x, node_y, grid = field
    x, y = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float))
    index = np.stack(
        [
            np.interp(y.ravel(), node_y, np.arange(node_y.size)),
            np.interp(x.ravel(), node_x, np.arange(node_x.size)),
        ]
    )
    out = [
        ndimage.map_coordinates(plane, index, order=1, mode="nearest").reshape(x.shape)
        for plane in grid
    ]
    return out[0], out[1], out[2]


def refine_peaks(values, snr_pix, curvature, noise, extended=False):
    """Sub-pixel offset, peak flux and shape verdict from 3x3 flux neighbourhoods.

    A quadratic is fitted to ``log F`` (exact for a Gaussian PSF, whose matched-filter response
    is Gaussian); where some ``F <= 0`` a quadratic in ``F`` itself is used and the shape is not
    judged. The shape test compares the fitted curvature ``B`` with the PSF's ``A`` through the
    generalised eigenvalues of ``(B, A)``: 1 for a point source, < 1 for a blend or an extended
    source, > 1 for something sharper than the PSF (cosmic ray). They must lie within
    ``1 ± max(0.3, 5 noise / snr)``; with ``extended``, only the upper bound is applied (a
    peak is rejected only when it is judged sharper than the PSF). ``curvature`` holds three
    floats, or three arrays of shape (n,) (the PSF's at each peak).
    """
    positive = np.all(values > 0, axis=(1, 2))
    work = np.where(positive[:, None, None], np.log(np.where(values > 0, values, 1.0)), values)
    (gx, gy), (bxx, byy, bxy) = log_hessian(work)
    det = bxx * byy - bxy * bxy
    definite = (bxx > 0) & (det > 0)
    safe = np.where(definite, det, 1.0)
    dx = np.where(definite, (byy * gx - bxy * gy) / safe, 0.0)
    dy = np.where(definite, (bxx * gy - bxy * gx) / safe, 0.0)
    dx, dy = np.clip(dx, -1.0, 1.0), np.clip(dy, -1.0, 1.0)
    # Value of the quadratic at its maximum: v0 + g.d - d.B.d / 2.
    gain = gx * dx + gy * dy - 0.5 * (bxx * dx * dx + 2.0 * bxy * dx * dy + byy * dy * dy)
    centre = values[:, 1, 1]
    flux = np.where(positive, np.exp(work[:, 1, 1] + gain), centre + gain)

    shape_ok = ~positive | definite
    if curvature is not None:
        axx, ayy, axy = curvature
        det_a = axx * ayy - axy * axy
        trace = axx * byy + ayy * bxx - 2.0 * axy * bxy
        disc = np.sqrt(np.maximum(trace * trace - 4.0 * det_a * det, 0.0))
        lam_lo = (trace - disc) / (2.0 * det_a)
        lam_hi = (trace + disc) / (2.0 * det_a)
        with np.errstate(divide="ignore", invalid="ignore"):
            tol = np.maximum(_SHAPE_MIN_TOLERANCE, _SHAPE_N_SIGMA * noise / snr_pix)
        judged = positive & definite
        sharp_ok = lam_hi <= 1.0 + tol
        if extended:
            shape_ok = ~judged | sharp_ok
        else:
            shape_ok = ~positive | (judged & (lam_lo >= 1.0 - tol) & sharp_ok)
    return dx, dy, flux, shape_ok
