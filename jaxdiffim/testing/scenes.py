"""Hard simulated image pairs with their truth, for the quality benchmark.

:func:`simulate_scene` draws a template/science pair of the kind that separates subtraction
codes (``experiments/quality_benchmark.py`` scores them with :mod:`jaxdiffim.testing.scoring`):

* elliptical Moffat PSFs (β 2.5-3.5, a different β in each image) whose FWHM and ellipticity
  vary non-linearly across the field, differently in the two images;
* stars with a power-law flux distribution up to a few 10⁶ counts, the brightest saturated (the
  core clipped at the saturation level and flagged ``SAT``, with a bleed trail along the
  column); exponential and de Vaucouleurs galaxies convolved with the local PSF;
* a science flux scale of 0.93-1.15, un-subtracted sky with a gradient (and curvature in the
  ``strong`` scene), Poisson + read noise (the template four times deeper);
* bad columns (``BAD``) in both images, a ``NO_DATA`` wedge (NaN pixels) in the template;
* transients (point sources in the science image only, S/N 5-40) and variable stars that
  change by 20-50 %; optionally (``bright_variables``) bright unsaturated ones as well
  (3-8·10⁵ counts, S/N above ip_diffim's kernel-source limit of 500) that change by 3-8 %:
  a kernel fitted to them absorbs part of the change, and a flux-ratio cut barely sees it.

Scene kinds (:data:`SCENES`): ``moderate``, ``strong`` (strong PSF variation and sky
gradient), ``sharp`` (science sharper than the template) and ``equal`` (near-equal seeing).
"""

from typing import NamedTuple

import numpy as np
from scipy import signal

from ..core.masks import bit
from ..image import Exposure, GridImagePsf

__all__ = ["SCENES", "Scene", "moffat_stamps", "simulate_scene"]

#: Per scene: (template, science) PSF settings ``(fwhm px, fractional FWHM variation across the
#: field, β, ellipticity amplitude)`` and the sky gradient amplitude (counts across the field).
SCENES = {
    "moderate": (((3.8, 0.10, 3.2, 0.04), (4.6, 0.25, 2.6, 0.08)), 150.0),
    "strong": (((3.6, 0.20, 3.0, 0.06), (4.4, 0.60, 2.5, 0.12)), 600.0),
    "sharp": (((4.8, 0.15, 2.8, 0.06), (3.6, 0.20, 3.4, 0.05)), 150.0),
    "equal": (((4.0, 0.10, 3.0, 0.05), (4.1, 0.15, 2.7, 0.07)), 150.0),
}

#: Pixel value at which the detector saturates (sky included), counts.
SATURATION = 45000.0
#: Side of the PSF stamps given with the exposures (pixels).
PSF_SIZE = 41
_READ_NOISE = 5.0
#: Half-side of every rendered PSF (pixels): the same (negligible, < 3e-4) fraction of each
#: source's flux is cut in both images, so the flux ratio is the same for faint and bright
#: sources (shorter stamps for faint stars made it differ by 2 %, a fake kernel-sum error).
_HALF = 48


class Scene(NamedTuple):
    """A simulated pair and its truth.

    Attributes
    ----------
    template, science : Exposure
        With variance, masks and spatially varying PSF models (:class:`GridImagePsf`, 5 × 5
        nodes); array coordinates (xy0 = 0).
    truth : dict
        ``stars`` (x, y, template flux), ``saturated`` (per star), ``variables``
        (x, y, science flux change) and ``variable_index`` (rows of ``stars``),
        ``transients`` (x, y, science flux), ``galaxies`` (x, y, template flux),
        ``flux_scale`` (science / template), ``truth_difference`` (science noise plus the
        transients and variability, science units), ``science_variance`` and
        ``template_variance`` (the true variance planes), ``kind`` and ``seed``.
    """

    template: Exposure
    science: Exposure
    truth: dict


def _fields(settings, u, v):
    """FWHM, β, e1, e2 at normalised positions ``u, v`` in [0, 1] (arrays of one shape)."""
    fwhm, variation, beta, ell = settings
    shape = (u - 0.5) + 0.8 * (v - 0.5) ** 2 + 0.3 * np.sin(2.5 * u * v)
    f = fwhm * (1.0 + variation * shape / 0.9)
    e1 = ell * np.cos(np.pi * (u + 0.3 * v))
    e2 = ell * np.sin(np.pi * (v - 0.4 * u * u))
    return f, np.full_like(f, beta), e1, e2


