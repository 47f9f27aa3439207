"""Exposures as ip_diffim users know them: image, mask, variance, PSF, WCS, calibration, band.

A small stand-in for afw's ``Box2I``, ``Image``, ``Mask`` and ``ExposureF`` (Task layer only; the
functional core works on :class:`jaxdiffim.MaskedImage` arrays). Arrays are indexed ``[y, x]``;
positions (``x``, ``y``) are *parent* pixel coordinates, so that a sub-image keeps the coordinates
of the exposure it was cut from: pixel ``array[j, i]`` sits at ``(x0 + i, y0 + j)``.
"""

import copy as _copy

import numpy as np

from ..core import host
from ..core.convolve import MaskedImage
from ..core.masks import MASK_PLANES, integer_mask
from ..errors import InvalidInputError

__all__ = ["Box2I", "Image", "Mask", "Exposure"]


class Box2I:
    """Integer pixel box (afw ``Box2I``): ``min`` corner and dimensions, inclusive ``max``.

    Parameters
    ----------
    x0, y0 : int
        Lower-left pixel (parent coordinates).
    width, height : int
        Size in pixels (>= 0).
    """

    def __init__(self, x0, y0, width, height):
        self.x0, self.y0 = int(x0), int(y0)
        self.width, self.height = int(width), int(height)
        if self.width < 0 or self.height < 0:
            raise InvalidInputError(f"Box2I needs non-negative dimensions, got {width}x{height}.")

    def getMinX(self):  # noqa: N802 - afw names
        return self.x0

    def getMinY(self):  # noqa: N802
        return self.y0

    def getMaxX(self):  # noqa: N802
        return self.x0 + self.width - 1

    def getMaxY(self):  # noqa: N802
        return self.y0 + self.height - 1

    def getWidth(self):  # noqa: N802
        return self.width

    def getHeight(self):  # noqa: N802
        return self.height

    def getDimensions(self):  # noqa: N802
        """``(width, height)``."""
        return self.width, self.height

    def getBegin(self):  # noqa: N802
        """``(x0, y0)``."""
        return self.x0, self.y0

    def getCenter(self):  # noqa: N802
        """Centre in continuous pixel coordinates ``(x, y)``."""
        return self.x0 + (self.width - 1) / 2.0, self.y0 + (self.height - 1) / 2.0

    def getArea(self):  # noqa: N802
        return self.width * self.height

    def isEmpty(self):  # noqa: N802
        return self.width == 0 or self.height == 0

    def contains(self, other):
        """True when ``other`` (a Box2I) lies inside this box."""
        return (
            other.x0 >= self.x0
            and other.y0 >= self.y0
            and other.getMaxX() <= self.getMaxX()
            and other.getMaxY() <= self.getMaxY()
        )

    def clippedTo(self, other):  # noqa: N802
        """Intersection with ``other`` (possibly empty)."""
        x0, y0 = max(self.x0, other.x0), max(self.y0, other.y0)
        x1, y1 = min(self.getMaxX(), other.getMaxX()), min(self.getMaxY(), other.getMaxY())
        return Box2I(x0, y0, max(x1 - x0 + 1, 0), max(y1 - y0 + 1, 0))

    def dilatedBy(self, n):  # noqa: N802
        """The box grown by ``n`` pixels on every side."""
        return Box2I(self.x0 - n, self.y0 - n, self.width + 2 * n, self.height + 2 * n)

    def slices(self, parent):
        """Array slices of this box inside an array whose bbox is ``parent``."""
        if not parent.contains(self):
            raise InvalidInputError(f"{self} is not inside {parent}.")
        return (
            slice(self.y0 - parent.y0, self.y0 - parent.y0 + self.height),
            slice(self.x0 - parent.x0, self.x0 - parent.x0 + self.width),
        )

    def __eq__(self, other):
        return isinstance(other, Box2I) and (
            (self.x0, self.y0, self.width, self.height)
            == (other.x0, other.y0, other.width, other.height)
        )

    def __hash__(self):
        return hash((self.x0, self.y0, self.width, self.height))

    def __repr__(self):
        return f"Box2I(x0={self.x0}, y0={self.y0}, width={self.width}, height={self.height})"


