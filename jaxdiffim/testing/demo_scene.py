"""The demo's simulated pair: stars, galaxies, a science PSF that widens across the field.

:func:`simulate_pair` makes the template and science exposures of ``jaxdiffim demo`` and the
truth: stars and galaxies; a template with a constant Gaussian PSF and a science image whose PSF
widens by 25 % across the field (a grid of PSF images); science fluxes 8 % higher; a sky plane in
the science image; a bad column and a saturated star; transients (point sources only in the
science image) and one star that brightens.
"""

import numpy as np

from ..core.masks import bit
from ..image import Exposure, GaussianPsf, GridImagePsf

__all__ = ["simulate_pair"]


_TEMPLATE_SIGMA = 1.6


_SCIENCE_SIGMA = (2.0, 2.5)


_FLUX_SCALE = 1.08


def _science_sigma(x, size):
    lo, hi = _SCIENCE_SIGMA
    return lo + (hi - lo) * np.asarray(x, float) / (size - 1)


def _render(shape, x, y, flux, sig_x, sig_y, theta, half=24):
    """Sum of elliptical Gaussians (unit-sum profiles times ``flux``), pixel-centre sampled."""
    out = np.zeros(shape)
    u = np.arange(-half, half + 1)
    for xi, yi, fi, sx, sy, th in zip(x, y, flux, sig_x, sig_y, theta, strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        dx = u[None, :] + ix - xi
        dy = u[:, None] + iy - yi
        c, s = np.cos(th), np.sin(th)
        a = (c * dx + s * dy) / sx
        b = (-s * dx + c * dy) / sy
        stamp = np.exp(-0.5 * (a * a + b * b))
        stamp *= fi / (2 * np.pi * sx * sy)
        y0, x0 = iy - half, ix - half
        ya, xa = max(y0, 0), max(x0, 0)
        yb, xb = min(y0 + stamp.shape[0], shape[0]), min(x0 + stamp.shape[1], shape[1])
        if ya < yb and xa < xb:
            out[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out


def simulate_pair(size=512, seed=3):
    """The demo's template and science exposures and the truth.

    Returns
    -------
    template, science : Exposure
        On one grid (xy0 = (1000, 2000)); the science PSF is a :class:`GridImagePsf`.
    truth : dict
        ``transients`` (x, y, flux in array pixels), ``variable`` (x, y, flux change),
        ``flux_scale``, ``sky`` (a, b, c of a + b x + c y), ``bad_column``.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    n_star = max(60, size * size // 1500)
    m = 16
    sx_, sy_ = rng.uniform(m, size - m, n_star), rng.uniform(m, size - m, n_star)
    sflux = np.exp(rng.uniform(np.log(6e2), np.log(3e4), n_star))
    n_gal = max(10, size * size // 6000)
    gx, gy = rng.uniform(m, size - m, n_gal), rng.uniform(m, size - m, n_gal)
    gflux = np.exp(rng.uniform(np.log(2e3), np.log(3e4), n_gal))
    ga = rng.uniform(1.5, 4.0, n_gal)
    gb = ga * rng.uniform(0.4, 1.0, n_gal)
    gth = rng.uniform(0, np.pi, n_gal)
    n_tr = 4
    tx, ty = rng.uniform(40, size - 40, n_tr), rng.uniform(40, size - 40, n_tr)
    tflux = np.full(n_tr, 6e3)
    vi = int(np.argsort(sflux)[n_star // 2])  # a mid-brightness star brightens by 30 %

    def image(sigma_at, scale, extra=()):
        sig_s = sigma_at(sx_)
        sig_g = sigma_at(gx)
        img = _render(shape, sx_, sy_, sflux * scale, sig_s, sig_s, np.zeros(n_star))
        img += _render(shape, gx, gy, gflux * scale, np.hypot(ga, sig_g), np.hypot(gb, sig_g), gth)
        for x, y, f in extra:
            s = sigma_at(x)
            img += _render(shape, x, y, f, s, s, np.zeros(np.size(x)))
        return img

    t_img = image(lambda x: np.full(np.size(x), _TEMPLATE_SIGMA), 1.0)
    boost = (sx_[[vi]], sy_[[vi]], 0.3 * sflux[[vi]] * _FLUX_SCALE)
    s_img = image(lambda x: _science_sigma(x, size), _FLUX_SCALE, [(tx, ty, tflux), boost])
    sky = (40.0, 0.03, -0.02)
    yy, xx = np.mgrid[0:size, 0:size]
    s_img += sky[0] + sky[1] * xx + sky[2] * yy
    noise_t, noise_s = 3.0, 5.0
    t_var = noise_t**2 + np.maximum(t_img, 0) / 4.0
    s_var = noise_s**2 + np.maximum(s_img - sky[0], 0) / 4.0
    t_img = t_img + rng.normal(size=shape) * np.sqrt(t_var)
    s_img = s_img + rng.normal(size=shape) * np.sqrt(s_var)
    t_mask = np.zeros(shape, np.int32)
    s_mask = np.zeros(shape, np.int32)
    col = size // 3
    s_img[:, col] = 1e4
    s_mask[:, col] |= bit("BAD")
    level = 0.7 * s_img.max()
    brightest = int(np.argmax(sflux))
    for img, msk in ((s_img, s_mask), (t_img, t_mask)):
        x, y = int(round(sx_[brightest])), int(round(sy_[brightest]))
        box = np.s_[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3]
        img[box] = level
        msk[box] |= bit("SAT")
    xy0 = (1000, 2000)
    nodes = np.linspace(0, size - 1, 3)
    stamps = np.array(
        [[GaussianPsf(31, 31, _science_sigma(x, size)).computeKernelImage() for x in nodes]] * 3
    )
    s_psf = GridImagePsf(stamps, nodes + xy0[0], nodes + xy0[1])
    template = Exposure(
        t_img, t_mask, t_var, psf=GaussianPsf(31, 31, _TEMPLATE_SIGMA), band="r", xy0=xy0
    )
    science = Exposure(s_img, s_mask, s_var, psf=s_psf, band="r", xy0=xy0)
    truth = {
        "transients": (tx, ty, tflux),
        "variable": (sx_[vi], sy_[vi], 0.3 * sflux[vi] * _FLUX_SCALE),
        "flux_scale": _FLUX_SCALE,
        "sky": sky,
        "bad_column": col,
    }
    return template, science, truth
