"""Mask bit planes with afw's default assignments, and helpers on integer mask arrays.

A mask is an integer array; plane ``NAME`` is bit ``MASK_PLANES[NAME]`` (afw
``Mask::addMaskPlane`` defaults). The functional core only needs a few of them.
"""

__all__ = ["MASK_PLANES", "bit"]

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
}


def bit(name):
    """Integer value of plane ``name`` (``1 << MASK_PLANES[name]``)."""
    return 1 << MASK_PLANES[name]