class Image:
    """A pixel array with its origin (afw ``Image``): ``.array`` is indexed ``[y, x]``."""

    def __init__(self, array, xy0=(0, 0), dtype=np.float32, *, copy=True):
        self.array = np.array(array, dtype=dtype) if copy else np.asarray(array, dtype)
        if self.array.ndim != 2:
            raise InvalidInputError(f"An image must be 2-D, got shape {self.array.shape}.")
        self.xy0 = (int(xy0[0]), int(xy0[1]))

    def getBBox(self):  # noqa: N802
        h, w = self.array.shape
        return Box2I(self.xy0[0], self.xy0[1], w, h)

    def getXY0(self):  # noqa: N802
        return self.xy0

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)

    def __getitem__(self, bbox):
        sl = bbox.slices(self.getBBox())
        out = _copy.copy(self)
        out.array = host.copy(self.array[sl])  # aligned: XLA reads it in place
        out.xy0 = bbox.getBegin()
        return out

    def clone(self):
        return _copy.deepcopy(self)


class Mask(Image):
    """Integer mask with named bit planes (afw ``Mask``), afw's default plane numbers."""

    def __init__(self, array, xy0=(0, 0), planes=None, *, copy=True):
        array = integer_mask(array, "mask")  # a view when it is int32 already
        super().__init__(array, xy0, dtype=np.int32, copy=copy)
        self.planes = dict(MASK_PLANES if planes is None else planes)

    def getMaskPlaneDict(self):  # noqa: N802
        """``{name: bit number}``."""
        return dict(self.planes)

    def addMaskPlane(self, name):  # noqa: N802
        """Add plane ``name`` if missing (first free bit); return its bit number."""
        if name not in self.planes:
            used = set(self.planes.values())
            free = next(i for i in range(31) if i not in used)
            self.planes[name] = free
        return self.planes[name]

    def getPlaneBitMask(self, names):  # noqa: N802
        """Bit value of one plane name or the OR over a sequence of names."""
        if isinstance(names, str):
            names = [names]
        out = 0
        for name in names:
            if name not in self.planes:
                raise InvalidInputError(
                    f"Unknown mask plane {name!r}; this mask has {sorted(self.planes)}."
                )
            out |= 1 << self.planes[name]
        return out

    def to_standard(self):
        """The array re-mapped onto :data:`jaxdiffim.core.masks.MASK_PLANES` (the core's numbering).

        Planes unknown to the core are dropped.
        """
        known = {n: b for n, b in self.planes.items() if n in MASK_PLANES}
        if all(MASK_PLANES[n] == b for n, b in known.items()):  # same numbering: one pass
            keep = sum(1 << b for b in known.values())
            if self.array.dtype == np.int32 and not np.any(self.array & ~np.int32(keep)):
                return self.array  # nothing to drop (the core never writes into it)
            return np.bitwise_and(self.array, keep, dtype=np.int32)
        out = np.zeros(self.array.shape, np.int32)
        for name, number in self.planes.items():
            if name in MASK_PLANES:
                hit = (self.array >> number) & 1
                out |= (hit << MASK_PLANES[name]).astype(np.int32)
        return out


