"""Exposures in and out of FITS files.

* **afw MaskedImage layout** (what the LSST stack writes): an empty PRIMARY HDU with the
  metadata, then ``IMAGE`` (float32), ``MASK`` (int32, plane numbers in ``MP_<NAME>`` keywords)
  and ``VARIANCE`` (float32) extensions; ``LTV1``/``LTV2`` hold ``-x0``/``-y0``. Read and written.
  The PSF (its kernel image at the average position) is written to an extra ``PSF`` extension
  and read back as an :class:`~jaxdiffim.image.psf.ImagePsf`.
* **A plain image** (the first HDU with 2-D data), with optional separate variance, weight
  (inverse variance) or sigma files and a mask file. Without any of them the variance is
  estimated: from ``GAIN`` (or the mean of ``GAINA``/``GAINB``), the read noise (``RDNOISE``,
  or ``RDNOISEA``/``RDNOISEB``, electrons) and the subtracted sky (``AVSKY``, ``SKYLEVEL`` or
  ``SKY``, counts) when the header has them, as ``(max(I, 0) + sky) / gain + (rn / gain)²``;
  otherwise robustly from the pixels (the squared ``astropy.stats.mad_std`` around the binned
  background, plus ``max(I - background, 0) / gain`` when the gain is known). Non-finite
  pixels become ``NO_DATA``; pixels at the header's saturation level (``SATURATE``, or the lower
  of ``SATURATA`` and
  ``SATURATB``, minus the subtracted sky) become ``SAT``.

Output files are written atomically (a temporary file in the same directory, then
``os.replace``) and never overwrite an existing file unless ``overwrite=True``.
"""

import os
import warnings

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS, FITSFixedWarning

from ..algorithms.photometry import AB_NJY_ZEROPOINT
from ..algorithms.psf_estimate import central_region
from ..algorithms.scale_variance import coarse_background
from ..core.masks import MASK_PLANES
from ..errors import InputFileError, InvalidInputError
from ..image.exposure import Exposure, Mask
from ..image.psf import ImagePsf
from .atomic import atomic_output

__all__ = ["read_exposure", "write_exposure", "read_psf", "estimate_variance"]

_STRUCTURAL = {
    "SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT",
    "EXTNAME", "EXTTYPE", "BZERO", "BSCALE", "INHERIT", "CHECKSUM", "DATASUM", "LTV1", "LTV2",
}  # fmt: skip


def _open(path, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"{what} file {path!r} does not exist.")
    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("silentfix")
        for hdu in hdul:
            _ = hdu.data  # force reading: a truncated file fails here, not later
    except Exception as exc:  # noqa: BLE001 - gzip/zlib/verify errors too: one clear error
        raise InputFileError(f"{what} file {path!r} is not a readable FITS file ({exc}).") from exc
    return hdul


def _first_image(hdul, path, what):
    for hdu in hdul:
        if hdu.data is not None and np.ndim(hdu.data) == 2:
            return hdu
    raise InputFileError(f"{what} file {path!r} has no 2-D image HDU.")


def _wcs(header, xy0=(0, 0)):
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


def _header_float(header, *keys):
    for key in keys:
        if key in header:
            try:
                return float(header[key])
            except (TypeError, ValueError):
                continue
    return None


def _pair_mean(header, key, reduce=np.mean):
    value = _header_float(header, key)
    if value is None:
        pair = [_header_float(header, key + s) for s in ("A", "B")]
        pair = [p for p in pair if p is not None]
        value = float(reduce(pair)) if pair else None
    return value


#: Variances whose median fills the variance of pixels without data.
_FILL_SAMPLES = 1 << 20

#: Side of the central region whose pixels give the noise level of a header-less image (a
#: million pixels measure it to 0.1 %).
_NOISE_REGION = 1024


