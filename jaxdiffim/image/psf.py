"""PSF models with afw's interface: Gaussian, double Gaussian, one image, a grid of images.

Every model has ``computeKernelImage(x, y)`` (unit-sum, odd-sized image centred on its central
pixel), ``computeImage(x, y)`` (the same PSF shifted to the sub-pixel position, as an
:class:`~jaxdiffim.image.exposure.Image` whose xy0 places it in the parent frame),
``getAveragePosition()``, ``computeShape(x, y)`` (adaptive second moments) and
``computeFwhm(x, y)`` (determinant-radius FWHM, ip_diffim's ``getPsfFwhm``). Positions are
parent pixel coordinates; ``x`` may also be an ``(x, y)`` pair. The models are immutable.
"""

import math
from typing import NamedTuple

import numpy as np

from ..algorithms.difference_psf import DifferencePsf
from ..algorithms.psf_estimate import fourier_shift
from ..algorithms.psf_shape import evaluate_psf, psf_moments
from ..core.basis import FWHM_PER_SIGMA
from ..core.model_psf import recentre
from ..errors import InvalidInputError
from .exposure import Image

__all__ = [
    "FilteredPsf",
    "Shape",
    "GaussianPsf",
    "SingleGaussianPsf",
    "DoubleGaussianPsf",
    "ImagePsf",
    "GridImagePsf",
]


class Shape(NamedTuple):
    """Second moments of a PSF (pixels²), with afw's radius accessors."""

    ixx: float
    iyy: float
    ixy: float

    def getDeterminantRadius(self):  # noqa: N802 - afw name
        return (self.ixx * self.iyy - self.ixy**2) ** 0.25

    def getTraceRadius(self):  # noqa: N802
        return math.sqrt(0.5 * (self.ixx + self.iyy))


def _xy(x, y):
    if y is None:
        if x is None:
            return None
        x, y = x
    return float(x), float(y)


def _check_stamp(image, what):
    """A unit-sum float64 copy of a PSF stamp, checked as every PSF image is
    (:func:`~jaxdiffim.algorithms.psf_shape.evaluate_psf`: finite, a positive sum, even sides
    padded in front), and at least 3x3."""
    img = np.asarray(image)
    if img.ndim != 2 or min(img.shape) < 3:
        raise InvalidInputError(f"{what} must be a 2-D image at least 3x3, got {img.shape}.")
    try:
        img = evaluate_psf(img, 0.0, 0.0)
    except InvalidInputError as err:
        raise InvalidInputError(f"{what}: {err}") from None
    return img / img.sum()


class _Psf:
    """Shared behaviour; subclasses define ``_kernel(x, y)`` and ``_average``."""

    _average = (0.0, 0.0)

    def computeKernelImage(self, x=None, y=None):  # noqa: N802
        """Unit-sum kernel image at ``(x, y)`` (default: the average position), float64."""
        pos = _xy(x, y) or self.getAveragePosition()
        return self._kernel(*pos)

    def computeImage(self, x=None, y=None):  # noqa: N802
        """The PSF centred on the sub-pixel position ``(x, y)``, as an :class:`Image`."""
        px, py = _xy(x, y) or self.getAveragePosition()
        k = self._kernel(px, py)
        ix, iy = int(np.floor(px + 0.5)), int(np.floor(py + 0.5))
        shifted = fourier_shift(k, px - ix, py - iy)
        cy, cx = (k.shape[0] - 1) // 2, (k.shape[1] - 1) // 2
        return Image(shifted, (ix - cx, iy - cy), dtype=np.float64)

    def getAveragePosition(self):  # noqa: N802
        return self._average

    def nodes(self):
        """``(x_nodes, y_nodes)`` (parent pixels) where a varying model is sampled, or ``None``
        for a model without a grid (files keep the grid's images: :mod:`jaxdiffim.io.fits`)."""
        return None

    def computeShape(self, x=None, y=None):  # noqa: N802
        """Adaptive second moments at ``(x, y)``
        (:func:`jaxdiffim.algorithms.psf_shape.psf_moments`)."""
        m = psf_moments(self.computeKernelImage(x, y))
        return Shape(m.ixx, m.iyy, m.ixy)

    def computeFwhm(self, x=None, y=None):  # noqa: N802
        """Determinant-radius FWHM in pixels at ``(x, y)``."""
        return FWHM_PER_SIGMA * self.computeShape(x, y).getDeterminantRadius()

    def __call__(self, x, y):
        """Kernel image at parent position ``(x, y)``.

        The core calls PSFs with *array* coordinates; for an exposure with ``xy0 != (0, 0)``
        pass :meth:`Exposure.psf_callable` to the core instead of the model itself.
        """
        return self.computeKernelImage(x, y)

    def getDimensions(self):  # noqa: N802
        """``(width, height)`` of the kernel image at the average position."""
        h, w = self.computeKernelImage().shape
        return w, h


