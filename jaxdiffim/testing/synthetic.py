"""Synthetic star fields for tests, benchmarks and demos (NumPy only, host side).

:func:`make_test_image` follows ip_diffim's ``tests/utils.py::makeTestImage`` recipe
(ip_diffim.md §3.1): star positions and fluxes drawn from ``RandomState(seed)`` in the order x,
y, flux; fluxes uniform in ``[fluxLevel, fluxLevel * fluxRange]``; unit-sum Gaussian stars of
width ``psf_sigma`` (a sigma, not a FWHM) on ``kernel_size``-pixel stamps; zero-mean Gaussian
noise from ``RandomState(noise_seed)``; the variance plane ``sqrt(|noiseless image|) + noise²``;
an optional background added after that. Deliberate difference: each star is the Gaussian
sampled at its exact sub-pixel position, where afw shifts a centred stamp with a Lanczos-5
interpolant; the two differ by far less than the noise.
"""

from typing import NamedTuple

import numpy as np

__all__ = [
    "TestImage",
    "VaryingPair",
    "gaussian_stamp",
    "plant_stars",
    "make_test_image",
    "make_varying_psf_pair",
]


class TestImage(NamedTuple):
    """A synthetic exposure.

    Attributes
    ----------
    image, variance : ndarray, shape (H, W), float32
    noiseless : ndarray, shape (H, W), float64
        Stars (and background) without noise.
    x, y, flux : ndarray, shape (n_src,)
        True star centres in array pixel coordinates (column, row) and total fluxes.
    psf_sigma : float
        Gaussian PSF width in pixels.
    border : int
        Pixels added on every side relative to the nominal size (template border).
    """

    image: np.ndarray
    variance: np.ndarray
    noiseless: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    psf_sigma: float
    border: int


def gaussian_stamp(size, sigma, dx=0.0, dy=0.0):
    """Unit-sum Gaussian on a ``size`` x ``size`` stamp, centred ``(dx, dy)`` off pixel ``size//2``.

    For an even ``size`` the centre pixel is ``(size - 1) // 2``, as afw's kernel centre.
    """
    ctr = (size - 1) // 2
    u = np.arange(size) - ctr
    gx = np.exp(-0.5 * ((u - dx) / sigma) ** 2)
    gy = np.exp(-0.5 * ((u - dy) / sigma) ** 2)
    stamp = np.outer(gy, gx)
    return stamp / stamp.sum()


def plant_stars(shape, x, y, flux, sigma, stamp_size=32):
    """Add Gaussian stars to a zero image (``plantSources`` without Poisson noise).

    Each star's stamp pixel ``(size - 1) // 2`` lands on the star's nearest pixel; the part of
    the stamp outside the image is lost.

    Parameters
    ----------
    shape : tuple (H, W)
    x, y, flux : array_like
        Centres (array pixel coordinates) and total fluxes.
    sigma : float or array_like
        Gaussian width(s) in pixels.
    stamp_size : int

    Returns
    -------
    ndarray, shape (H, W), float64
    """
    out = np.zeros(shape)
    sig = np.broadcast_to(np.asarray(sigma, float), np.shape(x))
    ctr = (stamp_size - 1) // 2
    for xi, yi, fi, si in zip(x, y, flux, sig, strict=True):
        ix, iy = int(np.floor(xi + 0.5)), int(np.floor(yi + 0.5))
        stamp = fi * gaussian_stamp(stamp_size, si, xi - ix, yi - iy)
        x0, y0 = ix - ctr, iy - ctr
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + stamp_size, shape[1]), min(y0 + stamp_size, shape[0])
        if xa < xb and ya < yb:
            out[ya:yb, xa:xb] += stamp[ya - y0 : yb - y0, xa - x0 : xb - x0]
    return out


