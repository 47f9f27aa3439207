"""``ModelPsfMatchTask``: match an exposure's PSF model to a reference model (the coadd use case).

Port of ip_diffim's ``modelPsfMatch.py`` on top of :mod:`jaxdiffim.core.model_psf`. The "template"
of
the fit is the exposure's PSF realised at the cell centres (the image that gets convolved) and
the "science" is the reference model realised at the same places.

Deliberate differences: the border the kernel cannot reach keeps the input pixels and gets
``EDGE`` (afw's ``convolve`` without ``doCopyEdge`` writes NaN with ``NO_DATA`` there); a
singular spatial system is solved by the pseudo-inverse with a warning, as in ip_diffim.
"""

import numpy as np

from ..algorithms.psf_shape import psf_fwhm
from ..core import status as st
from ..core.model_psf import (
    apply_normalized_kernel,
    cell_centres,
    fit_psf_models,
    psf_pad_size,
    recentre,
    set_kernel_sum,
)
from ..image.exposure import Box2I, Exposure
from .base import Struct, Task
from .models import MatchingKernel
from .pex_config import Config, ConfigChoiceField, Field
from .psf_match import PsfMatchConfigAL, basis_for

__all__ = ["ModelPsfMatchConfig", "ModelPsfMatchTask", "KernelCellSet"]


class ModelPsfMatchConfig(Config):
    """ip_diffim's ``ModelPsfMatchConfig``: the kernel (AL only) and the PSF padding."""

    kernel = ConfigChoiceField("Kernel basis.", {"AL": PsfMatchConfigAL}, default="AL")
    doAutoPadPsf = Field("Pad the PSF images to autoPadPsfTo x kernelSize.", bool, True)
    autoPadPsfTo = Field(
        "Minimum PSF image size as a multiple of kernelSize.", float, 1.4, lambda v: v >= 1.0
    )
    padPsfBy = Field("Pixels added to the PSF images when not auto-padding.", int, 0)

    def setDefaults(self):  # noqa: N802
        active = self.kernel.active
        active.singleKernelClipping = False  # PSF models: no outliers to clip
        active.kernelSumClipping = False
        active.spatialKernelClipping = False
        active.constantVarianceWeighting = True  # the variance is undefined
        active.kernelSizeMin = 11
        active.kernelSize = 11
        active.scaleByFwhm = False


class KernelCellSet:
    """The cells, their candidates and which were used (afw ``SpatialCellSet`` in brief).

    Attributes
    ----------
    bbox : Box2I
        The exposure's bbox grown by one cell (parent coordinates).
    size_cell_x, size_cell_y : int
    x, y : ndarray
        Candidate positions, one per cell (parent coordinates).
    used : ndarray of bool
        Candidates in the final fit.
    psf_size : int
        Side of the (padded) PSF images.
    """

    def __init__(self, bbox, size_cell_x, size_cell_y, x, y, used, psf_size):
        self.bbox, self.size_cell_x, self.size_cell_y = bbox, size_cell_x, size_cell_y
        self.x, self.y, self.used, self.psf_size = x, y, used, psf_size

    def getBBox(self):  # noqa: N802 - afw name
        return self.bbox

    def getCellList(self):  # noqa: N802
        """One ``(x, y, used)`` tuple per cell."""
        return list(zip(self.x, self.y, self.used, strict=True))

    def __len__(self):
        return len(self.x)

    def __repr__(self):
        return f"KernelCellSet({len(self)} cells, {int(np.sum(self.used))} used)"