def moffat_stamps(half, fwhm, beta, e1, e2, dx, dy, oversample=2):
    """Elliptical Moffat profiles (unit total flux of the untruncated profile).

    Parameters
    ----------
    half : int
        Stamps are ``2 half + 1`` pixels on a side, centred on the pixel nearest the source.
    fwhm, beta, e1, e2 : array_like, shape (n,)
        Geometric-mean FWHM (pixels), Moffat β, ellipticity components ((1-q)/(1+q) along the
        angle ``0.5 atan2(e2, e1)``).
    dx, dy : array_like, shape (n,)
        Offsets of the centres from the stamp centres (pixels).
    oversample : int
        Sub-pixel samples per axis (pixel-integrated by the mean).

    Returns
    -------
    numpy.ndarray, shape (n, 2 half + 1, 2 half + 1)
    """
    fwhm, beta, e1, e2, dx, dy = (
        np.asarray(a, float)[:, None, None] for a in (fwhm, beta, e1, e2, dx, dy)
    )
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    e = np.hypot(e1, e2)
    q = (1.0 - e) / (1.0 + e)
    theta = 0.5 * np.arctan2(e2, e1)
    c, s = np.cos(theta), np.sin(theta)
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    grid = (np.arange(-half, half + 1)[:, None] + sub[None, :]).ravel()
    out = 0.0
    for oy in range(oversample):
        for ox in range(oversample):
            yy = grid.reshape(-1, oversample)[:, oy][None, :, None] - dy
            xx = grid.reshape(-1, oversample)[:, ox][None, None, :] - dx
            a = c * xx + s * yy
            b = -s * xx + c * yy
            r2 = (a * a / q + b * b * q) / (alpha * alpha)
            out = out + (1.0 + r2) ** (-beta)
    return out * (beta - 1.0) / (np.pi * alpha * alpha) / oversample**2


def _add(image, stamps, x, y):
    """Add stamps (n, S, S) centred on the pixels nearest ``(x, y)`` (clipped at the border)."""
    h, w = image.shape
    half = stamps.shape[1] // 2
    for stamp, xi, yi in zip(stamps, np.rint(x).astype(int), np.rint(y).astype(int), strict=True):
        y0, x0 = yi - half, xi - half
        ya, xa, yb, xb = (
            max(y0, 0),
            max(x0, 0),
            min(y0 + stamp.shape[0], h),
            min(x0 + stamp.shape[1], w),
        )
        if ya < yb and xa < xb:
            image[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]


