"""Whole-image application of a spatially varying kernel, with variance and mask propagation.

The convolved image is ``sum_k f_k(x, y) (K_k ⊛ I)(x, y)`` with ``K_k = sum_i c_ik B_i`` one kernel
per spatial term: exactly ip_diffim's refactored ``LinearCombinationKernel`` convolution, without
afw's interpolation of kernel images over 10-pixel regions (ip_diffim.md §2.0). ``⊛`` is afw's
orientation, a correlation ``(K ⊛ I)(x) = sum_u K(u) I(x + u)``.

The correlations use overlap-save FFTs on square tiles: the image is cut into tiles of ``T``
pixels overlapping by ``k - 1``, each tile is transformed once and multiplied by every term's
kernel spectrum, and only the wrap-free interior of each tile is kept. On the 2-core CPU this
measured about twice as fast as full-size FFTs at 4096², because the transforms fit in cache, and
the kernel spectra cost next to nothing at tile size.

* variance: ``var_out(x) = sum_u K(x; u)² var(x + u)``, exactly, with
  ``K(x)² = sum_{k<=l} (2 - δ_kl) f_k f_l K_k K_l`` (ip_diffim: ``K² ⊛ var``);
* mask: the OR of the input mask over the kernel footprint (afw's mask smearing); non-finite
  input pixels are treated as 0 and flagged ``NO_DATA`` first, so their footprint is flagged;
* edge: the ``k // 2`` pixels along every border cannot be convolved; they keep their input
  values and get the ``EDGE`` bit (afw ``doCopyEdge=True``, as the subtraction tasks use).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .masks import SMEARED_TO_SUSPECT, bit, bits
from .spatial import basis_1d, normalized_coordinates, term_powers

__all__ = [
    "MaskedImage",
    "choose_tile",
    "correlate_terms",
    "spatial_factors",
    "term_kernels",
    "dilate_mask",
    "window_bound",
    "PSF_SIDES",
    "bucket_side",
    "pad_to_bucket",
    "flag_around",
    "edge_mask",
    "apply_kernel",
    "fft_correlate",
]


class MaskedImage(NamedTuple):
    """Image, variance and integer mask of the same shape (pytree)."""

    image: jax.Array
    variance: jax.Array
    mask: jax.Array


_TILE_SIZES = (64, 96, 128, 160, 192, 256, 320, 384, 512)


def choose_tile(shape, kernel_size):
    """Static FFT tile size: one tile for small images, else 256 (the measured sweet spot)."""
    need = max(shape) + kernel_size - 1
    for t in _TILE_SIZES:
        if t >= need and t <= 256:
            return t
    return 256


#: Tile rows transformed together; bands run one after another to bound the temporaries
#: (at 4096², 193 MB instead of 326 MB per correlation, at the same speed).
BAND_ROWS = 3


def correlate_terms(image, kernels, weights_y, weights_x, tile=None, zero=None):
    """``sum_q wy_q(y) wx_q(x) (K_q ⊛ image)(x, y)`` by tiled overlap-save FFTs.

    Each band of tile rows is cut from ``image`` itself (zero beyond the border) and written
    into the output in place: no padded copy of the image and no band-shaped intermediate (at
    4096² the two were 0.15 GB per correlation). The last band starts ``H - rows`` rows down,
    overlapping the one before.

    Parameters
    ----------
    image : Array, shape (H, W)
        Finite values where ``zero`` is False.
    kernels : Array, shape (Q, k, k)
        Odd-sized kernels in afw orientation.
    weights_y : Array, shape (Q, H)
    weights_x : Array, shape (Q, W)
        Separable weights of each term.
    tile : int, optional
        Tile size (static); default :func:`choose_tile`.
    zero : Array of bool, shape (H, W), optional
        Pixels read as 0 (bad pixels; not multiplied, so NaN there is harmless).

    Returns
    -------
    Array, shape (H, W), dtype of ``image``. Pixels within ``k // 2`` of the border are
    correlated with zeros beyond the image (flag them with :func:`edge_mask`).
    """
    height, width = image.shape
    n_q, k, _ = kernels.shape
    h = k // 2
    dtype = image.dtype
    tile = choose_tile(image.shape, k) if tile is None else tile
    valid = tile - 2 * h
    ny, nx = -(-height // valid), -(-width // valid)
    band = min(BAND_ROWS, ny)
    rows = band * valid  # output rows of one band
    n_bands = -(-ny // band)
    padded_k = jnp.zeros((n_q, tile, tile), dtype).at[:, :k, :k].set(kernels.astype(dtype))
    kspec = jnp.conj(jnp.fft.rfft2(jnp.roll(padded_k, (-h, -h), axis=(1, 2))))
    wy = jnp.pad(weights_y.astype(dtype), ((0, 0), (0, max(rows - height, 0))))
    wx = jnp.pad(weights_x.astype(dtype), ((0, 0), (0, nx * valid - width)))
    local = np.arange(band)[:, None] * valid + np.arange(tile)[None, :] - h  # (band, tile)
    cols = np.arange(nx)[:, None] * valid + np.arange(tile)[None, :] - h  # (nx, tile)
    col_in = jnp.asarray((cols >= 0) & (cols < width))[None, :, None, :]
    cols = np.clip(cols, 0, width - 1)[None, :, None, :]

    def one_band(first):  # output rows first ... first + rows - 1
        r = first + local
        inside = ((r >= 0) & (r < height))[:, None, :, None] & col_in
        r = jnp.clip(r, 0, height - 1)[:, None, :, None]
        if zero is not None:
            inside = inside & ~zero[r, cols]
        strip = jnp.where(inside, image[r, cols], 0.0)  # (band, nx, tile, tile)
        spectrum = jnp.fft.rfft2(strip)
        wy_band = jax.lax.dynamic_slice_in_dim(wy, first, rows, axis=1)
        out = jnp.zeros((rows, nx * valid), dtype)
        for q in range(n_q):  # reassembling each term, then weighting, measured fastest
            term = jnp.fft.irfft2(spectrum * kspec[q], s=(tile, tile))
            term = term[:, :, h : h + valid, h : h + valid].transpose(0, 2, 1, 3)
            out = out + wy_band[q][:, None] * wx[q] * term.reshape(rows, nx * valid)
        return out[:, :width]

    if n_bands == 1:
        return one_band(0)[:height]
    last = height - rows  # > 0: more than one band

    def step(i, out):
        first = jnp.minimum(i * rows, last)
        return jax.lax.dynamic_update_slice(out, one_band(first), (first, 0))

    return jax.lax.fori_loop(0, n_bands, step, jnp.zeros((height, width), dtype))


def fft_correlate(image, kernel, tile=None):
    """Constant-kernel correlation ``K ⊛ image`` (same shape; zero beyond the border)."""
    ones_y = jnp.ones((1, image.shape[0]), image.dtype)
    ones_x = jnp.ones((1, image.shape[1]), image.dtype)
    return correlate_terms(image, kernel[None], ones_y, ones_x, tile)


def spatial_factors(shape, order, bbox, kind, origin=(0.0, 0.0)):
    """1-D factors of every spatial term over the rows and columns of an image.

    Parameters
    ----------
    shape : tuple (H, W)
    order : int
    bbox : sequence of 4 floats
        Box normalising the spatial terms (in the frame of ``origin``).
    kind : {"chebyshev1", "polynomial"}
    origin : tuple of 2 floats
        Coordinates ``(x, y)`` of array pixel ``(0, 0)`` in the bbox frame.

    Returns
    -------
    fy : Array, shape (n_terms, H)
    fx : Array, shape (n_terms, W)
    """
    x = jnp.arange(shape[1]) + origin[0]
    y = jnp.arange(shape[0]) + origin[1]
    bx = basis_1d(normalized_coordinates(x, bbox[0], bbox[2]), order, kind)
    by = basis_1d(normalized_coordinates(y, bbox[1], bbox[3]), order, kind)
    a, b = term_powers(order)
    return by[b], bx[a]


def term_kernels(basis, kernel_coefficients):
    """One kernel image per spatial term, ``K_k = sum_i c_ik B_i``: shape (n_terms, k, k)."""
    return jnp.einsum("ik,ivu->kvu", kernel_coefficients, basis)


def dilate_mask(mask, kernel_size, max_size=None):
    """OR of every bit over the ``kernel_size`` square around each pixel (afw mask smearing).

    The window is that of ``reduce_window`` with ``"SAME"`` padding (zero beyond the image):
    ``(k - 1) // 2`` pixels before a pixel and ``k // 2`` after it, on each axis. Two separable
    passes of ``log2 k + 1`` shifted ORs each (windows of 1, 2, 4, ... pixels, then two
    overlapping ones) rather than XLA's CPU ``reduce_window``, which is 4-70x slower (jaxlib
    0.10, 4096² on 2 cores: ``k = 21`` 0.66 s for uint8 and 0.55 s for int32 against 0.04 and
    0.15 s; ``k = 49`` 2.8 and 2.5 s against 0.04 and 0.15 s).

    ``kernel_size`` may be traced (a side that follows the seeing, so that another seeing
    compiles nothing): the same two overlapping power-of-two windows, at traced offsets, with
    ``max_size`` (static, default :func:`window_bound` of nothing: 127) the largest side it
    may take; larger sides are clipped to it, and a side of 0 gives zeros.
    """
    if isinstance(kernel_size, (int, np.integer)):
        k = int(kernel_size)
        return _or_window(_or_window(mask, k, 1), k, 0)
    bound = window_bound(0) if max_size is None else int(max_size)
    k = jnp.clip(jnp.asarray(kernel_size, jnp.int32), 0, bound)
    return _or_window_traced(_or_window_traced(mask, k, 1, bound), k, 0, bound)


def window_bound(side, min_bits=7):
    """A static bound for a traced size: ``2^b - 1 >= side`` with ``b >= min_bits``, so that
    every size up to ``2^min_bits - 1`` (127) shares one program."""
    return (1 << max(min_bits, int(side).bit_length())) - 1


#: Odd sides that PSF-like arrays entering a compiled program are zero-padded to
#: (:func:`pad_to_bucket`): each side is a program shape, and the seeing varies from image to
#: image (a factor of two in seeing spans two or three buckets; steps of 1.5 at most, as a
#: padded kernel costs FFT work); beyond the last, a side is its own.
PSF_SIDES = (15, 23, 31, 47, 63, 95, 127, 191, 255)


def bucket_side(side):
    """The smallest of :data:`PSF_SIDES` at least ``side`` (``side`` itself beyond them)."""
    return next((s for s in PSF_SIDES if s >= side), int(side))


def pad_to_bucket(array):
    """An odd square array zero-padded on every side to :func:`bucket_side` of its side (same
    centre pixel; host-side NumPy)."""
    array = np.asarray(array)
    pad = (bucket_side(array.shape[0]) - array.shape[0]) // 2
    return np.pad(array, pad) if pad else array


def _or_window_traced(values, k, axis, bound):
    """:func:`_or_window` for a traced side ``0 <= k <= bound``: the two overlapping windows
    of ``2^m`` pixels (``m = floor(log2 k)``) at traced offsets.

    Branch-free: every level of ORs (windows of 1, 2, 4, ... pixels) is computed with static
    slices and level ``m`` selected. A ``lax.switch`` over ``m`` ran only its branch but
    compiled kernels for every branch (4096², 2 cores: 17-27 ms against 31 ms here; 1024²
    the same). Shifts by a traced width instead of the selection were 10x slower (unfused
    dynamic slices), and so was a sum of every power-of-two piece.
    """
    n = values.shape[axis]
    pad = [(0, 0)] * values.ndim
    pad[axis] = (bound, bound)  # the window of pixel 0 may begin ``bound`` before it
    level = jnp.pad(values, pad)
    length = level.shape[axis] - (bound + 1) // 2  # what every level keeps (static)
    m = 31 - jax.lax.clz(jnp.maximum(k, 1).astype(jnp.int32))
    chosen = jax.lax.slice_in_dim(level, 0, length, axis=axis)
    width = 1  # level[t]: OR of ``width`` pixels from t on
    for j in range(1, int(bound).bit_length()):
        size = level.shape[axis] - width
        level = jax.lax.slice_in_dim(level, 0, size, axis=axis) | jax.lax.slice_in_dim(
            level, width, width + size, axis=axis
        )
        width *= 2
        chosen = jnp.where(m == j, jax.lax.slice_in_dim(level, 0, length, axis=axis), chosen)
    start = bound - (k - 1) // 2  # where the window of pixel 0 begins in ``chosen``
    first = jax.lax.dynamic_slice_in_dim(chosen, start, n, axis)
    out = first | jax.lax.dynamic_slice_in_dim(chosen, start + k - (1 << m), n, axis)
    return jnp.where(k > 0, out, jnp.zeros((), values.dtype))


def _or_window(values, k, axis):
    """OR over the ``"SAME"`` window of ``k`` pixels along ``axis`` (see :func:`dilate_mask`)."""
    if k <= 1:
        return values
    n = values.shape[axis]
    pad = [(0, 0)] * values.ndim
    pad[axis] = ((k - 1) // 2, k // 2)
    window = jnp.pad(values, pad)

    def cut(a, start, length):
        return jax.lax.slice_in_dim(a, start, start + length, axis=axis)

    width = 1
    while 2 * width <= k:  # window[i] = OR of `width` pixels from i on
        length = window.shape[axis] - width
        window = cut(window, 0, length) | cut(window, width, length)
        width *= 2
    return cut(window, 0, n) | cut(window, k - width, n)


def flag_around(mask, sources, planes, side, flag, max_size=None):
    """``mask`` with ``flag`` (a bit) set on the ``side`` square around every pixel of ``sources``
    (an int mask) that carries one of the bits ``planes`` (``side`` traced or not, see
    :func:`dilate_mask`)."""
    hit = dilate_mask(((sources & planes) != 0).astype(jnp.uint8), side, max_size) != 0
    return mask | jnp.where(hit, flag, 0).astype(mask.dtype)


def edge_mask(shape, kernel_size):
    """True on the ``kernel_size // 2`` border that a kernel cannot be fully applied to.

    Broadcast from a row and a column inside the program: a whole-image NumPy mask became a
    constant of the compiled program (16 MB of its 20 MB at 4096², which every process then
    loaded).
    """
    h = kernel_size // 2
    yy = np.arange(shape[0])
    xx = np.arange(shape[1])
    rows = (yy < h) | (yy >= shape[0] - h)
    cols = (xx < h) | (xx >= shape[1] - h)
    return jnp.asarray(rows)[:, None] | jnp.asarray(cols)[None, :]


def apply_kernel(masked, kernels, bbox, order, kind, origin=(0.0, 0.0), tile=None, preserve_bits=0):
    """Convolve a masked image with a spatially varying kernel (afw orientation).

    Parameters
    ----------
    masked : MaskedImage
        Image and variance (float), mask (int32).
    kernels : Array, shape (n_terms, k, k)
        Per-term kernels from :func:`term_kernels`.
    bbox, order, kind, origin
        The spatial model, as in :func:`spatial_factors`.
    tile : int, optional
        FFT tile size.
    preserve_bits : int
        Mask bits copied as they are instead of being smeared over the kernel footprint
        (ip_diffim's preserved template planes). The kernel footprints of pixels with such a
        bit among :data:`SMEARED_TO_SUSPECT` get ``SUSPECT`` (a jaxdiffim addition: ip_diffim
        leaves what the kernel spreads from them unflagged).

    Returns
    -------
    MaskedImage
        Finite everywhere. The border gets ``EDGE`` and keeps the input values; footprints of
        non-finite input pixels get ``NO_DATA``.
    """
    image, variance, mask = masked
    k = kernels.shape[-1]
    bad = ~(jnp.isfinite(image) & jnp.isfinite(variance))
    kept = mask & preserve_bits
    mask = jnp.where(bad, (mask & ~preserve_bits) | bit("NO_DATA"), mask & ~preserve_bits)
    fy, fx = spatial_factors(image.shape, order, bbox, kind, origin)
    out = correlate_terms(image, kernels, fy, fx, tile, zero=bad)  # bad pixels read as 0
    n = kernels.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    products = jnp.stack([kernels[i] * kernels[j] for i, j in pairs])
    scale = jnp.asarray([1.0 if i == j else 2.0 for i, j in pairs], image.dtype)
    wy = jnp.stack([fy[i] * fy[j] for i, j in pairs]) * scale[:, None]
    wx = jnp.stack([fx[i] * fx[j] for i, j in pairs])
    out_var = correlate_terms(variance, products, wy, wx, tile, zero=bad)
    edge = edge_mask(image.shape, k)
    out = jnp.where(edge, jnp.where(bad, 0.0, image), out)
    out_var = jnp.where(edge, jnp.where(bad, 0.0, variance), out_var)
    out_mask = dilate_mask(mask, k) | kept | jnp.where(edge, bit("EDGE"), 0).astype(mask.dtype)
    # what the kernel spreads from preserved bad pixels (their values, or the clipped core of a
    # saturated template star) is not flagged by those planes: flag it SUSPECT
    spread = dilate_mask(((kept & bits(SMEARED_TO_SUSPECT)) != 0).astype(jnp.uint8), k) != 0
    out_mask = out_mask | jnp.where(spread, bit("SUSPECT"), 0).astype(mask.dtype)
    return MaskedImage(out, out_var, out_mask)
