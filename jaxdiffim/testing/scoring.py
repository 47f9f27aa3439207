"""Scores of a difference image against the truth of a simulated scene.

:func:`score_difference` measures what a survey cares about (``experiments/quality_benchmark.py``
and ``tests/test_quality_benchmark.py`` use it), the same way for every method:

* **detections**: the difference filtered with its PSF at the centre, divided by the filtered
  *true* noise (``sqrt(V ⊛ P²)`` with ``V`` the true variances of the science image and the
  template in the difference's units), then by one global factor measured on empty sky (so that
  the correlations each method leaves in its noise do not matter); local maxima of ``|S/N| >= 5``
  (5 × 5 pixels) on usable pixels that match no transient or variable star within 3 pixels are
  **false positives** (per Mpix of usable area). Usable: no bad bit in the method's mask (when
  it gives one) and none in either input's mask within 2 FWHM + 2 pixels (a kernel half-width).
* **noise**: the robust standard deviation (1.4826 MAD) of ``D / sqrt(variance)`` on empty sky,
  with the method's own variance plane (``None`` without one).
* **constant stars**: PSF-fit flux (the method's difference PSF at each star) over its true
  error; the fraction beyond 5σ among the unsaturated, non-variable stars with usable
  footprints.
* **transients**: ``Σ measured / Σ true - 1`` (inverse-variance weights) of the PSF-fit fluxes of
  the transients with true S/N >= 10 (the **flux bias**, which needs the right PSF of the
  difference), and the
  **completeness**: the fraction of transients with true S/N >= 7 detected.
* **variable stars**: PSF-fit flux over the true change of those whose change has S/N >= 10,
  the median and the lowest (``variable_flux_ratio``, ``variable_flux_ratio_min``; a variable
  that became a kernel source reads near 0).
"""

import numpy as np
from scipy import ndimage, signal

from ..core.masks import bits

__all__ = ["BAD_PLANES", "score_difference"]

#: Mask planes whose pixels are not scored.
BAD_PLANES = ("NO_DATA", "BAD", "SAT", "EDGE", "SAT_TEMPLATE", "SUSPECT", "CR", "INTRP")
_MATCH = 3.0
_THRESHOLD = 5.0


def _robust_std(values):
    values = values[np.isfinite(values)]
    return 1.4826 * np.median(np.abs(values - np.median(values)))


def _psf_fit(image, weight, psf_at, x, y):
    """Weighted PSF-fit fluxes and errors (``weight`` = 1 / variance); NaN on bad pixels."""
    h, w = image.shape
    flux, err = np.full(x.size, np.nan), np.full(x.size, np.nan)
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        p = np.asarray(psf_at(xi, yi), float)
        half = p.shape[0] // 2
        ix, iy = int(np.rint(xi)), int(np.rint(yi))
        if ix - half < 0 or iy - half < 0 or ix + half >= w or iy + half >= h:
            continue
        p = ndimage.shift(p, (yi - iy, xi - ix), order=3, mode="constant")
        box = np.s_[iy - half : iy + half + 1, ix - half : ix + half + 1]
        d, wt = image[box], weight[box]
        if not np.all(np.isfinite(d) & np.isfinite(wt)):
            continue
        a = np.sum(p * p * wt)
        flux[i] = np.sum(d * p * wt) / a
        err[i] = 1.0 / np.sqrt(a)
    return flux, err