class Exposure:
    """Image + mask + variance + PSF + WCS + photometric calibration + band (afw ``ExposureF``).

    Parameters
    ----------
    image : array_like, shape (H, W)
        Pixel values (counts). Converted to float32.
    mask : array_like of int or Mask, optional
        Default: all zero.
    variance : array_like, shape (H, W), optional
        Variance in counts². Default: NaN (unknown), which the subtraction rejects.
    psf : PSF model, optional
        Anything with ``computeKernelImage(x, y)`` (:mod:`jaxdiffim.image.psf`).
    wcs : astropy.wcs.WCS, optional
    photoCalib : float
        Calibration in nJy per count.
    band : str, optional
    xy0 : tuple of int
        Parent coordinates of pixel ``[0, 0]``.
    metadata : astropy.io.fits.Header, optional
        Header cards carried through to output files.
    copy : bool
        Copy the planes (default); ``False`` takes numpy arrays of the right dtype as they are.
    """

    def __init__(
        self,
        image,
        mask=None,
        variance=None,
        psf=None,
        wcs=None,
        photoCalib=1.0,  # noqa: N803 - afw name
        band=None,
        xy0=(0, 0),
        metadata=None,
        *,
        copy=True,
    ):
        # copies (unless ``copy=False`` for arrays the caller hands over): the caller's planes
        # are never changed
        self.image = (
            Image(image.array, image.xy0, copy=copy)
            if isinstance(image, Image)
            else Image(image, xy0, copy=copy)
        )
        xy0 = self.image.xy0
        shape = self.image.array.shape
        if mask is None:
            mask = np.zeros(shape, np.int32)
        planes = mask.planes if isinstance(mask, Mask) else None
        self.mask = Mask(np.asarray(mask), xy0, planes, copy=copy)
        if variance is None:
            variance = np.full(shape, np.nan, np.float32)
        self.variance = Image(np.asarray(variance), xy0, copy=copy)
        for name, plane in (("mask", self.mask), ("variance", self.variance)):
            if plane.array.shape != shape:
                raise InvalidInputError(
                    f"The {name} plane has shape {plane.array.shape} but the image has {shape}; "
                    "give planes of one shape."
                )
            plane.xy0 = xy0
        self.psf = psf
        self.wcs = wcs
        self.photoCalib = float(photoCalib)
        self.band = band
        self.metadata = metadata

    @classmethod
    def from_masked(cls, masked, like, psf=None):
        """An exposure of ``masked`` (core planes) with the bbox, WCS, calibration, band and
        header of the exposure ``like``, and the PSF ``psf``."""
        return cls(  # one copy of each plane, owned by the new exposure
            np.array(masked.image, np.float32),
            np.array(masked.mask, np.int32),
            np.array(masked.variance, np.float32),
            copy=False,
            psf=psf,
            wcs=like.wcs,
            photoCalib=like.photoCalib,
            band=like.band,
            xy0=like.getXY0(),
            metadata=None if like.metadata is None else like.metadata.copy(),
        )

    # afw accessors ---------------------------------------------------------------------
    def getBBox(self):  # noqa: N802
        return self.image.getBBox()

    def getXY0(self):  # noqa: N802
        return self.image.xy0

    def getX0(self):  # noqa: N802
        return self.image.xy0[0]

    def getY0(self):  # noqa: N802
        return self.image.xy0[1]

    def getWidth(self):  # noqa: N802
        return self.image.array.shape[1]

    def getHeight(self):  # noqa: N802
        return self.image.array.shape[0]

    def getPsf(self):  # noqa: N802
        return self.psf

    def setPsf(self, psf):  # noqa: N802
        self.psf = psf

    def hasPsf(self):  # noqa: N802
        return self.psf is not None

    def getWcs(self):  # noqa: N802
        return self.wcs

    def getPhotoCalib(self):  # noqa: N802
        return self.photoCalib

    def getFilter(self):  # noqa: N802
        return self.band

    @property
    def filter(self):
        return self.band

    @property
    def maskedImage(self):  # noqa: N802
        """The planes as the core's :class:`jaxdiffim.MaskedImage` (mask in core numbering)."""
        return MaskedImage(self.image.array, self.variance.array, self.mask.to_standard())

    def __getitem__(self, bbox):
        """Sub-exposure over ``bbox`` (parent coordinates), a copy that keeps its xy0."""
        out = _copy.copy(self)
        out.image, out.mask, out.variance = self.image[bbox], self.mask[bbox], self.variance[bbox]
        return out

    def clone(self):
        """Deep copy (the PSF and WCS objects are shared; they are not modified in place)."""
        out = _copy.copy(self)
        out.image, out.mask, out.variance = (
            self.image.clone(),
            self.mask.clone(),
            self.variance.clone(),
        )
        out.metadata = None if self.metadata is None else self.metadata.copy()
        return out

    def psf_callable(self):
        """The PSF as the core expects it: ``f(x, y)`` in *array* coordinates -> kernel image."""
        psf, (x0, y0) = self.psf, self.getXY0()
        if psf is None:
            return None

        def evaluate(x, y):
            return psf.computeKernelImage(x + x0, y + y0)

        return evaluate

    def __repr__(self):
        return f"Exposure(bbox={self.getBBox()}, band={self.band!r}, psf={self.psf!r})"