def _gaussian(width, height, sigma, sigma2=None, b=0.0):
    u = np.arange(width) - (width - 1) // 2
    v = np.arange(height) - (height - 1) // 2
    r2 = u[None, :] ** 2 + v[:, None] ** 2
    img = np.exp(-0.5 * r2 / sigma**2)
    if b:
        img = img + b * np.exp(-0.5 * r2 / sigma2**2)
    return img / img.sum()


def _check_dims(width, height):
    if width < 3 or height < 3 or width % 2 == 0 or height % 2 == 0:
        raise InvalidInputError(f"PSF dimensions must be odd and >= 3, got {width}x{height}.")


class GaussianPsf(_Psf):
    """Circular Gaussian PSF (afw ``GaussianPsf`` / meas_algorithms ``SingleGaussianPsf``).

    Parameters
    ----------
    width, height : int
        Odd kernel-image dimensions in pixels.
    sigma : float
        Gaussian sigma in pixels.
    """

    def __init__(self, width, height, sigma):
        _check_dims(width, height)
        if not (np.isfinite(sigma) and sigma > 0):
            raise InvalidInputError(f"PSF sigma must be finite and positive, got {sigma}.")
        self.width, self.height, self.sigma = int(width), int(height), float(sigma)
        self._image = _gaussian(self.width, self.height, self.sigma)

    def _kernel(self, x, y):
        return self._image.copy()

    def getSigma(self):  # noqa: N802
        return self.sigma

    def resized(self, width, height):
        """The same PSF on a ``width`` x ``height`` kernel image."""
        return GaussianPsf(width, height, self.sigma)

    def __repr__(self):
        return f"GaussianPsf({self.width}, {self.height}, sigma={self.sigma})"


SingleGaussianPsf = GaussianPsf


class DoubleGaussianPsf(_Psf):
    """Sum of two concentric Gaussians (meas_algorithms ``DoubleGaussianPsf``).

    ``exp(-r²/2σ1²) + b exp(-r²/2σ2²)``, normalised: ``b`` is the ratio of the two peak heights.
    ``sigma2 = 0`` means ``2 sigma1``.
    """

    def __init__(self, width, height, sigma1, sigma2=0.0, b=0.0):
        _check_dims(width, height)
        sigma2 = 2.0 * sigma1 if sigma2 == 0 else sigma2
        if not (sigma1 > 0 and sigma2 > 0 and b >= 0):
            raise InvalidInputError(
                "DoubleGaussianPsf needs sigma1, sigma2 > 0 and b >= 0; "
                f"got {sigma1}, {sigma2}, {b}."
            )
        self.width, self.height = int(width), int(height)
        self.sigma1, self.sigma2, self.b = float(sigma1), float(sigma2), float(b)
        self._image = _gaussian(self.width, self.height, self.sigma1, self.sigma2, self.b)

    def _kernel(self, x, y):
        return self._image.copy()

    def getSigma1(self):  # noqa: N802
        return self.sigma1

    def getSigma2(self):  # noqa: N802
        return self.sigma2

    def getB(self):  # noqa: N802
        return self.b

    def resized(self, width, height):
        """The same PSF on a ``width`` x ``height`` kernel image."""
        return DoubleGaussianPsf(width, height, self.sigma1, self.sigma2, self.b)

    def __repr__(self):
        return (
            f"DoubleGaussianPsf({self.width}, {self.height}, sigma1={self.sigma1}, "
            f"sigma2={self.sigma2}, b={self.b})"
        )


class ImagePsf(_Psf):
    """A constant PSF from one image (meas_algorithms ``KernelPsf`` of a ``FixedKernel``).

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        The PSF, centred on pixel ``((ny-1)//2, (nx-1)//2)``; normalised to unit sum; an even
        side is padded by one pixel.
    average_position : tuple, optional
        Returned by ``getAveragePosition``.
    """

    def __init__(self, image, average_position=(0.0, 0.0)):
        self._image = _check_stamp(image, "PSF image")
        self._average = tuple(float(v) for v in average_position)

    def _kernel(self, x, y):
        return self._image.copy()

    def resized(self, width, height):
        """The image zero-padded or cropped (about its centre) to ``width`` x ``height``."""
        _check_dims(width, height)
        return ImagePsf(recentre(self._image, width, height), self._average)

    def __repr__(self):
        return f"ImagePsf(shape={self._image.shape})"