def make_test_image(
    seed=5,
    n_src=20,
    psf_sigma=2.0,
    noise_level=5.0,
    noise_seed=6,
    flux_level=500.0,
    flux_range=2.0,
    kernel_size=32,
    template_border=0,
    background=None,
    size=(256, 256),
    x=None,
    y=None,
    flux=None,
):
    """Port of ip_diffim's ``makeTestImage`` (see the module docstring).

    Parameters
    ----------
    seed, noise_seed : int
        Seeds of the star and noise generators.
    n_src : int
        Number of stars.
    psf_sigma : float
        Gaussian PSF sigma in pixels.
    noise_level : float
        Noise standard deviation.
    flux_level, flux_range : float
        Fluxes are uniform in ``[flux_level, flux_level * flux_range]``.
    kernel_size : int
        Star stamp size.
    template_border : int
        Grow the image by this many pixels on every side; star positions keep their place on
        the sky, so a template with a border and a science image without one line up after
        cropping ``template_border`` pixels.
    background : callable, optional
        ``background(x, y)`` in the image's array coordinates, added to the image only.
    size : tuple (H, W)
        Nominal size before the border.
    x, y, flux : array_like, optional
        Explicit star positions (nominal frame) and fluxes instead of random ones.

    Returns
    -------
    TestImage
    """
    b = int(template_border)
    height, width = size[0] + 2 * b, size[1] + 2 * b
    rng = np.random.RandomState(seed)
    rng_noise = np.random.RandomState(noise_seed)
    buffer = kernel_size / 2 + b + 1
    if x is None:
        x = rng.rand(n_src) * (width - 2 * buffer) + buffer
        y = rng.rand(n_src) * (height - 2 * buffer) + buffer
    else:
        x = np.asarray(x, float) + b
        y = np.asarray(y, float) + b
    if flux is None:
        flux = (rng.rand(n_src) * (flux_range - 1) + 1) * flux_level
    flux = np.asarray(flux, float)
    noiseless = plant_stars((height, width), x, y, flux, psf_sigma, kernel_size)
    noise = rng_noise.randn(height, width) * noise_level
    noise -= noise.mean()
    variance = (np.sqrt(np.abs(noiseless)) + noise_level**2).astype(np.float32)
    if background is not None:
        yy, xx = np.mgrid[0:height, 0:width]
        noiseless = noiseless + background(xx, yy)
    image = (noiseless + noise).astype(np.float32)
    return TestImage(image, variance, noiseless, x, y, flux, float(psf_sigma), b)


class VaryingPair(NamedTuple):
    """A template/science pair whose science PSF width changes across the field.

    Attributes
    ----------
    template, science : tuple (image, variance) of float32 arrays, shape (H, W)
    template_sigma : float
        Constant template PSF width in pixels.
    science_sigma : callable
        ``science_sigma(x)``: the science PSF width in pixels at column ``x``.
    x, y, flux : ndarray
        Star positions (array pixels) and template fluxes.
    flux_scale : float
        Science flux / template flux.
    """

    template: tuple
    science: tuple
    template_sigma: float
    science_sigma: object
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    flux_scale: float


def make_varying_psf_pair(
    size=512,
    n_src=200,
    template_sigma=1.6,
    science_sigma_range=(2.0, 2.5),
    flux_scale=1.08,
    sky_gradient=(20.0, 0.02, 0.01),
    noise=(2.0, 2.0),
    flux_range=(2000.0, 20000.0),
    seed=11,
):
    """A pair for spatially varying matching: PSF gradient, flux-scale and sky difference.

    The science PSF width grows linearly in x from ``science_sigma_range[0]`` to
    ``science_sigma_range[1]`` (25 % by default); science fluxes are ``flux_scale`` times the
    template's; the science image has a sky plane ``a + b x + c y``; both images have white
    Gaussian noise of the given standard deviations and exact constant variance planes.
    """
    rng = np.random.RandomState(seed)
    lo, hi = science_sigma_range

    def science_sigma(x):
        return lo + (hi - lo) * np.asarray(x, float) / (size - 1)

    margin = 20
    x = rng.uniform(margin, size - margin, n_src)
    y = rng.uniform(margin, size - margin, n_src)
    flux = np.exp(rng.uniform(np.log(flux_range[0]), np.log(flux_range[1]), n_src))
    tmpl = plant_stars((size, size), x, y, flux, template_sigma, 48)
    sci = plant_stars((size, size), x, y, flux * flux_scale, science_sigma(x), 48)
    yy, xx = np.mgrid[0:size, 0:size]
    a, b, c = sky_gradient
    sci = sci + a + b * xx + c * yy
    tmpl = tmpl + rng.normal(0.0, noise[0], tmpl.shape)
    sci = sci + rng.normal(0.0, noise[1], sci.shape)
    tv = np.full(tmpl.shape, noise[0] ** 2, np.float32)
    sv = np.full(sci.shape, noise[1] ** 2, np.float32)
    return VaryingPair(
        (tmpl.astype(np.float32), tv),
        (sci.astype(np.float32), sv),
        float(template_sigma),
        science_sigma,
        x,
        y,
        flux,
        float(flux_scale),
    )
