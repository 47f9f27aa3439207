"""Small simulated pairs with non-Gaussian PSFs, for tuning and gradient experiments.

Each pair: stars only (no galaxies, no defects), elliptical Moffat PSFs
(:func:`jaxdiffim.testing.scenes.moffat_stamps`) whose FWHM and ellipticity vary linearly
across the field, a different β in the two images, a flux scale, Gaussian noise on a flat
sky-subtracted background. All pairs of one ``size`` and ``n_stars`` have the same shapes, so
they stack for ``vmap``. Gaussians alone flatter any basis; Moffat wings are what a tuned basis
has to match. :func:`jaxdiffim.testing.scenes.simulate_scene` makes the full, realistic scenes.
"""

from typing import NamedTuple

import numpy as np

from ..core.convolve import MaskedImage
from ..core.stamps import make_candidates
from .scenes import _add, moffat_stamps

__all__ = ["MoffatPair", "moffat_pair"]

_HALF = 24  # stamp half-size of the rendered stars (pixels)


class MoffatPair(NamedTuple):
    """One simulated pair (numpy float32 images).

    Attributes
    ----------
    template, science : MaskedImage
        Image, variance and an all-zero mask, shape (size, size).
    candidates : Candidates
        Every star, rated by flux (capacity: the next bucket of ``n_stars``).
    template_fwhm, science_fwhm : float
        FWHM at the centre of the field (pixels).
    """

    template: MaskedImage
    science: MaskedImage
    candidates: object
    template_fwhm: float
    science_fwhm: float


def _image(rng, size, x, y, flux, fwhm, beta, ell, sky_sigma):
    u = (x / size - 0.5)[:, None]
    f = fwhm * (1.0 + 0.15 * u[:, 0])
    e1 = ell * (1.0 + 0.5 * u[:, 0])
    e2 = 0.5 * ell * (y / size - 0.5)
    stamps = moffat_stamps(_HALF, f, np.full_like(f, beta), e1, e2, x - np.rint(x), y - np.rint(y))
    image = np.zeros((size, size))
    _add(image, stamps * flux[:, None, None], x, y)
    variance = sky_sigma**2 + np.maximum(image, 0.0)  # gain 1: Poisson from the stars
    image = image + rng.normal(size=image.shape) * np.sqrt(variance)
    zeros = np.zeros((size, size), np.int32)
    return MaskedImage(image.astype(np.float32), variance.astype(np.float32), zeros)


def moffat_pair(seed, size=160, n_stars=40, template_fwhm=3.0, science_fwhm=4.0):
    """Simulate one pair (see the module docstring).

    Parameters
    ----------
    seed : int
    size : int
        Image side in pixels.
    n_stars : int
        Stars at least 20 pixels from the edges, fluxes log-uniform in 2e3-6e4 counts.
    template_fwhm, science_fwhm : float
        Central FWHM of the two PSFs in pixels (each varied by ±10 % between seeds).

    Returns
    -------
    MoffatPair
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(20, size - 20, n_stars)
    y = rng.uniform(20, size - 20, n_stars)
    flux = np.exp(rng.uniform(np.log(2e3), np.log(6e4), n_stars))
    t_fwhm = template_fwhm * rng.uniform(0.9, 1.1)
    s_fwhm = science_fwhm * rng.uniform(0.9, 1.1)
    template = _image(rng, size, x, y, flux, t_fwhm, 3.5, 0.05, 5.0)
    scale = rng.uniform(0.95, 1.1)
    science = _image(rng, size, x, y, scale * flux, s_fwhm, 2.5, 0.12, 8.0)
    return MoffatPair(template, science, make_candidates(x, y, flux), t_fwhm, s_fwhm)
