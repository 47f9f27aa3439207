"""Kernel-source selection: ip_diffim's cuts on a catalogue, with an account of each cut.

The list of stars that the Alard-Lupton kernel is fitted on is prepared on the host:

* :func:`select_kernel_sources` applies ip_diffim's kernel-source cuts (``_sourceSelector`` and
  ``checkMask``, ip_diffim.md §2.7) to a catalogue: bad flags, isolation, an S/N window, the
  image edge, excluded mask planes in the (2k+1)² footprint, and a cap on the number kept.
  It raises :class:`~jaxdiffim.errors.InsufficientKernelSourcesError` with a per-cut account
  when too few survive.
* the detector used when no catalogue is given lives in :mod:`jaxdiffim.algorithms.detection`.

Coordinates are 0-based array pixel coordinates: pixel centres at integers, ``x`` the column
and ``y`` the row. The bookkeeping (data-dependent counts) is NumPy on the host.
"""

from typing import NamedTuple

import numpy as np

from ..core.masks import KERNEL_SOURCE_EXCLUDE, bits
from ..errors import InsufficientKernelSourcesError, InvalidInputError

__all__ = [
    "SELECTION_CUTS",
    "FAINT_NEIGHBOUR_RATIO",
    "SourceSelection",
    "select_kernel_sources",
]

#: Names of the selection cuts, in the order :func:`select_kernel_sources` applies them.
SELECTION_CUTS = ("flags", "isolation", "signal_to_noise", "edge", "mask", "max_sources")

#: A neighbour more than this many times fainter does not spoil a source's isolation.
FAINT_NEIGHBOUR_RATIO = 100.0


class SourceSelection(NamedTuple):
    """Result of :func:`select_kernel_sources`.

    Attributes
    ----------
    indices : ndarray of int, shape (n_selected,)
        Rows of the input catalogue that were kept, ascending.
    counts : dict
        ``{cut name: number of sources that cut removed}``, in :data:`SELECTION_CUTS` order; each
        cut counts only the sources that survived the cuts before it.
    """

    indices: np.ndarray
    counts: dict


