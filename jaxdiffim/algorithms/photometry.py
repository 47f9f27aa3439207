"""Point-source photometry of a PSF: noise-equivalent area and limiting magnitudes.

Port of ip_diffim's ``computePSFNoiseEquivalentArea`` and the limiting-magnitude metadata of
``AlardLuptonSubtractTask`` (``_computeLimitingMagnitude``-style: an ``nsigma`` point source
in the noise-equivalent area of the PSF, in AB magnitudes from a calibration in nJy per count).
"""

import logging
import math

import numpy as np

from ..errors import InvalidInputError
from .psf_shape import as_psf_image, psf_moments

__all__ = [
    "AB_NJY_ZEROPOINT",
    "noise_equivalent_area",
    "limiting_magnitude",
    "diffim_limiting_magnitude",
]

_log = logging.getLogger(__name__)


#: AB magnitude of a flux of 1 nJy (astropy's ``ABmag``: 48.6 in erg s⁻¹ cm⁻² Hz⁻¹).
AB_NJY_ZEROPOINT = 31.4


def noise_equivalent_area(psf_image):
    """Noise-equivalent area ``1 / sum(p²)`` of the unit-sum PSF image ``p``, in pixels.

    Parameters
    ----------
    psf_image : array_like, shape (ny, nx)

    Returns
    -------
    float
        ``4 pi sigma²`` for a well-sampled Gaussian.

    Raises
    ------
    InvalidInputError
        Not a finite 2-D array with a positive sum.
    """
    img = as_psf_image(psf_image)
    p = img / img.sum()
    return float(1.0 / np.sum(p * p))


def limiting_magnitude(psf_image, zeropoint, nsigma=5.0, fallback_fwhm=None):
    """Point-source limiting magnitude of an image (ip_diffim ``_calculateMagLim``).

    ``m = zeropoint - 2.5 log10(nsigma sqrt(A))`` with ``A = pi sqrt(ixx iyy)`` from the
    adaptive moments; if there is no PSF or its moments fail, ``A = pi (fallback_fwhm / 2)²``,
    or NaN without a fallback.

    Parameters
    ----------
    psf_image : array_like, shape (ny, nx), or None
        PSF image at the average position.
    zeropoint : float
        Magnitude of an instrumental flux of 1 (``photoCalib.instFluxToMagnitude(1)``).
    nsigma : float
        Detection threshold in units of the noise.
    fallback_fwhm : float, optional
        FWHM in pixels to use when the PSF is unavailable.

    Returns
    -------
    float
        Magnitude (NaN when neither the PSF nor a fallback is usable).

    Raises
    ------
    InvalidInputError
        Non-finite ``zeropoint``, non-positive ``nsigma`` or ``fallback_fwhm``, or a PSF that is
        not 2-D.
    """
    zeropoint, nsigma = float(zeropoint), float(nsigma)
    if not math.isfinite(zeropoint):
        raise InvalidInputError(f"zeropoint must be finite, got {zeropoint}.")
    if not (math.isfinite(nsigma) and nsigma > 0):
        raise InvalidInputError(f"nsigma must be positive, got {nsigma}.")
    if fallback_fwhm is not None:
        fallback_fwhm = float(fallback_fwhm)
        if not (math.isfinite(fallback_fwhm) and fallback_fwhm > 0):
            raise InvalidInputError(f"fallback_fwhm must be positive, got {fallback_fwhm}.")
    area = None
    if psf_image is not None:
        if np.ndim(psf_image) != 2:
            raise InvalidInputError(f"PSF image must be 2-D, got shape {np.shape(psf_image)}.")
        try:
            m = psf_moments(psf_image)
            area = math.pi * math.sqrt(m.ixx * m.iyy)
        except InvalidInputError as exc:
            _log.info("Unable to measure the PSF for the limiting magnitude: %s", exc)
    if area is None:
        if fallback_fwhm is None:
            return math.nan
        _log.info("Using the fallback PSF FWHM %g for the limiting magnitude", fallback_fwhm)
        area = math.pi * (fallback_fwhm / 2.0) ** 2
    return zeropoint - 2.5 * math.log10(nsigma * math.sqrt(area))


def diffim_limiting_magnitude(science_maglim, template_maglim):
    """Limiting magnitude of the difference image: the two flux limits added in quadrature.

    Parameters
    ----------
    science_maglim, template_maglim : float
        AB magnitudes (from :func:`limiting_magnitude`).

    Returns
    -------
    float
        ``-2.5 log10(sqrt(f_s² + f_t²)) + 31.4`` with ``f = 10^(-0.4 (m - 31.4))`` nJy; the science
        value if the template's is NaN.
    """
    m_s, m_t = float(science_maglim), float(template_maglim)
    if math.isnan(m_t):
        return m_s
    f_s = 10.0 ** (-0.4 * (m_s - AB_NJY_ZEROPOINT))
    f_t = 10.0 ** (-0.4 * (m_t - AB_NJY_ZEROPOINT))
    return AB_NJY_ZEROPOINT - 2.5 * math.log10(math.hypot(f_s, f_t))
