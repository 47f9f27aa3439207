"""Result objects of the Tasks: the spatially varying matching kernel and the background model.

Both are evaluated at parent pixel coordinates ``(x, y)`` (those of the science exposure) and
can be rendered as images, like afw's ``LinearCombinationKernel`` and ``Function2D``.
"""

import numpy as np

from ..core.spatial import spatial_terms
from ..core.subtract import background_image, kernel_image_host

__all__ = ["MatchingKernel", "BackgroundModel"]


class MatchingKernel:
    """The fitted PSF-matching kernel ``K(x, y)``.

    Parameters
    ----------
    solution : KernelSolution
    config : KernelFitConfig
    xy0 : tuple of int
        Parent coordinates of the array pixel ``[0, 0]`` the solution refers to.
    """

    def __init__(self, solution, config, xy0=(0, 0)):
        self.solution, self.config, self.xy0 = solution, config, tuple(xy0)

    def getDimensions(self):  # noqa: N802 - afw name
        k = self.config.kernel_size
        return k, k

    def getWidth(self):  # noqa: N802
        return self.config.kernel_size

    def getHeight(self):  # noqa: N802
        return self.config.kernel_size

    def getCtr(self):  # noqa: N802
        """Central pixel ``(x, y)`` of the kernel image (afw's ``(width - 1) // 2``)."""
        c = (self.config.kernel_size - 1) // 2
        return c, c

    def getNKernelParameters(self):  # noqa: N802
        return int(self.config.n_basis)

    def getNSpatialParameters(self):  # noqa: N802
        return int(self.config.n_kernel_terms)

    def getSpatialParameters(self):  # noqa: N802
        """Coefficients, shape (n_basis, n_spatial_terms)."""
        return np.asarray(self.solution.kernel_coefficients)

    def isSpatiallyVarying(self):  # noqa: N802
        return self.config.spatial_kernel_order > 0

    def computeImage(self, x=None, y=None, doNormalize=False):  # noqa: N802, N803
        """Kernel image at ``(x, y)`` (default: the centre of the fit's bbox).

        Returns
        -------
        ndarray, shape (k, k), float64
            Correlation orientation (afw's): ``out(p) = sum_u K(u) in(p + u)``.
        """
        b = np.asarray(self.solution.bbox, np.float64)
        if x is None:
            ax, ay = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
        else:
            ax, ay = float(x) - self.xy0[0], float(y) - self.xy0[1]
        img = kernel_image_host(self.solution, ax, ay, self.config)
        return img / img.sum() if doNormalize else img

    def getKernelSum(self, x=None, y=None):  # noqa: N802
        return float(self.computeImage(x, y).sum())

    def computeImageGrid(self, nx=3, ny=3, bbox=None):  # noqa: N802
        """Kernel images on an ``ny`` x ``nx`` grid over ``bbox`` (default: the fit's).

        Returns
        -------
        xs, ys : ndarray
            Grid positions (parent coordinates).
        images : ndarray, shape (ny, nx, k, k)
        """
        if bbox is None:
            b = np.asarray(self.solution.bbox, float)
            x0, y0, x1, y1 = (
                b[0] + self.xy0[0],
                b[1] + self.xy0[1],
                b[2] + self.xy0[0],
                b[3] + self.xy0[1],
            )
        else:
            x0, y0, x1, y1 = bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY()
        xs, ys = np.linspace(x0, x1, nx), np.linspace(y0, y1, ny)
        images = np.array([[self.computeImage(x, y) for x in xs] for y in ys])
        return xs, ys, images

    def __repr__(self):
        return (
            f"MatchingKernel({self.config.kernel_basis}, size={self.config.kernel_size}, "
            f"spatial order {self.config.spatial_kernel_order})"
        )


class BackgroundModel:
    """The fitted differential background ``B(x, y) = sign · sum_m β_m g_m(x, y)``.

    Parameters
    ----------
    solution : KernelSolution
    config : KernelFitConfig
    shape : tuple (H, W)
        The science grid.
    xy0 : tuple of int
    scale : float
        ``1`` in convolveTemplate mode, ``-1 / κ`` in convolveScience mode (ip_diffim's sign).
    """

    def __init__(self, solution, config, shape, xy0=(0, 0), scale=1.0):
        self.solution, self.config = solution, config
        self.shape, self.xy0, self.scale = tuple(shape), tuple(xy0), float(scale)

    @property
    def _order(self):
        return self.config.spatial_bg_order if self.config.fit_for_background else 0

    def getParameters(self):  # noqa: N802
        """Coefficients of the Chebyshev (or polynomial) terms, with ip_diffim's sign."""
        return [float(v) * self.scale for v in np.asarray(self.solution.background_coefficients)]

    def getNParameters(self):  # noqa: N802
        return int(np.asarray(self.solution.background_coefficients).size)

    def __call__(self, x, y):
        """Background at parent position(s) ``(x, y)``."""
        xa = np.asarray(x, float) - self.xy0[0]
        ya = np.asarray(y, float) - self.xy0[1]
        terms = spatial_terms(
            xa, ya, self._order, self.solution.bbox, self.config.spatial_model_type
        )
        beta = np.asarray(self.solution.background_coefficients, float)
        return self.scale * (np.asarray(terms, float) @ beta)

    def computeImage(self):  # noqa: N802
        """The model on the science grid, shape (H, W), float32."""
        img = background_image(self.solution, self.shape, self.config)
        return self.scale * np.asarray(img)

    def __repr__(self):
        return f"BackgroundModel({self.getNParameters()} parameters)"
