"""Decorrelation afterburner for difference and score images (DMTN-021, DMTN-179).

Port of ip_diffim's ``DecorrelateALKernelTask`` (``imageDecorrelation.py``; ip_diffim.md §2.9).
Convolving one image with the matching kernel ``K`` correlates the noise of the difference; the
post-filter

    φ̂(k) = sqrt((σ_u² + σ_c² κ²) / (σ_u² + σ_c² |K̂(k)|²)),   κ = Σ K,

applied to the difference whitens it again while preserving fluxes (φ̂(0) = 1). ``σ_u²`` is the
mean variance of the image that was *not* convolved and ``σ_c²`` that of the image that was
(template and science in ``convolveTemplate`` mode, swapped in ``convolveScience`` mode). For a
score image (science preconvolved with its unit-sum PSF ``P``) the filter is ip_diffim's

    ĉ(k) = (σ_S² + σ_T² κ²) / (σ_S² + σ_T² |K̂|² / |P̂|²)   (no square root, |P̂|² floored).

The new variance plane is, by default, ``w_u V_u + w_c V_c`` with ``w = Σ_x c(x)²`` (Parseval) for
the filters ``c_u = φ`` (score: ``P ∘ ĉ``) seen by the unconvolved image and ``c_c = K ∘ φ``
(score: ``K ∘ ĉ``) seen by the convolved one, both as correlation kernels (afw orientation);
``complete=True`` convolves the variance planes with
``c_u²`` and ``c_c²`` instead (``completeVarPlanePropagation``). ``V_u`` and ``V_c`` are the
*input* variance planes of the two images (before any convolution).

Spatially varying decorrelation (``spatiallyVarying=True``), which ip_diffim could not run (its
map-reduce test is skipped, DM-21868), is done here by evaluating the kernel and its filter at a
grid of nodes and blending the filtered images with bilinear weights: since filtering is linear,
``Σ_n w_n(x) (φ_n ⊛ D)(x)`` is the image filtered with the bilinearly interpolated filter. The
node filters are truncated in real space to ``2 k + 1`` pixels and applied with the same tiled
overlap-save machinery as the kernel itself.

Deliberate differences: non-finite pixels are replaced by the mean of the finite ones before the
FFT and restored afterwards, as in ip_diffim, but the FFT is padded by twice the filter support
(ip_diffim: once) to keep circular wrap-around off the image.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .convolve import MaskedImage, correlate_terms, fft_correlate, term_kernels
from .masks import bits
from .preconvolution import fill_masked
from .spatial import spatial_terms
from .stats import clipped_mean_std

__all__ = [
    "DECORRELATION_IGNORE_PLANES",
    "mean_variance",
    "decorrelation_spectrum",
    "decorrelate",
    "decorrelate_spatially",
    "fill_bad_pixels",
    "node_grid",
    "psf_filter",
]

#: Planes ignored when estimating the mean input variances (ip_diffim ``ignoreMaskPlanes``).
DECORRELATION_IGNORE_PLANES = (
    "INTRP",
    "EDGE",
    "DETECTED",
    "SAT",
    "CR",
    "BAD",
    "NO_DATA",
    "DETECTED_NEGATIVE",
)

_TINY = 1000.0 * float(np.finfo(np.float32).tiny)  # ip_diffim's floor of |P̂|²


def mean_variance(variance, mask, ignore_planes=DECORRELATION_IGNORE_PLANES, max_pixels=1 << 20):
    """afw MEANCLIP (3σ, 3 passes) of a variance plane, ignoring masked and non-finite pixels.

    Parameters
    ----------
    variance : array_like, shape (H, W)
    mask : array_like of int, shape (H, W)
    ignore_planes : sequence of str
    max_pixels : int
        Above this many pixels a regular subsample (every n-th pixel) is used; the clipped mean
        of a variance plane is a smooth statistic and this keeps the sort cheap.

    Returns
    -------
    Array, shape (); NaN when no pixel is usable.
    """
    return _mean_variance(jnp.asarray(variance), jnp.asarray(mask), bits(ignore_planes), max_pixels)


@functools.partial(jax.jit, static_argnames=("max_pixels",))
def _mean_variance(variance, mask, ignore_bits, max_pixels):
    variance, mask = jnp.ravel(variance), jnp.ravel(mask)
    step = max(1, -(-variance.size // max_pixels))
    variance, mask = variance[::step], mask[::step]
    good = ((mask & ignore_bits) == 0) & jnp.isfinite(variance)
    return clipped_mean_std(variance, good, bisect=True)[0]


def fill_bad_pixels(difference, bad_planes=("NO_DATA", "BAD", "SAT", "EDGE")):
    """Set finite pixels of ``bad_planes`` to the median of the good ones, before filtering.

    A bad column or a saturated core is garbage of arbitrary size; the decorrelation filter
    (about the kernel's width) would spread it over its neighbours, which are good pixels.
    ip_diffim filters the garbage as it is (a deliberate difference). Non-finite pixels are left
    as they are (the filter skips them). The mask is unchanged.

    Parameters
    ----------
    difference : MaskedImage, shape (H, W)
    bad_planes : sequence of str

    Returns
    -------
    MaskedImage
    """
    image = difference.image
    filled = fill_masked(image, difference.mask, bits(bad_planes))
    return MaskedImage(
        jnp.where(jnp.isfinite(image), filled, image), difference.variance, difference.mask
    )


def _fast_size(n):
    """Smallest even 5-smooth length >= ``n`` (a cheap real FFT; what ``scipy.fft``'s
    ``next_fast_len(n, real=True)`` gives, made even, without importing scipy)."""
    size = max(2, int(n) + int(n) % 2)
    while True:
        rest = size
        for factor in (2, 3, 5):
            while rest % factor == 0:
                rest //= factor
        if rest == 1:
            return size
        size += 2


def _origin_padded(kernel, shape):
    """Zero-pad ``kernel`` to ``shape`` with its centre pixel moved to index (0, 0)."""
    k0, k1 = kernel.shape
    out = jnp.zeros(shape, kernel.dtype).at[:k0, :k1].set(kernel)
    return jnp.roll(out, (-(k0 // 2), -(k1 // 2)), axis=(0, 1))


def decorrelation_spectrum(kernel, var_unconvolved, var_convolved, shape, preconvolution=None):
    """The decorrelation filter and the two filters the input images see, on an rfft grid.

    Parameters
    ----------
    kernel : Array, shape (k, k)
        Matching kernel image (not normalised; its sum is κ).
    var_unconvolved, var_convolved : float
        Mean variances σ_u² and σ_c².
    shape : tuple (N0, N1)
        FFT grid.
    preconvolution : Array, shape (p, p), optional
        Unit-sum preconvolution kernel ``P`` (score mode).

    Returns
    -------
    filt, c_unconvolved, c_convolved : Array, shape (N0, N1 // 2 + 1)
        ``φ̂`` (score: ``ĉ``), and the spectra applied to the unconvolved and the convolved
        input image.
    """
    khat = jnp.fft.rfft2(_origin_padded(kernel, shape))
    kappa = jnp.sum(kernel)
    k2 = jnp.abs(khat) ** 2
    num = var_unconvolved + var_convolved * kappa**2
    if preconvolution is None:
        filt = jnp.sqrt(num / (var_unconvolved + var_convolved * k2))
        return filt, filt, khat * filt
    phat = jnp.fft.rfft2(_origin_padded(preconvolution, shape))
    p2 = jnp.maximum(jnp.abs(phat) ** 2, _TINY)
    filt = num / (var_unconvolved + var_convolved * k2 / p2)
    return filt, phat * filt, khat * filt


def psf_filter(kernel, sigma2_unconvolved, sigma2_convolved, preconvolution=None, *, size):
    """The decorrelation filter in real space: what the decorrelated difference does to a
    point source of the image that was not convolved (jittable; ``size`` static).

    ``c_u`` of :func:`decorrelation_spectrum`: the decorrelation filter (for a score image
    the preconvolution times the score filter). A source of the convolved image goes through
    the matching kernel first (:class:`jaxdiffim.algorithms.difference_psf.DifferencePsf`).

    Parameters
    ----------
    kernel : Array, shape (k, k)
        Matching kernel (at the centre of the image), unnormalised.
    sigma2_unconvolved, sigma2_convolved : float
        Mean variances.
    preconvolution : Array, shape (p, p), optional
    size : int
        Odd side of the result.

    Returns
    -------
    Array, shape (size, size)
        Unit sum, centred, a correlation kernel (afw orientation).
    """
    side = _fast_size(4 * size)
    shape = (side, side)
    _, c_u, _ = decorrelation_spectrum(
        kernel, sigma2_unconvolved, sigma2_convolved, shape, preconvolution
    )
    filt = _real_space(c_u, shape, size)
    return filt / jnp.sum(filt)


def _fill_nonfinite(image):
    finite = jnp.isfinite(image)
    mean = jnp.sum(jnp.where(finite, image, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
    return jnp.where(finite, image, mean), finite


def _filter_image(image, spectrum, shape):
    """Apply a zero-phase-or-not filter given on the rfft grid of ``shape`` to ``image``."""
    h, w = image.shape
    padded = jnp.zeros(shape, image.dtype).at[:h, :w].set(image)
    out = jnp.fft.irfft2(jnp.fft.rfft2(padded) * spectrum, s=shape)
    return out[:h, :w].astype(image.dtype)


def _real_space(spectrum, shape, size):
    """Centred ``size`` × ``size`` real-space kernel of a spectrum on the rfft grid of ``shape``."""
    full = jnp.fft.irfft2(spectrum, s=shape)
    half = size // 2
    return jnp.roll(full, (half, half), axis=(0, 1))[:size, :size]


def _sum_of_squares(spectrum, shape):
    """``Σ irfft2(spectrum, shape)²`` by Parseval's theorem, without the inverse transform
    (``shape[1]`` even: the first and last rfft columns count once, the others twice)."""
    power = jnp.abs(spectrum) ** 2
    twice = jnp.sum(power[:, 1:-1])
    once = jnp.sum(power[:, 0]) + jnp.sum(power[:, -1])
    return (once + 2.0 * twice) / (shape[0] * shape[1])


def _fft_shape(image_shape, support):
    return tuple(_fast_size(n + 2 * support) for n in image_shape)


@functools.partial(jax.jit, static_argnames=("complete",))
def decorrelate(
    difference,
    kernel,
    variance_unconvolved,
    variance_convolved,
    sigma2_unconvolved,
    sigma2_convolved,
    preconvolution=None,
    variance_scale=1.0,
    *,
    complete=False,
):
    """Whiten a difference (or score) image with one kernel (ip_diffim ``DecorrelateALKernelTask``).

    Parameters
    ----------
    difference : MaskedImage
        Difference image (its variance plane is replaced) and mask (kept), shape (H, W).
    kernel : Array, shape (k, k)
        Matching kernel at the centre of the image, unnormalised.
    variance_unconvolved, variance_convolved : Array, shape (H, W)
        Input variance planes of the image that was not convolved and of the one that was.
    sigma2_unconvolved, sigma2_convolved : float
        Their mean variances (:func:`mean_variance`).
    preconvolution : Array, shape (p, p), optional
        Unit-sum preconvolution kernel: decorrelate a score image.
    variance_scale : float
        Factor on the new variance plane (``1 / κ²`` in convolveScience mode).
    complete : bool
        Convolve the variance planes with the squared filters (``completeVarPlanePropagation``).

    Returns
    -------
    MaskedImage
        Decorrelated image (non-finite input pixels stay non-finite), new variance, same mask.
    """
    image = difference.image
    dtype = image.dtype
    support = max(kernel.shape[0], 0 if preconvolution is None else preconvolution.shape[0])
    shape = _fft_shape(image.shape, support)
    kernel = kernel.astype(dtype)
    if preconvolution is not None:
        preconvolution = preconvolution.astype(dtype)
    filt, c_u, c_c = decorrelation_spectrum(
        kernel, sigma2_unconvolved, sigma2_convolved, shape, preconvolution
    )
    filled, finite = _fill_nonfinite(image)
    out = jnp.where(finite, _filter_image(filled, filt, shape), image)
    if complete:
        size = 2 * support + 1
        cu2 = _real_space(c_u, shape, size) ** 2
        cc2 = _real_space(c_c, shape, size) ** 2
        var = _convolve_variance(variance_unconvolved, cu2) + _convolve_variance(
            variance_convolved, cc2
        )
    else:
        w_u, w_c = _sum_of_squares(c_u, shape), _sum_of_squares(c_c, shape)
        var = w_u * variance_unconvolved + w_c * variance_convolved
    var = (var * variance_scale).astype(dtype)
    return MaskedImage(out, var, difference.mask)


def _convolve_variance(variance, kernel2):
    """``kernel2 ⊛ variance`` with non-finite variance replaced by the mean and restored."""
    filled, finite = _fill_nonfinite(variance)
    out = fft_correlate(filled, kernel2.astype(variance.dtype))
    return jnp.where(finite, out, variance)


def node_grid(bbox, n_nodes):
    """Node positions and bilinear weights of a regular ``n × n`` node grid over ``bbox``.

    Nodes sit at the centres of ``n × n`` equal cells of ``bbox = (x_min, y_min, x_max, y_max)``
    (inclusive pixel box, array coordinates); weights are 1-D hat functions between neighbouring
    node centres, constant beyond the outermost nodes, so they sum to 1 everywhere.

    Returns
    -------
    xs, ys : Array, shape (n,)
        Node coordinates along x and y.
    """
    bbox = jnp.asarray(bbox, jnp.float32)
    cells = (jnp.arange(n_nodes) + 0.5) / n_nodes
    xs = bbox[0] - 0.5 + cells * (bbox[2] - bbox[0] + 1.0)
    ys = bbox[1] - 0.5 + cells * (bbox[3] - bbox[1] + 1.0)
    return xs, ys


def _hat_weights(coord, nodes):
    """Piecewise-linear partition of unity over ``nodes`` (clamped outside): shape (n, len)."""
    n = nodes.shape[0]
    if n == 1:
        return jnp.ones((1, coord.shape[0]), coord.dtype)
    t = jnp.interp(coord, nodes, jnp.arange(n, dtype=coord.dtype))
    return jnp.maximum(0.0, 1.0 - jnp.abs(t[None, :] - jnp.arange(n, dtype=coord.dtype)[:, None]))


@functools.partial(jax.jit, static_argnames=("n_nodes", "complete"))
def decorrelate_spatially(
    difference,
    solution,
    variance_unconvolved,
    variance_convolved,
    sigma2_unconvolved,
    sigma2_convolved,
    preconvolution=None,
    variance_scale=1.0,
    *,
    config,
    n_nodes=4,
    complete=False,
):
    """Decorrelate with a filter that follows the spatially varying kernel.

    The kernel of ``solution`` is evaluated at ``n_nodes × n_nodes`` node positions
    (:func:`node_grid` over the solution's bbox); each node's filter is computed as in
    :func:`decorrelate` and truncated to ``2 k + 1`` pixels; the filtered images (and the new
    variance planes) are blended with bilinear weights.

    Parameters
    ----------
    difference : MaskedImage, shape (H, W), on the grid the solution's bbox refers to.
    solution : KernelSolution
    variance_unconvolved, variance_convolved, sigma2_unconvolved, sigma2_convolved,
    preconvolution, variance_scale, complete
        As in :func:`decorrelate`.
    config : KernelFitConfig (static)
    n_nodes : int (static)
        Nodes per axis; 1 reproduces a single (truncated) filter at the bbox centre.

    Returns
    -------
    MaskedImage
    """
    image = difference.image
    dtype = image.dtype
    k = solution.basis.shape[-1]
    p = 0 if preconvolution is None else preconvolution.shape[0]
    size = 2 * max(k, p) + 1
    shape = (_fast_size(4 * size), _fast_size(4 * size))
    bbox = solution.bbox.astype(jnp.float32)
    xs, ys = node_grid(bbox, n_nodes)
    gx, gy = jnp.meshgrid(xs, ys)  # (n, n): node (i along y, j along x)
    terms = spatial_terms(
        gx.ravel(), gy.ravel(), config.spatial_kernel_order, bbox, config.spatial_model_type
    ).astype(dtype)
    per_term = term_kernels(solution.basis, solution.kernel_coefficients).astype(dtype)
    kernels = jnp.einsum("nk,kvu->nvu", terms, per_term)
    if preconvolution is not None:
        preconvolution = preconvolution.astype(dtype)

    def node_filters(kern):
        filt, c_u, c_c = decorrelation_spectrum(
            kern, sigma2_unconvolved, sigma2_convolved, shape, preconvolution
        )
        return (
            _real_space(filt, shape, size).astype(dtype),
            _real_space(c_u, shape, size).astype(dtype),
            _real_space(c_c, shape, size).astype(dtype),
        )

    phi, cu, cc = jax.vmap(node_filters)(kernels)  # (n², size, size) each
    hy = _hat_weights(jnp.arange(image.shape[0], dtype=dtype), ys.astype(dtype))
    hx = _hat_weights(jnp.arange(image.shape[1], dtype=dtype), xs.astype(dtype))
    wy = jnp.repeat(hy, n_nodes, axis=0)  # node index i * n + j -> hy[i]
    wx = jnp.tile(hx, (n_nodes, 1))  # -> hx[j]
    filled, finite = _fill_nonfinite(image)
    out = correlate_terms(filled, phi, wy, wx)
    out = jnp.where(finite, out, image)
    if complete:
        vu, fin_u = _fill_nonfinite(variance_unconvolved)
        vc, fin_c = _fill_nonfinite(variance_convolved)
        var = correlate_terms(vu, cu**2, wy, wx) + correlate_terms(vc, cc**2, wy, wx)
        var = jnp.where(fin_u & fin_c, var, variance_unconvolved + variance_convolved)
    else:
        w_u = jnp.sum(cu**2, axis=(1, 2))
        w_c = jnp.sum(cc**2, axis=(1, 2))
        a = jnp.einsum("n,ny,nx->yx", w_u, wy, wx)
        b = jnp.einsum("n,ny,nx->yx", w_c, wy, wx)
        var = a * variance_unconvolved + b * variance_convolved
    var = (var * variance_scale).astype(dtype)
    return MaskedImage(out, var, difference.mask)