def estimate_variance(image, header=None):
    """Variance plane of a plain image from its header, else robustly from its pixels.

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
    gain = _pair_mean(header, "GAIN")
    gain = gain if gain is not None and gain > 0 else None
    sky = _header_float(header, "AVSKY", "SKYLEVEL", "SKY")
    clean = np.where(finite, img, 0.0)
    if gain is not None and sky is not None and sky >= 0:
        rn = _pair_mean(header, "RDNOISE") or 0.0
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
    if gain is not None:
        var += np.maximum(clean - sky_model, 0.0) / np.float32(gain)
    return var


def _saturation_mask(image, header):
    level = _header_float(header, "SATURATE")
    if level is None:
        level = _pair_mean(header, "SATURAT", reduce=np.min)
    if level is None:
        return np.zeros(image.shape, bool)
    sky = _header_float(header, "AVSKY", "SKYLEVEL", "SKY") or 0.0
    with np.errstate(invalid="ignore"):
        return np.asarray(image) >= level - sky


def _calibration(header):
    value = _header_float(header, "PHOTCALIB")
    if value is not None:
        return value
    zp = _header_float(header, "MAGZERO", "MAGZP", "ZEROPT")
    return 10.0 ** (-0.4 * (zp - AB_NJY_ZEROPOINT)) if zp is not None else 1.0


def _band(header):
    for key in ("BAND", "FILTER"):
        if key in header and str(header[key]).strip():
            return str(header[key]).split()[0]
    return None


def _mask_planes(header):
    planes = {k[3:]: int(v) for k, v in header.items() if k.startswith("MP_")}
    return planes or dict(MASK_PLANES)


def _carry(header):
    out = fits.Header()
    for card in header.cards:
        if card.keyword not in _STRUCTURAL and card.keyword not in ("", "COMMENT", "HISTORY"):
            out.append(card)
    return out


def _read_afw(hdul):
    img_hdu, mask_hdu, var_hdu = hdul["IMAGE"], hdul["MASK"], hdul["VARIANCE"]
    header = img_hdu.header
    xy0 = (-int(header.get("LTV1", 0)), -int(header.get("LTV2", 0)))
    meta = _carry(hdul[0].header)
    meta.update(_carry(header))
    psf = None
    if "PSF" in hdul:
        psf = ImagePsf(hdul["PSF"].data)
    mask = Mask(mask_hdu.data.astype(np.int32), xy0, _mask_planes(mask_hdu.header))
    return Exposure(
        img_hdu.data.astype(np.float32),
        mask,
        var_hdu.data.astype(np.float32),
        copy=False,  # new arrays
        psf=psf,
        wcs=_wcs(header, xy0),
        photoCalib=_calibration(meta),
        band=_band(meta),
        xy0=xy0,
        metadata=meta,
    )


def _aux_plane(path, what, shape):
    with _open(path, what) as hdul:
        hdu = _first_image(hdul, path, what)
        data = np.asarray(hdu.data)
        if data.shape != shape:
            raise InvalidInputError(
                f"The {what} file {os.fspath(path)!r} has shape {data.shape}, the image {shape}; "
                "they must match."
            )
        return data, hdu.header


def read_exposure(path, *, variance=None, weight=None, sigma=None, mask=None, psf=None):
    """Read an exposure: afw layout, or a plain image with optional separate planes.

    Parameters
    ----------
    path : str or path-like
    variance, weight, sigma : str or path-like, optional
        At most one: a variance, inverse-variance or standard-deviation image (plain images).
    mask : str or path-like, optional
        Integer mask image; ``MP_*`` keywords give its planes, else afw's default numbering.
    psf : str or path-like, optional
        A PSF stamp (:func:`read_psf`), overriding any PSF in the file.

    Returns
    -------
    Exposure

    Raises
    ------
    InputFileError
        A file is missing or not readable FITS.
    InvalidInputError
        Shapes disagree, more than one noise file is given, or the variance cannot be estimated.
    """
    given = [(k, v) for k, v in (("variance", variance), ("weight", weight), ("sigma", sigma)) if v]
    if len(given) > 1:
        raise InvalidInputError("Give at most one of variance, weight and sigma.")
    with _open(path, "Image") as hdul:
        names = {h.name for h in hdul}
        if {"IMAGE", "MASK", "VARIANCE"} <= names:
            if given or mask:
                raise InvalidInputError(
                    f"{os.fspath(path)!r} already has MASK and VARIANCE planes (afw layout); "
                    "variance, weight, sigma and mask files apply to plain images only."
                )
            exp = _read_afw(hdul)
        else:
            exp = _read_plain(hdul, path, given, mask)
    if psf is not None:
        exp.psf = read_psf(psf)
    return exp


def _read_plain(hdul, path, given, mask):
    hdu = _first_image(hdul, path, "Image")
    header = hdul[0].header.copy() if hdu is not hdul[0] else fits.Header()
    header.update(_carry(hdu.header))
    image = np.array(hdu.data, np.float32)
    bad = ~np.isfinite(image)
    if given:
        kind, aux = given[0]
        data, _ = _aux_plane(aux, kind, image.shape)
        data = np.array(data, np.float32)  # an owned copy (the exposure takes it over)
        with np.errstate(divide="ignore", invalid="ignore"):
            var = {"variance": data, "weight": 1.0 / data, "sigma": data**2}[kind]
        bad |= ~(np.isfinite(var) & (var > 0))
    else:
        var = estimate_variance(image, header)
    if mask is not None:
        data, mhead = _aux_plane(mask, "mask", image.shape)
        m = Mask(np.asarray(data).astype(np.int32), planes=_mask_planes(mhead))
        mask_array = m.to_standard()
    else:
        mask_array = np.zeros(image.shape, np.int32)
    mask_array |= np.where(_saturation_mask(image, header), 1 << MASK_PLANES["SAT"], 0).astype(
        np.int32
    )
    mask_array |= np.where(bad, 1 << MASK_PLANES["NO_DATA"], 0).astype(np.int32)
    if bad.all():
        raise InvalidInputError(f"Image file {os.fspath(path)!r} has no finite pixels.")
    if bad.any():  # a typical variance (a regular subsample's median) for the holes
        good_var = var[~bad]
        fill = float(np.median(good_var[:: max(1, good_var.size // _FILL_SAMPLES)]))
        image = np.where(bad, np.float32(0.0), image)
        var = np.where(bad, np.float32(fill), var)
    return Exposure(  # every plane is a new array here
        image,
        mask_array,
        var.astype(np.float32, copy=False),
        copy=False,
        wcs=_wcs(header),
        photoCalib=_calibration(header),
        band=_band(header),
        metadata=header,
    )


def read_psf(path):
    """A PSF stamp from the first 2-D HDU of a FITS file, as an :class:`ImagePsf`.

    Raises
    ------
    InputFileError
        Missing or unreadable file.
    InvalidInputError
        Non-finite pixels, a non-positive sum or a stamp smaller than 3x3.
    """
    with _open(path, "PSF") as hdul:
        hdu = _first_image(hdul, path, "PSF")
        try:
            return ImagePsf(hdu.data)
        except InvalidInputError as exc:
            raise InvalidInputError(f"PSF file {os.fspath(path)!r}: {exc}") from exc


def _hdus(exposure):
    x0, y0 = exposure.getXY0()
    primary = fits.PrimaryHDU()
    meta = exposure.metadata if exposure.metadata is not None else fits.Header()
    primary.header.update(_carry(meta))
    if exposure.band:
        primary.header["BAND"] = exposure.band
    primary.header["PHOTCALIB"] = (exposure.photoCalib, "nJy per count")
    wcs_header = fits.Header()
    if exposure.wcs is not None:  # back to the array's frame, as afw writes it
        array_wcs = exposure.wcs.deepcopy()
        array_wcs.wcs.crpix = array_wcs.wcs.crpix - np.asarray([x0, y0], float)
        wcs_header = array_wcs.to_header(relax=True)
    out = [primary]
    for name, data in (
        # big-endian copies: astropy writes them as they are (it would byteswap native arrays
        # in place while writing, and the exposure's planes must not change, even briefly)
        ("IMAGE", exposure.image.array.astype(">f4")),
        ("MASK", exposure.mask.array.astype(">i4")),
        ("VARIANCE", exposure.variance.array.astype(">f4")),
    ):
        hdu = fits.ImageHDU(data, name=name)
        hdu.header["EXTTYPE"] = name
        hdu.header["INHERIT"] = True
        hdu.header["LTV1"], hdu.header["LTV2"] = -x0, -y0
        hdu.header.update(wcs_header)
        if name == "MASK":
            for plane, number in sorted(exposure.mask.planes.items(), key=lambda p: p[1]):
                hdu.header[f"MP_{plane}"] = number  # long names become HIERARCH cards
        out.append(hdu)
    if exposure.psf is not None:
        kernel = np.asarray(exposure.psf.computeKernelImage(), np.float32)
        out.append(fits.ImageHDU(kernel, name="PSF"))
    return fits.HDUList(out)


def write_exposure(exposure, path, overwrite=False):
    """Write ``exposure`` in afw's MaskedImage layout, atomically (``.gz`` names compress).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False.
    """
    with atomic_output(path, overwrite) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            hdul = _hdus(exposure)
            hdul.writeto(tmp, overwrite=True, output_verify="silentfix")
