"""Host (NumPy) arrays that XLA:CPU reads in place.

A NumPy array passed to a compiled program on the CPU is used where it lies when its data are
aligned to :data:`ALIGNMENT` bytes; otherwise XLA copies it for the call. NumPy's allocator
aligns large arrays to 16 bytes only, so the two 4096² images of a subtraction (image,
variance and mask planes: 0.4 GB) were copied once more for the first program (measured on
jaxlib 0.10: a prepare call's resident memory grew by 1.43 GB with NumPy's planes and by 1.03
GB, its outputs and working memory, with aligned ones). The readers allocate their planes here.

:func:`release_free_memory` hands the C heap's free memory back to the system before a large
program runs (the subtraction calls it), so that what earlier steps freed is not counted twice.
"""

import ctypes
import ctypes.util
import functools

import numpy as np

__all__ = ["ALIGNMENT", "aligned", "copy", "empty", "is_aligned", "release_free_memory", "zeros"]

#: Byte alignment at which XLA:CPU takes a host buffer without copying it.
ALIGNMENT = 64


def empty(shape, dtype):
    """An uninitialised C-contiguous array whose data start on an :data:`ALIGNMENT` boundary."""
    return _aligned_view(np.empty, shape, dtype)


def zeros(shape, dtype):
    """:func:`empty` filled with zeros (pages the system zeroes lazily, as ``np.zeros``: a mask
    plane that stays mostly 0 costs little resident memory)."""
    return _aligned_view(np.zeros, shape, dtype)


def _aligned_view(allocate, shape, dtype):
    dtype = np.dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = allocate(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + size].view(dtype).reshape(shape)


def is_aligned(array):
    """Whether ``array`` is C-contiguous and starts on an :data:`ALIGNMENT` boundary."""
    return array.flags.c_contiguous and array.ctypes.data % ALIGNMENT == 0


def copy(array, dtype=None):
    """An aligned C-contiguous copy of ``array`` as ``dtype`` (native byte order)."""
    array = np.asarray(array)
    out = empty(array.shape, np.dtype(array.dtype if dtype is None else dtype).newbyteorder("="))
    np.copyto(out, array, casting="unsafe")
    return out


def aligned(array, dtype=None):
    """``array`` as ``dtype``, C-contiguous and aligned: the array itself when it already is,
    else :func:`copy`."""
    array = np.asarray(array)
    dtype = np.dtype(array.dtype if dtype is None else dtype).newbyteorder("=")
    if array.dtype == dtype and is_aligned(array):
        return array
    return copy(array, dtype)


@functools.cache
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)  # glibc only


def release_free_memory():
    """Return the memory the C heap holds free to the system (glibc's ``malloc_trim``; nothing
    elsewhere). glibc keeps what NumPy's temporaries and XLA's buffers freed for reuse; at
    4096² that was 0.2 GB more resident memory before each program of the subtraction (the
    command's peak 2.17 -> 1.96 GB, measured in-process; a few ms a call).

    Returns
    -------
    bool
        Whether the heap was trimmed (False off glibc).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