def score_difference(difference, truth, psf_at, units, variance=None, mask=None):
    """Score one difference image.

    Parameters
    ----------
    difference : numpy.ndarray, shape (H, W)
        New sources positive.
    truth : dict
        :attr:`jaxdiffim.testing.scenes.Scene.truth`, with ``input_mask`` (the OR of both
        inputs' masks) added by the caller.
    psf_at : callable
        ``psf_at(x, y)``: unit-sum PSF image of the difference at array position ``(x, y)``.
    units : float
        Difference units per science count (1 when the template is convolved, ``1 / κ`` when
        the science image is).
    variance : numpy.ndarray, optional
        The method's variance plane (for the noise score).
    mask : numpy.ndarray of int, optional
        The method's mask plane.

    Returns
    -------
    dict
        ``false_positives_per_mpix``, ``n_false_positives``, ``false_positives_xy`` (array
        of shape (n, 2)), ``false_positives_near_bright``
        (fraction within 15 px of a star brighter than 1e5 counts), ``usable_fraction``,
        ``noise_std``, ``constant_beyond_5sigma``, ``transient_flux_bias``, ``completeness``.
    """
    d = np.asarray(difference, float)
    h, w = d.shape
    scale = truth["flux_scale"]
    fwhm = max(truth["fwhm"])
    v_true = (
        truth["science_variance"] * units**2 + truth["template_variance"] * (scale * units) ** 2
    )
    centre = np.asarray(psf_at((w - 1) / 2.0, (h - 1) / 2.0), float)
    radius = centre.shape[0] // 2
    bad = (truth["input_mask"] & bits(BAD_PLANES)) != 0
    bad = ndimage.binary_dilation(bad, iterations=int(2 * fwhm) + 2)
    if mask is not None:
        bad |= (np.asarray(mask) & bits(BAD_PLANES)) != 0
    bad |= ~np.isfinite(d)
    bad[:radius], bad[-radius:], bad[:, :radius], bad[:, -radius:] = True, True, True, True
    usable = ~bad

    filled = np.where(usable, d, 0.0)
    flux_map = signal.fftconvolve(filled, centre[::-1, ::-1], mode="same")
    noise_map = np.sqrt(
        np.maximum(signal.fftconvolve(np.where(usable, v_true, 0.0), centre**2, mode="same"), 0.0)
    )
    snr = flux_map / np.where(noise_map > 0, noise_map, np.inf)
    sx, sy, sflux = truth["stars"]
    gx, gy, _ = truth["galaxies"]
    sources = np.zeros((h, w), bool)
    for x, y in ((sx, sy), (gx, gy)):
        sources[
            np.clip(np.rint(y).astype(int), 0, h - 1), np.clip(np.rint(x).astype(int), 0, w - 1)
        ] = True
    empty = usable & ~ndimage.binary_dilation(sources, iterations=int(3 * fwhm + radius))
    snr /= _robust_std(snr[empty])

    peak = (np.abs(snr) >= _THRESHOLD) & usable
    peak &= np.abs(snr) == ndimage.maximum_filter(np.abs(snr), size=5)
    py, px = np.nonzero(peak)
    tx, ty, tflux = truth["transients"]
    vx, vy, v_change = truth["variables"]
    real_x, real_y = np.concatenate([tx, vx]), np.concatenate([ty, vy])
    dist = np.hypot(px[:, None] - real_x[None], py[:, None] - real_y[None])
    false = dist.min(axis=1, initial=np.inf) > _MATCH
    bright = sflux > 1e5
    near = np.hypot(px[false, None] - sx[bright], py[false, None] - sy[bright]).min(axis=1) <= 15
    area = usable.sum() / 1e6

    noise_std = None
    if variance is not None:
        var = np.asarray(variance, float)
        ok = empty & np.isfinite(var) & (var > 0)
        noise_std = float(_robust_std(d[ok] / np.sqrt(var[ok])))

    weight = np.where(usable, 1.0 / v_true, np.nan)
    keep = ~truth["saturated"]
    keep[truth["variable_index"]] = False
    far = np.hypot(sx[keep, None] - real_x[None], sy[keep, None] - real_y[None]).min(axis=1) > 20
    cx, cy = sx[keep][far], sy[keep][far]
    f, e = _psf_fit(d, weight, psf_at, cx, cy)
    chi = f / e
    beyond = float(np.mean(np.abs(chi[np.isfinite(chi)]) > _THRESHOLD))

    tf, te = _psf_fit(d, weight, psf_at, tx, ty)
    expected = tflux * units
    strong = np.isfinite(tf) & (expected / te >= 10.0)
    w = 1.0 / te[strong] ** 2
    bias = (
        float(np.sum(tf[strong] * w) / np.sum(expected[strong] * w) - 1.0) if strong.any() else None
    )
    vf, ve = _psf_fit(d, weight, psf_at, vx, vy)
    v_expected = v_change * units
    measured = np.isfinite(vf) & (np.abs(v_expected) / ve >= 10.0)
    v_ratio = vf[measured] / v_expected[measured]
    hit = np.zeros(tx.size, bool)
    if px.size:
        hit = np.hypot(tx[:, None] - px[None], ty[:, None] - py[None]).min(axis=1) <= _MATCH
    detectable = np.isfinite(tf) & (expected / te >= 7.0)
    completeness = float(hit[detectable].mean()) if detectable.any() else None
    return {
        "false_positives_per_mpix": float(false.sum() / area),
        "n_false_positives": int(false.sum()),
        "false_positives_xy": np.stack([px[false], py[false]], axis=1),
        "false_positives_near_bright": float(near.mean()) if near.size else 0.0,
        "usable_fraction": float(usable.mean()),
        "noise_std": noise_std,
        "constant_beyond_5sigma": beyond,
        "n_constant_stars": int(np.isfinite(chi).sum()),
        "transient_flux_bias": bias,
        "completeness": completeness,
        "variable_flux_ratio": float(np.median(v_ratio)) if v_ratio.size else None,
        "variable_flux_ratio_min": float(v_ratio.min()) if v_ratio.size else None,
    }
