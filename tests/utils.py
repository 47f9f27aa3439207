"""Test helpers: independent statistics (afw-style) and the ip_diffim test scenes."""

import numpy as np

from jaxdiffim import KernelFitConfig, MaskedImage, alard_lupton_sigmas, make_candidates
from jaxdiffim.core.basis import FWHM_PER_SIGMA
from jaxdiffim.core.masks import bit
from jaxdiffim.testing import decam_file
from jaxdiffim.testing.synthetic import make_test_image

IQ_TO_STDEV = 0.741301109252802


def meanclip(values, n_sigma=3.0, n_iter=3):
    """afw MEANCLIP/STDEVCLIP written independently with numpy (median/IQR first pass)."""
    x = np.sort(np.asarray(values, float).ravel())
    x = x[np.isfinite(x)]
    q1, med, q3 = np.percentile(x, [25, 50, 75])  # numpy 'linear' == index q*(n-1)
    centre, half = med, n_sigma * IQ_TO_STDEV * (q3 - q1)
    for _ in range(n_iter):
        kept = x[np.abs(x - centre) <= half]
        centre, std = kept.mean(), kept.std(ddof=1) if kept.size > 1 else 0.0
        half = n_sigma * std
    return centre, std


def footprints(scene, radius_sigma=5.0):
    """DETECTED-like mask: circles of radius 5 sigma around every star (the truth footprints)."""
    yy, xx = np.mgrid[0 : scene.image.shape[0], 0 : scene.image.shape[1]]
    out = np.zeros(scene.image.shape, bool)
    r2 = (radius_sigma * scene.psf_sigma) ** 2
    for x, y in zip(scene.x, scene.y, strict=True):
        out |= (xx - x) ** 2 + (yy - y) ** 2 <= r2
    return out


def masked(scene, crop=0):
    """MaskedImage of a synthetic scene, cropped by ``crop`` pixels on every side."""
    sl = slice(crop, scene.image.shape[0] - crop)
    img = scene.image[sl, sl]
    return MaskedImage(img, scene.variance[sl, sl], np.zeros(img.shape, np.int32))


def scene_pair(sci_sigma, tmpl_sigma, sci_noise=1.0, tmpl_noise=1.0, n_src=20, size=256, **kw):
    """ip_diffim's makeTestImage pair: science seed 6, template noise seed 7 with a 20 px border.

    The template is returned cropped to the science grid (the functional core works on one grid).
    """
    sci = make_test_image(
        psf_sigma=sci_sigma,
        noise_level=sci_noise,
        noise_seed=6,
        n_src=n_src,
        size=(size, size),
        **kw,
    )
    tmpl = make_test_image(
        psf_sigma=tmpl_sigma,
        noise_level=tmpl_noise,
        noise_seed=7,
        n_src=n_src,
        size=(size, size),
        template_border=20,
    )
    return sci, tmpl


def basis_for(convolved_sigma, reference_sigma, **cfg):
    """AL widths and config from the two PSF sigmas (the scaleByFwhm rule)."""
    sigmas, size = alard_lupton_sigmas(
        convolved_sigma * FWHM_PER_SIGMA, reference_sigma * FWHM_PER_SIGMA
    )
    return sigmas, KernelFitConfig(kernel_size=size, **cfg)


def candidates_for(scene):
    return make_candidates(scene.x, scene.y, scene.flux)


def good_pixels(diff, scene, extra=()):
    """Pixels without EDGE/NO_DATA and away from star footprints."""
    bad = (np.asarray(diff.mask) & (bit("EDGE") | bit("NO_DATA"))) != 0
    bad |= footprints(scene)
    for e in extra:
        bad |= e
    return ~bad & np.isfinite(np.asarray(diff.image))


def decam_path(name):
    """Path of the DECam cut-out ``DEC-OBS<name>.mini.fits.gz`` shipped with the package."""
    return decam_file(name)


#: The small differentiation problem of test_grads / test_precision / test_program_grads.
SIZE = 80

#: The candidate selection held fixed: no clipping, every candidate visited.
FIXED = KernelFitConfig(
    kernel_size=7,
    degrees=(2, 1),
    spatial_kernel_order=1,
    spatial_bg_order=1,
    single_kernel_clipping=False,
    kernel_sum_clipping=False,
    spatial_kernel_clipping=False,
    n_star_per_cell=-1,
)


def grad_problem():
    """Two 80×80 Gaussian-PSF images (σ 1.5 and 1.9 px) and 9 candidates (capacity 32)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(18, SIZE - 18, 9)
    y = rng.uniform(18, SIZE - 18, 9)
    flux = rng.uniform(300, 900, 9)
    common = dict(noise_level=0.5, size=(SIZE, SIZE), x=x, y=y, kernel_size=15)
    tmpl = make_test_image(psf_sigma=1.5, noise_seed=1, flux=flux, **common)
    sci = make_test_image(psf_sigma=1.9, noise_seed=2, flux=1.1 * flux, **common)
    cands = make_candidates(x, y, flux)  # capacity 32: 23 padded rows
    assert cands.x.shape == (32,)
    return tmpl, sci, cands