def _as_vector(values, name, n=None, dtype=float):
    """1-D host array of ``values`` (length ``n`` when given), or InvalidInputError."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be 1-D; got shape {arr.shape}.")
    if n is not None and arr.size != n:
        raise InvalidInputError(f"{name} has {arr.size} entries but x has {n}; they must match.")
    if dtype is bool:
        if arr.dtype != bool:
            raise InvalidInputError(f"{name} must be a boolean array; got dtype {arr.dtype}.")
        return arr
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} must be numeric; got dtype {arr.dtype}.") from exc


def _close_pairs(x, y, radius):
    """All unordered pairs ``(i, j)`` with ``hypot(x_i - x_j, y_i - y_j) <= radius``.

    Sweep over the points sorted by ``x``: step ``s`` compares every point with the one ``s``
    places later, and stops at the first step where no such pair is within ``radius`` in ``x``.
    The cost is ``n`` times the largest number of points in a strip ``radius`` wide.
    """
    empty = np.zeros(0, np.int64)
    n = x.size
    if n < 2 or not radius > 0:
        return empty, empty
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    r2 = float(radius) ** 2
    first, second = [], []
    for step in range(1, n):
        dx = xs[step:] - xs[:-step]
        near = dx <= radius
        if not near.any():
            break
        dy = ys[step:] - ys[:-step]
        hit = np.nonzero(near & (dx * dx + dy * dy <= r2))[0]
        first.append(order[hit])
        second.append(order[hit + step])
    if not first:
        return empty, empty
    return np.concatenate(first), np.concatenate(second)


def _crowded(x, y, radius, brightness=None):
    """True for points with a neighbour within ``radius`` that is not >100x fainter.

    ``brightness`` (S/N or flux) decides "fainter"; without it every neighbour counts. A NaN
    brightness never makes a neighbour negligible.
    """
    crowded = np.zeros(x.size, bool)
    i, j = _close_pairs(x, y, radius)
    if i.size == 0:
        return crowded
    if brightness is None:
        crowded[i] = True
        crowded[j] = True
        return crowded
    bi, bj = brightness[i], brightness[j]
    crowded[i[~(bj * FAINT_NEIGHBOUR_RATIO < bi)]] = True
    crowded[j[~(bi * FAINT_NEIGHBOUR_RATIO < bj)]] = True
    return crowded


def _footprint_hits(mask, ix, iy, half, bitmask):
    """Whether any pixel of the ``(2 half + 1)²`` box around each ``(ix, iy)`` has ``bitmask``.

    The boxes must lie inside ``mask``. Gathered in chunks of about 4 M pixels.
    """
    out = np.zeros(ix.size, bool)
    offsets = np.arange(-half, half + 1)
    chunk = max(1, (1 << 22) // offsets.size**2)
    for start in range(0, ix.size, chunk):
        rows = iy[start : start + chunk, None, None] + offsets[None, :, None]
        cols = ix[start : start + chunk, None, None] + offsets[None, None, :]
        out[start : start + chunk] = ((mask[rows, cols] & bitmask) != 0).any(axis=(1, 2))
    return out


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)


# ----------------------------------------------------------------------- kernel sources


def select_kernel_sources(
    x,
    y,
    *,
    shape,
    mask,
    kernel_size,
    snr=None,
    flags=None,
    isolated=None,
    min_snr=10.0,
    max_snr=500.0,
    restrict_edge=True,
    extra_edge=0,
    isolation_radius=None,
    exclude_planes=KERNEL_SOURCE_EXCLUDE,
    max_sources=1000,
    min_sources=3,
    origin="catalogue sources",
):
    """Choose the catalogue sources the PSF-matching kernel is fitted on (ip_diffim §2.7).

    The cuts run in :data:`SELECTION_CUTS` order, each on the survivors of the previous ones:

    ``flags``
        Sources with ``flags`` True are removed.
    ``isolation``
        With ``isolated`` given, sources where it is False are removed. Otherwise the test is
        geometric: a source is crowded when another *catalogue* source (flagged ones included,
        since they still contaminate the stamp) lies within ``isolation_radius`` pixels, unless
        that neighbour's ``snr`` is more than :data:`FAINT_NEIGHBOUR_RATIO` (100) times lower.
        Without ``snr`` every neighbour counts. ip_diffim relies on the catalogue's deblender
        flags instead; the geometric test stands in for them when a catalogue has none.
    ``signal_to_noise``
        Keep ``min_snr <= snr <= max_snr`` (inclusive; NaN fails). Skipped without ``snr``.
    ``edge``
        The footprint, the ``(2 kernel_size + 1)²`` box centred on ``np.rint`` of the position,
        must lie inside the image shrunk by ``kernel_size`` (if ``restrict_edge``, ip_diffim's
        ``restrictKernelEdgeSources``) plus ``extra_edge`` pixels on every side.
    ``mask``
        Sources with any ``exclude_planes`` bit anywhere in the footprint are removed.
    ``max_sources``
        If ``max_sources > 0``, keep the ``max_sources`` highest-``snr`` survivors (ties and the
        no-``snr`` case: the earliest rows).

    Parameters
    ----------
    x, y : array_like, shape (n,)
        Source centres in array pixel coordinates (column, row), finite.
    shape : tuple of 2 ints
        ``(H, W)`` of the images.
    mask : array_like of int, shape (H, W), or None
        OR of the science and template integer masks (the caller ORs them, so a source is
        rejected for a bad pixel in either). None skips the mask cut.
    kernel_size : int
        Kernel width in pixels (odd, >= 3); the footprint half-width.
    snr : array_like, shape (n,), optional
        Source S/N (e.g. PSF flux / flux error).
    flags : array_like of bool, shape (n,), optional
        True = bad source.
    isolated : array_like of bool, shape (n,), optional
        True = isolated; replaces the geometric isolation test.
    min_snr, max_snr : float or None
        S/N window; None removes that bound.
    restrict_edge : bool
        Shrink the allowed area by ``kernel_size`` (ip_diffim default True).
    extra_edge : int
        Further shrinking in pixels (preconvolution uses another kernel width).
    isolation_radius : float, optional
        Pixels; default ``kernel_size``. 0 disables the geometric test.
    exclude_planes : sequence of str
        Mask planes that disqualify a footprint.
    max_sources : int
        Cap on the number kept; <= 0 disables it.
    min_sources : int
        Minimum number that must survive.
    origin : str
        What the sources are, for the error message.

    Returns
    -------
    SourceSelection

    Raises
    ------
    InvalidInputError
        Inconsistent lengths, non-finite coordinates, a bad ``kernel_size``, ``shape`` or mask.
    InsufficientKernelSourcesError
        Fewer than ``min_sources`` survive; the message gives the count each cut removed.
    """
    x = _as_vector(x, "x")
    n = x.size
    y = _as_vector(y, "y", n)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        bad = int(np.sum(~(np.isfinite(x) & np.isfinite(y))))
        raise InvalidInputError(
            f"{bad} source position(s) are not finite; drop them from the catalogue first."
        )
    if (
        isinstance(kernel_size, bool)
        or not isinstance(kernel_size, (int, np.integer))
        or kernel_size < 3
        or kernel_size % 2 == 0
    ):
        raise InvalidInputError(f"kernel_size must be an odd integer >= 3; got {kernel_size!r}.")
    k = int(kernel_size)
    try:
        height, width = (int(s) for s in shape)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"shape must be (H, W); got {shape!r}.") from exc
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"shape must be positive; got {shape!r}.")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (height, width):
            raise InvalidInputError(f"mask has shape {mask.shape}; expected {(height, width)}.")
        if not np.issubdtype(mask.dtype, np.integer):
            raise InvalidInputError(f"mask must be an integer array; got dtype {mask.dtype}.")
    if snr is not None:
        snr = _as_vector(snr, "snr", n)
    if flags is not None:
        flags = _as_vector(flags, "flags", n, bool)
    if isolated is not None:
        isolated = _as_vector(isolated, "isolated", n, bool)
    extra_edge = _check_int(extra_edge, "extra_edge", 0)
    min_sources = _check_int(min_sources, "min_sources", 0)
    if isinstance(max_sources, bool) or not isinstance(max_sources, (int, np.integer)):
        raise InvalidInputError(f"max_sources must be an integer; got {max_sources!r}.")
    radius = float(k if isolation_radius is None else isolation_radius)
    if not np.isfinite(radius) or radius < 0:
        raise InvalidInputError(f"isolation_radius must be >= 0; got {isolation_radius!r}.")
    bitmask = bits(exclude_planes)

    keep = np.ones(n, bool)
    counts = {}

    def cut(name, good):
        nonlocal keep
        new = keep & good
        counts[name] = int(keep.sum() - new.sum())
        keep = new

    cut("flags", ~flags if flags is not None else np.ones(n, bool))
    if isolated is not None:
        cut("isolation", isolated)
    else:
        cut("isolation", ~_crowded(x, y, radius, snr))
    if snr is not None:
        lo = -np.inf if min_snr is None else float(min_snr)
        hi = np.inf if max_snr is None else float(max_snr)
        cut("signal_to_noise", (snr >= lo) & (snr <= hi))
    else:
        cut("signal_to_noise", np.ones(n, bool))
    ix = np.rint(x).astype(np.int64)
    iy = np.rint(y).astype(np.int64)
    margin = (k if restrict_edge else 0) + extra_edge
    inside = (ix - k >= margin) & (ix + k <= width - 1 - margin)
    inside &= (iy - k >= margin) & (iy + k <= height - 1 - margin)
    cut("edge", inside)
    clean = np.ones(n, bool)
    if mask is not None and bitmask:
        alive = np.nonzero(keep)[0]
        clean[alive] = ~_footprint_hits(mask, ix[alive], iy[alive], k, bitmask)
    cut("mask", clean)
    capped = np.ones(n, bool)
    alive = np.nonzero(keep)[0]
    if max_sources > 0 and alive.size > max_sources:
        if snr is not None:
            order = np.argsort(-np.nan_to_num(snr[alive], nan=-np.inf), kind="stable")
            dropped = alive[order[max_sources:]]
        else:
            dropped = alive[max_sources:]
        capped[dropped] = False
    cut("max_sources", capped)

    indices = np.nonzero(keep)[0]
    if indices.size < min_sources:
        removed = ", ".join(f"{name}={count}" for name, count in counts.items())
        raise InsufficientKernelSourcesError(
            f"Only {indices.size} of the {n} {origin} survived kernel-source selection "
            f"(min_sources={min_sources}). Removed by each cut: {removed}. Lower "
            "min_kernel_sources, pass a deeper catalogue (more or brighter sources, or widen "
            f"the S/N window {min_snr}..{max_snr}), or check the science/template masks "
            f"({', '.join(exclude_planes)}) and the kernel size ({k}), which set the "
            "footprint and edge cuts."
        )
    return SourceSelection(indices, counts)


# ------------------------------------------------------------------------------ detection
