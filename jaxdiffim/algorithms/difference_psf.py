"""The PSF of the difference image, for the sources of the science image (transients).

A point source of the science image reaches the difference through the matching kernel when the
science image is convolved (``K(x, y) / ΣK``, as a correlation), then through the decorrelation
filter (:func:`jaxdiffim.core.decorrelation.psf_filter`, which for a score image includes the
preconvolution; returned by the subtraction program as ``psf_filter``). Its profile in the
difference is the science PSF correlated with both. ip_diffim's ``DecorrelateALKernelTask`` sets
a corrected PSF on the decorrelated exposure in the same spirit (``computeCorrectedDiffimPsf``:
the exposure's PSF through the decorrelation kernel). Differences: the kernel is evaluated at
each position (the decorrelation filter is the one at the centre, as applied), and the science
PSF is the base in both modes (ip_diffim: the unconvolved exposure's PSF, which in
convolveScience mode misses what the imperfect kernel does to the science sources).
"""

import numpy as np

from ..core.subtract import kernel_image_host
from .psf_shape import evaluate_psf

__all__ = ["DifferencePsf"]


def _correlate(image, kernel):
    """``out(p) = Σ_u kernel(u) image(p + u)`` on ``image``'s grid (odd ``kernel``; zero beyond
    the border). numpy FFTs: ``scipy.signal`` would add a second to every CLI start-up."""
    shape = tuple(a + b - 1 for a, b in zip(image.shape, kernel.shape, strict=True))
    full = np.fft.irfft2(
        np.fft.rfft2(image, shape) * np.fft.rfft2(kernel[::-1, ::-1], shape), shape
    )
    hy, hx = kernel.shape[0] // 2, kernel.shape[1] // 2
    return full[hy : hy + image.shape[0], hx : hx + image.shape[1]]


class DifferencePsf:
    """``psf(x, y)``: the unit-sum PSF of the difference at array position ``(x, y)``.

    Parameters
    ----------
    science_psf : array_like or callable
        The science image's PSF (an image, or ``psf(x, y)`` in the caller's coordinates).
    psf_filter : array_like, shape (s, s)
        Unit-sum decorrelation filter (odd side).
    solution, config : KernelSolution and KernelFitConfig, optional
        The matching kernel, when the science image was convolved.
    origin : tuple of 2 floats
        ``(x, y)`` of the caller's pixel ``(0, 0)`` in the frame of ``solution.bbox``.

    Notes
    -----
    The result has the science PSF's shape: the far wings of the filtered profile, if any, are
    cut and the image is normalised to unit sum again.
    """

    def __init__(self, science_psf, psf_filter, solution=None, config=None, origin=(0.0, 0.0)):
        self.science_psf = science_psf
        self.filter = np.asarray(psf_filter, np.float64)
        self.solution, self.config, self.origin = solution, config, tuple(origin)

    def __call__(self, x, y):
        out = evaluate_psf(self.science_psf, x, y)
        if self.solution is not None:
            x0, y0 = self.origin
            out = _correlate(out, kernel_image_host(self.solution, x + x0, y + y0, self.config))
        out = _correlate(out, self.filter)
        return out / out.sum()

    def __repr__(self):
        kernel = "" if self.solution is None else ", through the matching kernel"
        return f"DifferencePsf(filter shape={self.filter.shape}{kernel})"