class GridImagePsf(_Psf):
    """A spatially varying PSF: images on a grid, bilinearly interpolated (and renormalised).

    Parameters
    ----------
    images : array_like, shape (n_y, n_x, ny, nx)
        PSF images at the grid nodes.
    x_nodes : array_like, shape (n_x,)
    y_nodes : array_like, shape (n_y,)
        Increasing node positions (parent pixels); outside the grid the nearest edge is used.
    """

    def __init__(self, images, x_nodes, y_nodes):
        imgs = np.asarray(images, float)
        xs, ys = np.asarray(x_nodes, float), np.asarray(y_nodes, float)
        if imgs.ndim != 4 or imgs.shape[:2] != (ys.size, xs.size):
            raise InvalidInputError(
                f"images must have shape (len(y_nodes), len(x_nodes), ny, nx) = "
                f"({ys.size}, {xs.size}, ny, nx), got {imgs.shape}."
            )
        if np.any(np.diff(xs) <= 0) or np.any(np.diff(ys) <= 0):
            raise InvalidInputError("x_nodes and y_nodes must be strictly increasing.")
        self._images = np.stack(
            [np.stack([_check_stamp(im, "PSF grid image") for im in row]) for row in imgs]
        )
        self.x_nodes, self.y_nodes = xs, ys
        self._average = (float(xs.mean()), float(ys.mean()))

    @staticmethod
    def _weights(nodes, v):
        if nodes.size == 1:
            return 0, 0, 0.0
        v = min(max(v, nodes[0]), nodes[-1])
        i = int(min(np.searchsorted(nodes, v, side="right") - 1, nodes.size - 2))
        t = (v - nodes[i]) / (nodes[i + 1] - nodes[i])
        return i, i + 1, t

    def _kernel(self, x, y):
        i0, i1, tx = self._weights(self.x_nodes, x)
        j0, j1, ty = self._weights(self.y_nodes, y)
        g = self._images
        img = (1 - ty) * ((1 - tx) * g[j0, i0] + tx * g[j0, i1]) + ty * (
            (1 - tx) * g[j1, i0] + tx * g[j1, i1]
        )
        return img / img.sum()

    def nodes(self):
        return self.x_nodes, self.y_nodes

    def resized(self, width, height):
        """Every node image zero-padded or cropped to ``width`` x ``height``."""
        _check_dims(width, height)
        imgs = np.array([[recentre(im, width, height) for im in row] for row in self._images])
        return GridImagePsf(imgs, self.x_nodes, self.y_nodes)

    def __repr__(self):
        n = f"{self.y_nodes.size}x{self.x_nodes.size}"
        return f"GridImagePsf(nodes={n}, shape={self._images.shape[2:]})"


class FilteredPsf(_Psf):
    """A PSF model seen through the subtraction: the PSF of a (decorrelated) difference image.

    ``computeKernelImage(x, y)`` (parent coordinates) is the science PSF through the matching
    kernel (convolveScience) and the decorrelation filter
    (:class:`jaxdiffim.algorithms.difference_psf.DifferencePsf`).

    Parameters
    ----------
    base : PSF model
        The science exposure's PSF.
    difference_psf : DifferencePsf
        The subtraction result's ``difference_psf`` (array coordinates of an exposure whose
        parent pixel ``xy0`` is array pixel ``(0, 0)``).
    xy0 : tuple of 2 ints
    """

    def __init__(self, base, difference_psf, xy0=(0, 0)):
        self.base = base
        self._xy0 = tuple(xy0)
        x0, y0 = xy0
        self._filtered = DifferencePsf(
            base.computeKernelImage,
            difference_psf.filter,
            difference_psf.solution,
            difference_psf.config,
            (-x0, -y0),
        )
        self._average = tuple(base.getAveragePosition())

    def rebased(self, base):
        """The same filter on the template's PSF ``base``, without the kernel: in convolveScience
        mode the template's PSF is what the kernel matched the science PSF to, and where both
        PSFs are estimates from the stars the deeper image's is the better one
        (:func:`jaxdiffim.cli.subtract.subtract_files`). ip_diffim writes the unconvolved image's
        PSF in that mode too (without the decorrelation filter).
        """
        return FilteredPsf(base, DifferencePsf(None, self._filtered.filter), self._xy0)

    def _kernel(self, x, y):
        return self._filtered(x, y)

    def nodes(self):
        return self.base.nodes()

    def __repr__(self):
        return f"FilteredPsf({self.base!r}, filter shape={self._filtered.filter.shape})"
