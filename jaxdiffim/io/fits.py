"""Exposures in and out of FITS files.

* **afw MaskedImage layout** (what the LSST stack writes): an empty PRIMARY HDU with the
  metadata, then ``IMAGE`` (float32), ``MASK`` (int32, plane numbers in ``MP_<NAME>`` keywords)
  and ``VARIANCE`` (float32) extensions; ``LTV1``/``LTV2`` hold ``-x0``/``-y0``. Read and written.
  The PSF (its kernel image at the average position) is written to an extra ``PSF`` extension
  and read back as an :class:`~jaxdiffim.image.psf.ImagePsf`; a PSF that varies on a grid
  (its ``nodes()``, e.g. an estimated one) is also written as a ``PSFGRID`` cube of shape
  (n_y n_x, s, s) (node ``[j, i]`` at row ``j n_x + i``; ``NX``, ``NY``, ``XNODEi``,
  ``YNODEj`` in parent pixels) and read back as a :class:`~jaxdiffim.image.psf.GridImagePsf`.
* **A plain image** (the first HDU with 2-D data), with optional separate variance, weight
  (inverse variance) or sigma files and a mask file. Without any of them the variance is
  estimated: from ``GAIN`` (or the mean of ``GAINA``/``GAINB``), the read noise (``RDNOISE``,
  or ``RDNOISEA``/``RDNOISEB``, electrons) and the subtracted sky (``AVSKY``, ``SKYLEVEL`` or
  ``SKY``, counts) when the header has them, as ``(max(I, 0) + sky) / gain + (rn / gain)²``;
  otherwise robustly from the pixels (the squared ``astropy.stats.mad_std`` around the binned
  background, plus ``max(I - background, 0) / gain`` when the gain is known). Non-finite
  pixels become ``NO_DATA``; pixels at the header's saturation level (``SATURATE``, or the lower
  of ``SATURATA`` and ``SATURATB``, minus the subtracted sky) become ``SAT``, and so do
  non-finite pixels next to very bright ones (blanked saturated cores,
  :func:`~jaxdiffim.io.headers.saturated_holes`).

Output files are written atomically (a temporary file in the same directory, then
``os.replace``) and never overwrite an existing file unless ``overwrite=True``.
"""

import os
import warnings

import numpy as np
from astropy.io import fits

from ..core import host
from ..core.masks import MASK_PLANES
from ..errors import InputFileError, InvalidInputError, JaxDiffimError
from ..image.exposure import Exposure, Mask
from ..image.psf import GridImagePsf, ImagePsf
from .atomic import atomic_output
from .headers import (
    band,
    calibration,
    carry,
    estimate_variance,
    mask_planes,
    saturated_holes,
    saturation_mask,
    wcs_of,
)

__all__ = ["read_exposure", "write_exposure", "read_psf", "estimate_variance"]

#: Variances whose median fills the variance of pixels without data.
_FILL_SAMPLES = 1 << 20


def _open(path, what):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputFileError(f"{what} file {path!r} does not exist.")
    # the file is opened (and closed) here: astropy keeps a file it fails on open
    with open(path, "rb") as handle:
        try:
            hdul = fits.open(handle, memmap=False)
            hdul.verify("silentfix")
            for hdu in hdul:
                _ = hdu.data  # force reading: a truncated file fails here, not later
        except Exception as exc:  # noqa: BLE001 - gzip/zlib/verify errors too: one clear error
            message = f"{what} file {path!r} is not a readable FITS file ({exc})."
            raise InputFileError(message) from None
    return hdul  # every HDU is in memory


def _first_image(hdul, path, what):
    for hdu in hdul:
        if hdu.data is not None and np.ndim(hdu.data) == 2:
            return hdu
    raise InputFileError(f"{what} file {path!r} has no 2-D image HDU.")


def _flag(mask, where, plane):
    """Set ``plane``'s bit of the int32 ``mask`` where ``where`` is True, in place."""
    np.bitwise_or(mask, np.int32(1 << MASK_PLANES[plane]), out=mask, where=where)


