"""Mask bit planes with afw's default assignments, and helpers on integer mask arrays.

A mask is an integer array; plane ``NAME`` is bit ``MASK_PLANES[NAME]`` (afw
``Mask::addMaskPlane`` defaults). The functional core only needs a few of them.
"""

from ..errors import InvalidInputError

__all__ = ["MASK_PLANES", "bit", "bits"]

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
