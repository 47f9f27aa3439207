"""FITS headers of exposures: WCS, calibration, band, mask planes, saturation, the keywords
carried over, and the variance of a plain image from its header or its pixels.

Split from :mod:`jaxdiffim.io.fits` (which reads and writes the files); the conventions are
described there.
"""

import warnings

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS, FITSFixedWarning

from ..algorithms.photometry import AB_NJY_ZEROPOINT
from ..algorithms.psf_estimate import central_region
from ..algorithms.scale_variance import coarse_background
from ..core.masks import MASK_PLANES
from ..errors import InvalidInputError

__all__ = [
    "STRUCTURAL",
    "band",
    "calibration",
    "carry",
    "SKY_POISSON_SIGMAS",
    "estimate_variance",
    "mask_planes",
    "saturated_holes",
    "saturation_mask",
    "wcs_of",
]

STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
    "EXTNAME", "EXTTYPE", "BZERO", "BSCALE", "INHERIT", "CHECKSUM", "DATASUM", "LTV1", "LTV2",
}  # fmt: skip


def wcs_of(header, xy0=(0, 0)):
    """The header's celestial WCS in *parent* pixel coordinates (``CRPIX`` shifted by xy0).

    afw writes the WCS of the array (``LTV`` = -xy0); :class:`Exposure` keeps it in parent
    coordinates, so that sub-images share it.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            w = WCS(header)
        except Exception:  # noqa: BLE001 - an unusable WCS is simply absent
            return None
    if not w.has_celestial:
        return None
    w.wcs.crpix = w.wcs.crpix + np.asarray(xy0, float)
    return w


def header_float(header, *keys):
    for key in keys:
        if key in header:
            try:
                return float(header[key])
            except (TypeError, ValueError):
                continue
    return None


def pair_mean(header, key, reduce=np.mean):
    value = header_float(header, key)
    if value is None:
        pair = [header_float(header, key + s) for s in ("A", "B")]
        pair = [p for p in pair if p is not None]
        value = float(reduce(pair)) if pair else None
    return value


#: Side of the central region whose pixels give the noise level of a header-less image (a
#: million pixels measure it to 0.1 %).
_NOISE_REGION = 1024
#: A header-less image whose sky level is at least this many noise sigmas above zero is taken
#: for counts whose sky noise is Poisson: its effective gain is ``sky / sigma²``.
SKY_POISSON_SIGMAS = 10.0


def estimate_variance(image, header=None):
    """Variance plane of a plain image from its header, else robustly from its pixels.

    With ``GAIN`` and a sky level (``AVSKY``, ``SKYLEVEL`` or ``SKY``) in the header: the
    Poisson variance of the pixel plus sky, plus the read noise (``RDNOISE``). Else the noise
    sigma is measured (``mad_std`` around a binned background) and, with ``GAIN``, the sources'
    Poisson term ``(image - background) / GAIN`` added. Without ``GAIN``, an image whose sky
    (the median background) is at least :data:`SKY_POISSON_SIGMAS` sigmas above zero is taken
    for un-subtracted counts: its effective gain ``sky / sigma²`` (the read noise neglected, so
    a lower bound) gives the sources' term ``(image - sky) / gain``. Like the ``GAIN`` of
    HOTPANTS (``-ig``/``-tg``, whose default 1 counts every ADU as a Poisson count), it keeps
    the noise around bright stars from being understated (with the sky's sigma alone, the
    command's false positives per Mpix on the quality benchmark's FITS pairs were 5.9 / 12.1 /
    4.0 / 4.6 in its four scenes over 6 seeds; with this term 5.3 / 8.2 / 2.3 / 4.0). A
    sky-subtracted image (sky near zero) keeps the constant sigma².

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Pixel values in counts (ADU); NaN allowed.
    header : astropy.io.fits.Header, optional

    Returns
    -------
    ndarray, float32, shape (H, W)

    Raises
    ------
    InvalidInputError
        When there are too few finite pixels, or their scatter is zero, so that no noise level
        can be estimated (give a variance, weight or sigma file).
    """
    header = header if header is not None else fits.Header()
    img = np.asarray(image, np.float32)
    finite = np.isfinite(img)
    gain = pair_mean(header, "GAIN")
    gain = gain if gain is not None and gain > 0 else None
    sky = header_float(header, "AVSKY", "SKYLEVEL", "SKY")
    if gain is not None and sky is not None and sky >= 0:
        rn = pair_mean(header, "RDNOISE") or 0.0
        clean = np.where(finite, img, np.float32(0.0))
        var = (np.maximum(clean, 0.0) + sky) / gain + (rn / gain) ** 2
        return var.astype(np.float32)
    n_finite = int(np.count_nonzero(finite))
    if n_finite < 100:
        raise InvalidInputError(
            f"Cannot estimate a variance from {n_finite} finite pixels; give a variance, "
            "weight or sigma file."
        )
    # a smooth sky (a gradient, un-subtracted sky) must not inflate the noise: measure it
    # around the binned background of the pixels (ScaleVariance's, 32-px bins); without a gain
    # only the noise level is needed, measured on the central 1024² region of large images
    region = (slice(None), slice(None))
    if gain is None:
        region = central_region(img.shape, _NOISE_REGION)
    if finite[region].sum() < 100:  # a central hole: use every pixel
        region = (slice(None), slice(None))
    part, good = img[region], finite[region]
    sky_model = np.asarray(
        coarse_background(
            np.where(good, part, np.nan), np.zeros(part.shape, np.int32), extrapolate=True
        )
    )
    if not np.isfinite(sky_model).all():
        sky_model = np.where(np.isfinite(sky_model), sky_model, np.median(part[good]))
    mad = mad_std((part - sky_model)[good])
    if not mad > 0:
        raise InvalidInputError(
            "The image has no pixel-to-pixel scatter, so its noise cannot be estimated; give a "
            "variance, weight or sigma file."
        )
    var = np.full(img.shape, mad**2, np.float32)
    if gain is None:  # an un-subtracted sky's counts are Poisson: an effective gain
        level = float(np.median(sky_model[good]))
        if level < SKY_POISSON_SIGMAS * mad:  # a sky-subtracted image: no gain to read
            return var
        gain, sky_model = level / mad**2, np.float32(level)
    clean = np.where(finite, img, np.float32(0.0))
    var += np.maximum(clean - sky_model, 0.0) / np.float32(gain)
    return var


def saturation_mask(image, header):
    level = header_float(header, "SATURATE")
    if level is None:
        level = pair_mean(header, "SATURAT", reduce=np.min)
    if level is None:
        return np.zeros(image.shape, bool)
    sky = header_float(header, "AVSKY", "SKYLEVEL", "SKY") or 0.0
    with np.errstate(invalid="ignore"):
        return np.asarray(image) >= level - sky


#: A pixel this many robust sigmas above the image's median, next to a hole, marks a
#: saturated core (the image's own noise: no gain or variance needed).
_BRIGHT_RIM = 50.0
#: Pixels of a hole within this distance of such a bright pixel count as saturated.
_RIM_DEPTH = 2
#: Pixels sampled for the median and sigma of :func:`saturated_holes`.
_RIM_SAMPLES = 1 << 18


def saturated_holes(image, holes):
    """Pixels of the holes (non-finite pixels) that border bright pixels: saturated cores.

    Pipelines often blank saturated pixels (NaN) instead of leaving them at the saturation
    level, and then ``SATURATE`` finds nothing. A hole whose rim is bright is such a core, and
    the subtraction must treat it as one: the bright unsaturated ring around it, which no
    kernel matches to a fraction of a per cent, is flagged ``SUSPECT`` only around ``SAT``
    pixels. On the quality benchmark's FITS pairs (saturated cores blanked), 13 of moderate
    seed 1's 21 false positives were such rings. A bad column or a no-data wedge borders sky
    (in that scene within 2 sigma); a saturated core borders pixels 960-1120 sigma up.

    Parameters
    ----------
    image : ndarray, shape (H, W)
        Counts; non-finite where ``holes``.
    holes : ndarray of bool, shape (H, W)

    Returns
    -------
    ndarray of bool, shape (H, W)
        The hole pixels within :data:`_RIM_DEPTH` pixels of a finite pixel at least
        :data:`_BRIGHT_RIM` robust sigmas (``mad_std``) above the median, and the hole pixels
        they enclose (a core's inside; a bad column across a star is flagged only near it).
    """
    from scipy import ndimage  # only for images with holes

    none = np.zeros(holes.shape, bool)
    if not holes.any() or holes.all():  # nothing to classify (no pixels at all: the caller says)
        return none
    good = image[~holes]
    sample = good[:: max(1, good.size // _RIM_SAMPLES)]
    level = np.median(sample) + _BRIGHT_RIM * mad_std(sample)
    with np.errstate(invalid="ignore"):
        ys, xs = np.nonzero(image >= level)  # few pixels: the work is done around them
    h, w = holes.shape
    near = np.zeros(holes.shape, bool)
    touching = np.zeros(ys.size, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            touching |= holes[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)]
    ys, xs = ys[touching], xs[touching]
    for dy in range(-_RIM_DEPTH, _RIM_DEPTH + 1):
        for dx in range(-_RIM_DEPTH, _RIM_DEPTH + 1):
            near[np.clip(ys + dy, 0, h - 1), np.clip(xs + dx, 0, w - 1)] = True
    near &= holes
    if not near.any():
        return none
    # a core's inside too, a column's length not: the holes each group of them encloses
    out = near.copy()
    labels, _ = ndimage.label(near, structure=np.ones((3, 3), int))
    for box in ndimage.find_objects(labels):
        out[box] |= holes[box] & ndimage.binary_fill_holes(near[box])
    return out


def calibration(header):
    value = header_float(header, "PHOTCALIB")
    if value is not None:
        return value
    zp = header_float(header, "MAGZERO", "MAGZP", "ZEROPT")
    return 10.0 ** (-0.4 * (zp - AB_NJY_ZEROPOINT)) if zp is not None else 1.0


def band(header):
    for key in ("BAND", "FILTER"):
        if key in header and str(header[key]).strip():
            return str(header[key]).split()[0]
    return None


def mask_planes(header):
    planes = {k[3:]: int(v) for k, v in header.items() if k.startswith("MP_")}
    return planes or dict(MASK_PLANES)


def carry(header):
    out = fits.Header()
    for card in header.cards:
        if card.keyword not in STRUCTURAL and card.keyword not in ("", "COMMENT", "HISTORY"):
            out.append(card)
    return out