def _read_afw(hdul):
    img_hdu, mask_hdu, var_hdu = hdul["IMAGE"], hdul["MASK"], hdul["VARIANCE"]
    header = img_hdu.header
    xy0 = (-int(header.get("LTV1", 0)), -int(header.get("LTV2", 0)))
    meta = carry(hdul[0].header)
    meta.update(carry(header))
    psf = None
    if "PSFGRID" in hdul:
        psf = _read_grid(hdul["PSFGRID"])
    elif "PSF" in hdul:
        psf = ImagePsf(hdul["PSF"].data)
    # planes aligned for XLA (read in place, not copied again: jaxdiffim.core.host)
    mask = Mask(host.copy(mask_hdu.data, np.int32), xy0, mask_planes(mask_hdu.header))
    image = host.copy(img_hdu.data, np.float32)
    variance = host.copy(var_hdu.data, np.float32)
    if image.shape != variance.shape or image.shape != mask.array.shape:
        raise InputFileError(
            f"The IMAGE {image.shape}, MASK {mask.array.shape} and VARIANCE {variance.shape} "
            "extensions differ in shape; write planes of one shape."
        )
    # as the subtraction would: unusable pixels are flagged, never passed on unmarked
    no_data = ~np.isfinite(image)
    bad = ~no_data & ~(np.isfinite(variance) & (variance > 0))
    _flag(mask.array, no_data, "NO_DATA")
    _flag(mask.array, bad, "BAD")
    return Exposure(
        image,
        mask,
        variance,
        copy=False,  # new arrays
        psf=psf,
        wcs=wcs_of(header, xy0),
        photoCalib=calibration(meta),
        band=band(meta),
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
        afw = {"IMAGE", "MASK", "VARIANCE"}
        if names & afw not in (set(), {"IMAGE"}, afw):  # a lone IMAGE HDU is a plain image
            raise InputFileError(
                f"{os.fspath(path)!r} has the {'/'.join(sorted(names & afw))} extension(s) of "
                f"afw's layout but no {'/'.join(sorted(afw - names))}: it is incomplete. Write "
                "all of IMAGE, MASK and VARIANCE, or the image alone as a plain FITS image "
                "(with --*-variance/--*-mask files if you have them)."
            )
        if afw <= names:
            if given or mask:
                raise InvalidInputError(
                    f"{os.fspath(path)!r} already has MASK and VARIANCE planes (afw layout); "
                    "variance, weight, sigma and mask files apply to plain images only."
                )
        try:
            exp = _read_afw(hdul) if afw <= names else _read_plain(hdul, path, given, mask)
        except JaxDiffimError:
            raise
        except Exception as exc:  # noqa: BLE001 - a damaged header or plane: one clear error
            raise InputFileError(
                f"Image file {os.fspath(path)!r} is not a readable FITS exposure ({exc})."
            ) from None
    if psf is not None:
        exp.psf = read_psf(psf)
    return exp


def _read_plain(hdul, path, given, mask):
    hdu = _first_image(hdul, path, "Image")
    header = hdul[0].header.copy() if hdu is not hdul[0] else fits.Header()
    header.update(carry(hdu.header))
    image = host.copy(hdu.data, np.float32)  # planes aligned for XLA (jaxdiffim.core.host)
    bad = ~np.isfinite(image)
    if given:
        kind, aux = given[0]
        data, _ = _aux_plane(aux, kind, image.shape)
        data = np.array(data, np.float32)  # an owned copy (the exposure takes it over)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            var = {"variance": data, "weight": 1.0 / data, "sigma": data**2}[kind]
    else:
        with np.errstate(over="ignore"):
            var = estimate_variance(image, header)
    bad |= ~(np.isfinite(var) & (var > 0))  # no noise level there: no data
    if mask is not None:
        data, mhead = _aux_plane(mask, "mask", image.shape)
        m = Mask(np.asarray(data).astype(np.int32), planes=mask_planes(mhead))
        mask_array = m.to_standard()
    else:
        mask_array = host.zeros(image.shape, np.int32)
    _flag(mask_array, saturation_mask(image, header), "SAT")
    _flag(mask_array, saturated_holes(image, ~np.isfinite(image)), "SAT")  # blanked cores
    _flag(mask_array, bad, "NO_DATA")
    if bad.all():
        raise InvalidInputError(f"Image file {os.fspath(path)!r} has no finite pixels.")
    if bad.any():  # a typical variance (a regular subsample's median) for the holes
        good_var = var[~bad]
        fill = float(np.median(good_var[:: max(1, good_var.size // _FILL_SAMPLES)]))
        image[bad] = 0.0
        var = np.where(bad, np.float32(fill), var)
    return Exposure(  # every plane is a new array here
        image,
        host.aligned(mask_array, np.int32),
        host.aligned(var, np.float32),
        copy=False,
        wcs=wcs_of(header),
        photoCalib=calibration(header),
        band=band(header),
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
    primary.header.update(carry(meta))
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
        nodes = exposure.psf.nodes() if hasattr(exposure.psf, "nodes") else None
        if nodes is not None:
            out.append(_grid_hdu(exposure.psf, *nodes))
    return fits.HDUList(out)


def _grid_hdu(psf, x_nodes, y_nodes):
    cube = np.stack([psf.computeKernelImage(x, y) for y in y_nodes for x in x_nodes])
    hdu = fits.ImageHDU(cube.astype(np.float32), name="PSFGRID")
    hdu.header["NX"], hdu.header["NY"] = len(x_nodes), len(y_nodes)
    for i, x in enumerate(x_nodes, 1):
        hdu.header[f"XNODE{i}"] = float(x)
    for j, y in enumerate(y_nodes, 1):
        hdu.header[f"YNODE{j}"] = float(y)
    return hdu


def _read_grid(hdu):
    header = hdu.header
    try:
        n_x, n_y = int(header["NX"]), int(header["NY"])
        x_nodes = [float(header[f"XNODE{i}"]) for i in range(1, n_x + 1)]
        y_nodes = [float(header[f"YNODE{j}"]) for j in range(1, n_y + 1)]
        cube = np.asarray(hdu.data, np.float64)
        images = cube.reshape(n_y, n_x, *cube.shape[1:])
    except (KeyError, ValueError, TypeError) as err:
        raise InputFileError(f"The PSFGRID extension is malformed ({err}).") from err
    return GridImagePsf(images, x_nodes, y_nodes)


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