def _points(image, settings, x, y, flux, n):
    """Render point sources with the local PSF (stamps of side ``2 _HALF + 1``)."""
    u, v = x / n, y / n
    f, b, e1, e2 = _fields(settings, u, v)
    dx, dy = x - np.rint(x), y - np.rint(y)
    for chunk in np.array_split(np.arange(x.size), max(1, x.size // 100)):
        if chunk.size:
            stamps = moffat_stamps(
                _HALF, f[chunk], b[chunk], e1[chunk], e2[chunk], dx[chunk], dy[chunk]
            )
            _add(image, stamps * flux[chunk, None, None], x[chunk], y[chunk])


def _galaxies(image, settings, gal, n):
    """Sérsic (n = 1 or 4) galaxies convolved with the PSF at their centres.

    The profile is cut at a radius set by ``r_e`` alone, so that a galaxy is the same in both
    images (a cut that grew with the FWHM changed a de Vaucouleurs core by 1-1.5 % between
    them: a real difference that the truth did not hold).
    """
    x, y, flux, r_e, q, theta, index = gal
    u, v = x / n, y / n
    f, b, e1, e2 = _fields(settings, u, v)
    for i in range(x.size):
        half = int(min(40, np.ceil(5 * r_e[i]) + 8))
        dx, dy = x[i] - np.rint(x[i]), y[i] - np.rint(y[i])
        sub = (np.arange(-half, half + 1)[:, None] + np.array([-0.25, 0.25])[None, :]).ravel()
        yy, xx = np.meshgrid(sub - dy, sub - dx, indexing="ij")
        c, s = np.cos(theta[i]), np.sin(theta[i])
        a, bb = c * xx + s * yy, -s * xx + c * yy
        r = np.sqrt(a * a / q[i] + bb * bb * q[i])
        bn = 2.0 * index[i] - 1.0 / 3.0
        profile = np.exp(-bn * ((r / r_e[i]) ** (1.0 / index[i]) - 1.0))
        profile = profile.reshape(2 * half + 1, 2, 2 * half + 1, 2).mean(axis=(1, 3))
        psf = moffat_stamps(_HALF, f[[i]], b[[i]], e1[[i]], e2[[i]], [0.0], [0.0])[0]
        conv = signal.fftconvolve(profile, psf, mode="full")  # side 2 (half + _HALF) + 1
        conv *= flux[i] / profile.sum()
        _add(image, conv[None], x[[i]], y[[i]])


def _psf_model(settings, n):
    nodes = np.linspace(0.0, n - 1.0, 5)
    xx, yy = np.meshgrid(nodes, nodes)
    f, b, e1, e2 = _fields(settings, xx.ravel() / n, yy.ravel() / n)
    zero = np.zeros(xx.size)
    stamps = moffat_stamps(PSF_SIZE // 2, f, b, e1, e2, zero, zero)
    return GridImagePsf(stamps.reshape(5, 5, PSF_SIZE, PSF_SIZE), nodes, nodes)


def _saturate(image, mask):
    """Clip at :data:`SATURATION`, flag ``SAT`` and bleed the excess along each column."""
    over = image >= SATURATION
    if not over.any():
        return
    h = image.shape[0]
    for col in np.unique(np.nonzero(over)[1]):
        rows = np.nonzero(over[:, col])[0]
        excess = float(np.sum(image[rows, col] - SATURATION))
        length = int(excess / SATURATION / 2)
        lo, hi = max(rows.min() - length, 0), min(rows.max() + length + 1, h)
        image[lo:hi, col] = SATURATION
        mask[lo:hi, col] |= bit("SAT")


def simulate_scene(kind="moderate", seed=0, size=1024, bright_variables=0):
    """Draw one pair of ``kind`` (a key of :data:`SCENES`) of ``size`` × ``size`` pixels.

    ``bright_variables`` more stars of 3-8·10⁵ counts change by 3-8 % (appended to the stars and
    the variables, from a generator of their own: every other draw is the same without them).

    Returns
    -------
    Scene
    """
    (t_set, s_set), gradient = SCENES[kind]
    rng = np.random.default_rng([seed, size, list(SCENES).index(kind)])
    n = size
    shape = (n, n)
    scale = rng.uniform(0.93, 1.15)
    margin = 8
    n_star = max(40, n * n // 2500)
    sx, sy = rng.uniform(margin, n - margin, (2, n_star))
    # power law dN/dF ~ F^-1.8 between 3e2 and 5e6, and at least three saturated stars
    lo, hi, p = 3e2, 5e6, -0.8
    sflux = (lo**p + rng.uniform(size=n_star) * (hi**p - lo**p)) ** (1.0 / p)
    sflux[:3] = rng.uniform(1.5e6, 5e6, 3)
    n_gal = max(10, n * n // 8000)
    gal = (
        *rng.uniform(margin, n - margin, (2, n_gal)),
        10 ** rng.uniform(3.0, 5.3, n_gal),
        rng.uniform(1.5, 8.0, n_gal),
        rng.uniform(0.3, 1.0, n_gal),
        rng.uniform(0.0, np.pi, n_gal),
        np.where(rng.uniform(size=n_gal) < 0.7, 1.0, 4.0),
    )
    n_var = max(4, n * n // 100000)
    var_idx = rng.choice(np.nonzero((sflux > 1e3) & (sflux < 1e5))[0], n_var, replace=False)
    change = rng.choice([-1.0, 1.0], n_var) * rng.uniform(0.2, 0.5, n_var) * sflux[var_idx] * scale
    bright = np.random.default_rng([seed, size, list(SCENES).index(kind), 1])
    n_bright = int(bright_variables)
    bx, by = bright.uniform(margin, n - margin, (2, n_bright))
    bflux = bright.uniform(3e5, 8e5, n_bright)
    bchange = bright.choice([-1.0, 1.0], n_bright) * bright.uniform(0.03, 0.08, n_bright)
    var_idx = np.concatenate([var_idx, n_star + np.arange(n_bright)])
    change = np.concatenate([change, bchange * bflux * scale])
    sx, sy, sflux = np.append(sx, bx), np.append(sy, by), np.append(sflux, bflux)

    yy, xx = np.mgrid[0:n, 0:n] / n
    t_sky = 900.0 + gradient * (0.6 * xx - 0.4 * yy)
    s_sky = 1500.0 + gradient * (-0.5 * xx + 0.7 * yy)
    if kind == "strong":
        s_sky = s_sky + 0.5 * gradient * (xx - 0.5) ** 2 - 0.3 * gradient * xx * yy

    static = np.zeros(shape)
    _points(static, t_set, sx, sy, sflux, n)
    _galaxies(static, t_set, gal, n)
    s_static = np.zeros(shape)
    _points(s_static, s_set, sx, sy, sflux * scale, n)
    _galaxies(s_static, s_set, (*gal[:2], gal[2] * scale, *gal[3:]), n)

    # transients with S/N 5-40 against the science noise plus the template's
    n_tr = max(12, n * n // 12000)
    tx, ty = rng.uniform(20, n - 20, (2, n_tr))
    f, *_ = _fields(s_set, tx / n, ty / n)
    nea = 2.0 * np.pi * (f / 2.3548) ** 2 * 2.0  # noise-equivalent area of a Moffat, roughly
    sky_var = s_sky[ty.astype(int), tx.astype(int)] + _READ_NOISE**2
    tflux = rng.uniform(5.0, 40.0, n_tr) * np.sqrt(nea * sky_var * 1.25)
    signal = np.zeros(shape)
    _points(signal, s_set, tx, ty, tflux, n)
    _points(signal, s_set, sx[var_idx], sy[var_idx], change, n)

    t_model = static + t_sky
    s_model = s_static + signal + s_sky
    t_var = (np.maximum(t_model, 0.0) + _READ_NOISE**2) / 4.0
    s_var = np.maximum(s_model, 0.0) + _READ_NOISE**2
    t_noise = rng.normal(size=shape) * np.sqrt(t_var)
    s_noise = rng.normal(size=shape) * np.sqrt(s_var)
    t_img, s_img = t_model + t_noise, s_model + s_noise
    t_mask, s_mask = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    for img, msk, cols in ((t_img, t_mask, 1), (s_img, s_mask, 2)):
        _saturate(img, msk)
        for col in rng.integers(n // 8, n - n // 8, cols):
            img[:, col] = rng.choice([0.0, 6e4])
            msk[:, col] |= bit("BAD")
    wedge = (xx + yy) < 0.22
    t_img[wedge] = np.nan
    t_mask[wedge] |= bit("NO_DATA")

    template = Exposure(
        t_img.astype(np.float32), t_mask, t_var.astype(np.float32), psf=_psf_model(t_set, n)
    )
    science = Exposure(
        s_img.astype(np.float32), s_mask, s_var.astype(np.float32), psf=_psf_model(s_set, n)
    )
    truth = {
        "kind": kind,
        "seed": seed,
        "stars": (sx, sy, sflux),
        "saturated": _saturated_stars(sx, sy, s_mask | t_mask),
        "variables": (sx[var_idx], sy[var_idx], change),
        "variable_index": var_idx,
        "transients": (tx, ty, tflux),
        "galaxies": gal[:3],
        "flux_scale": scale,
        "truth_difference": (s_noise + signal).astype(np.float32),
        "science_variance": s_var.astype(np.float32),
        "template_variance": t_var.astype(np.float32),
        "fwhm": (_fields(t_set, 0.5, 0.5)[0], _fields(s_set, 0.5, 0.5)[0]),
    }
    return Scene(template, science, truth)


def _saturated_stars(x, y, mask):
    """Stars whose centre pixel is flagged ``SAT`` in either image."""
    h, w = mask.shape
    iy = np.clip(np.rint(y).astype(int), 0, h - 1)
    ix = np.clip(np.rint(x).astype(int), 0, w - 1)
    return (mask[iy, ix] & bit("SAT")) != 0
