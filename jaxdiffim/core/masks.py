"""Mask bit planes with afw's default assignments, and helpers on integer mask arrays.

A mask is an integer array; plane ``NAME`` is bit ``MASK_PLANES[NAME]`` (afw
``Mask::addMaskPlane`` defaults). The functional core only needs a few of them.
"""

import numpy as np

from ..errors import InvalidInputError

__all__ = [
    "MASK_PLANES",
    "KERNEL_SOURCE_EXCLUDE",
    "FILL_BEFORE_FILTERING",
    "PRESERVE_TEMPLATE",
    "RENAME_TEMPLATE",
    "DETECTION_EXCLUDE",
    "SMEARED_TO_SUSPECT",
    "FILL_BEFORE_DECORRELATION",
    "SATURATED",
    "DIFFERENCE_SKY_IGNORE",
    "bit",
    "bits",
    "integer_mask",
]

#: afw's default plane numbers.
MASK_PLANES = {
    "BAD": 0,
    "SAT": 1,
    "INTRP": 2,
    "CR": 3,
    "EDGE": 4,
    "DETECTED": 5,
    "DETECTED_NEGATIVE": 6,
    "SUSPECT": 7,
    "NO_DATA": 8,
    # Planes the LSST pipelines add at run time; fixed numbers here so that an integer mask
    # means the same everywhere (FITS files map their own numbering through MP_* keywords).
    "HIGH_VARIANCE": 9,
    "FAKE": 10,
    "INJECTED": 11,
    "INJECTED_CORE": 12,
    "SAT_TEMPLATE": 13,
    "INJECTED_TEMPLATE": 14,
    "INJECTED_CORE_TEMPLATE": 15,
    "STREAK": 16,
}

# Named plane groups: the one home of each default list (configs take their defaults from here).

#: A source touching these planes is no kernel source (ip_diffim's ``excludeMaskPlanes``, plus
#: ``SAT_TEMPLATE``: ip_diffim renames the template's ``SAT`` before selecting sources, so its
#: check never sees saturated template stars).
KERNEL_SOURCE_EXCLUDE = ("NO_DATA", "BAD", "SAT", "EDGE", "FAKE", "HIGH_VARIANCE", "SAT_TEMPLATE")
#: Filled with the median before a filter runs over the image: preconvolution, decorrelation
#: (ip_diffim's ``badMaskPlanes``).
FILL_BEFORE_FILTERING = ("NO_DATA", "BAD", "SAT", "EDGE")
#: Template planes kept in the difference (``preserveTemplateMask``).
PRESERVE_TEMPLATE = ("NO_DATA", "BAD", "HIGH_VARIANCE")
#: Template planes copied to ``<NAME>_TEMPLATE`` (``renameTemplateMask``).
RENAME_TEMPLATE = ("SAT", "INJECTED", "INJECTED_CORE")
#: Pixels the built-in detector ignores.
DETECTION_EXCLUDE = ("NO_DATA", "BAD", "EDGE")
#: Preserved (unsmeared) planes of a convolved image whose kernel footprints get ``SUSPECT``:
#: the kernel spreads their bad values, or a saturated star's clipped core, into a ring.
SMEARED_TO_SUSPECT = ("NO_DATA", "BAD", "SAT", "EDGE", "SAT_TEMPLATE")
#: Filled before decorrelation as well as ``badMaskPlanes``: ``SUSPECT`` holds what the kernel
#: spread from preserved bad pixels (:data:`SMEARED_TO_SUSPECT`), garbage that the decorrelation
#: filter would carry past the flag (a bad template column left stripes of ±50σ on either side
#: in a score image, whose filter is broad).
FILL_BEFORE_DECORRELATION = ("SUSPECT",)
#: Clipped cores of either input, whose bright unclipped ring gets ``SUSPECT`` in the difference.
SATURATED = ("SAT", "SAT_TEMPLATE")
#: Pixels left out of the difference's residual sky: sources, flagged and suspect pixels.
DIFFERENCE_SKY_IGNORE = (
    "DETECTED",
    "DETECTED_NEGATIVE",
    "NO_DATA",
    "BAD",
    "SAT",
    "EDGE",
    "INTRP",
    "CR",
    "SUSPECT",
    "SAT_TEMPLATE",
)


def bit(name):
    """Integer value of plane ``name`` (``1 << MASK_PLANES[name]``)."""
    return 1 << MASK_PLANES[name]


def bits(names):
    """OR of the plane values of ``names`` (an iterable of plane names; unknown names raise).

    Raises
    ------
    InvalidInputError
        For a name that is not in :data:`MASK_PLANES`.
    """
    out = 0
    for name in names:
        if name not in MASK_PLANES:
            raise InvalidInputError(
                f"Unknown mask plane {name!r}; known planes: {sorted(MASK_PLANES)}."
            )
        out |= 1 << MASK_PLANES[name]
    return out


def integer_mask(array, what):
    """``array`` as an int32 mask (host side): integer arrays as they are (a view when already
    int32), boolean and float arrays only when every value is a whole number that fits.

    Parameters
    ----------
    array : array_like, shape (H, W)
    what : str
        The input's name, for the error.

    Raises
    ------
    InvalidInputError
        A float mask with NaN, fractional or out-of-range values, or a non-numeric one.
    """
    a = np.asarray(array)
    if np.issubdtype(a.dtype, np.integer) or a.dtype == bool:
        return a.astype(np.int32, copy=False)
    if np.issubdtype(a.dtype, np.floating):
        with np.errstate(invalid="ignore"):
            whole = np.isfinite(a) & (a == np.round(a)) & (a >= -(2**31)) & (a < 2**32)
        if whole.all():  # FITS masks are often stored as floats; uint32 bit 31 wraps
            return a.astype(np.int64).astype(np.uint32).view(np.int32)
        raise InvalidInputError(
            f"{what} must hold whole-number bit values; {int((~whole).sum())} of its values "
            f"are NaN, fractional or out of range ({a.dtype}). Give an integer mask."
        )
    raise InvalidInputError(f"{what} must be an integer array, got {a.dtype}.")