class ModelPsfMatchTask(Task):
    """Match an exposure's PSF to a reference PSF model and convolve the exposure."""

    ConfigClass = ModelPsfMatchConfig
    _DefaultName = "modelPsfMatch"

    def __init__(self, config=None, **kwargs):
        super().__init__(config=config, **kwargs)
        self.kConfig = self.config.kernel.active

    def run(self, exposure, referencePsfModel, kernelSum=1.0):  # noqa: N803
        """PSF-match ``exposure`` to ``referencePsfModel``.

        Returns
        -------
        Struct
            ``psfMatchedExposure`` (same bbox, WCS, calibration and band; its PSF is the
            reference), ``psfMatchingKernel`` (:class:`MatchingKernel`, sum ``kernelSum``),
            ``kernelCellSet`` (:class:`KernelCellSet`), ``referencePsfModel`` (the validated,
            possibly resized reference).

        Raises
        ------
        RuntimeError
            The exposure has no PSF model.
        ValueError
            Odd ``padPsfBy``, or a kernel too big for the PSF images.
        """
        if not isinstance(exposure, Exposure) or not exposure.hasPsf():
            raise RuntimeError("exposure does not contain a Psf model")
        with self.timer("run"):
            sigmas, kconfig = basis_for(
                self.kConfig,
                psf_fwhm(exposure.psf.computeKernelImage()),  # the image that is convolved
                psf_fwhm(referencePsfModel.computeKernelImage()),
            )
            cells = self._buildCellSet(exposure, referencePsfModel, kconfig.kernel_size)
            reference = cells.referencePsfModel
            solution = fit_psf_models(
                cells.science, cells.reference, cells.ax, cells.ay, cells.abox, sigmas, kconfig
            )
            if int(solution.status) & st.SINGULAR:
                self.log.warning(
                    "The spatial kernel system is singular; ip_diffim's pseudo-inverse was used."
                )
            elif int(solution.status):
                self.log.warning("Kernel fit: %s", st.describe_status(int(solution.status)))
            solution = set_kernel_sum(solution, float(kernelSum))
            matched = apply_normalized_kernel(exposure.maskedImage, solution, kconfig)
        x0, y0 = exposure.getXY0()
        out = Exposure.from_masked(matched, exposure, reference)
        n = len(cells.ax)
        cell_set = KernelCellSet(
            cells.bbox,
            self.kConfig.sizeCellX,
            self.kConfig.sizeCellY,
            cells.ax + x0,
            cells.ay + y0,
            np.asarray(solution.used)[:n],
            cells.psf_size,
        )
        self.metadata["spatialKernelSum"] = float(kernelSum)
        self.metadata["spatialConditionNum"] = float(solution.condition_number)
        return Struct(
            psfMatchedExposure=out,
            psfMatchingKernel=MatchingKernel(solution, kconfig, (x0, y0)),
            kernelCellSet=cell_set,
            referencePsfModel=reference,
            metadata=self.metadata,
        )

    def _buildCellSet(self, exposure, referencePsfModel, kernelSize=None):  # noqa: N802, N803
        """PSF image pairs at the cell centres, padded to one odd size (ip_diffim's rules).

        ``kernelSize`` (default ``config.kernel.active.kernelSize``) is the kernel actually
        fitted, which ``scaleByFwhm`` may have changed; the padding and the size check use it.
        """
        kc = self.kConfig
        w, h = exposure.getWidth(), exposure.getHeight()
        ax, ay, abox = cell_centres(w, h, kc.sizeCellX, kc.sizeCellY)
        x0, y0 = exposure.getXY0()
        raw = [exposure.psf.computeKernelImage(x + x0, y + y0) for x, y in zip(ax, ay, strict=True)]
        side = max(max(r.shape) for r in raw)
        side = side if side % 2 == 1 else side + 1
        reference = referencePsfModel
        if tuple(reference.getDimensions()) != (side, side):
            self.log.info(
                "Adjusting the reference PSF model from %s to %dx%d",
                reference.getDimensions(),
                side,
                side,
            )
            reference = reference.resized(side, side)
        size = psf_pad_size(
            side,
            kc.kernelSize if kernelSize is None else kernelSize,
            auto_pad=self.config.doAutoPadPsf,
            auto_pad_to=self.config.autoPadPsfTo,
            pad_by=self.config.padPsfBy,
        )
        science = np.array([recentre(r, size, size) for r in raw])
        ref = np.array(
            [
                recentre(reference.computeKernelImage(x + x0, y + y0), size, size)
                for x, y in zip(ax, ay, strict=True)
            ]
        )
        bbox = Box2I(abox[0] + x0, abox[1] + y0, abox[2] - abox[0] + 1, abox[3] - abox[1] + 1)
        return Struct(
            science=science,
            reference=ref,
            ax=ax,
            ay=ay,
            abox=abox,
            bbox=bbox,
            psf_size=size,
            referencePsfModel=reference,
        )
