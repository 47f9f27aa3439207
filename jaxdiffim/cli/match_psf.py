"""Match one FITS exposure's PSF to a reference model: what ``jaxdiffim match-psf`` does.

The exposure's PSF comes from ``--psf``, from the file (afw layout with a ``PSF`` extension), or
from its stars (:func:`jaxdiffim.cli.subtract.ensure_psf`). The reference is a PSF stamp, or
a circular Gaussian of the given FWHM. Both are realised on one odd size, at least
``4 x`` the larger FWHM, so that a wider reference is not truncated.
"""

import os
import time

from ..core.basis import FWHM_PER_SIGMA
from ..core.model_psf import next_odd
from ..errors import InvalidInputError, OutputExistsError
from ..image import GaussianPsf
from ..io import read_exposure, read_psf, write_exposure
from ..io.atomic import refuse_input_targets
from ..tasks import ModelPsfMatchTask
from .subtract import ensure_psf

__all__ = ["match_psf_file"]


#: A reference PSF narrower than this fraction of the exposure's FWHM is refused.
NARROWEST_REFERENCE = 0.98


def match_psf_file(
    path,
    output,
    *,
    reference_fwhm=None,
    reference_psf=None,
    psf=None,
    kernel_sum=1.0,
    kernel_size=None,
    overwrite=False,
):
    """PSF-match the exposure in ``path`` to the reference and write ``output`` (afw layout).

    Returns
    -------
    dict
        Summary: the input and reference FWHMs, kernel size and sum, cells, timing.
    """
    t0 = time.perf_counter()
    if (reference_fwhm is None) == (reference_psf is None):
        raise InvalidInputError("Give exactly one of reference_fwhm and reference_psf.")
    refuse_input_targets(
        {"output": output}, {"exposure": path, "reference PSF": reference_psf, "PSF": psf}
    )
    if os.path.exists(output) and not overwrite:
        raise OutputExistsError(f"{os.fspath(output)!r} exists; pass --overwrite to replace it.")
    exposure = read_exposure(path)
    if psf is not None:
        exposure.setPsf(read_psf(psf))
    ensure_psf(exposure, path)
    if reference_psf is not None:
        reference = read_psf(reference_psf)
    else:
        if not (reference_fwhm > 0):
            raise InvalidInputError(f"--reference-fwhm must be positive, got {reference_fwhm}.")
        reference = GaussianPsf(15, 15, reference_fwhm / FWHM_PER_SIGMA)
    fwhm_in, fwhm_ref = exposure.psf.computeFwhm(), reference.computeFwhm()
    asked = fwhm_ref if reference_fwhm is None else reference_fwhm
    if asked < NARROWEST_REFERENCE * fwhm_in:
        raise InvalidInputError(
            f"The reference PSF (FWHM {asked:.2f} px) is narrower than the exposure's PSF "
            f"(FWHM {fwhm_in:.2f} px): matching would deconvolve (amplified noise, ringing). "
            "Choose a reference at least as wide as the exposure's PSF."
        )
    side = max(max(exposure.psf.getDimensions()), next_odd(4.0 * max(fwhm_in, fwhm_ref)))
    exposure.setPsf(exposure.psf.resized(side, side))
    reference = reference.resized(side, side)
    config = ModelPsfMatchTask.ConfigClass()
    if kernel_size is not None:
        config.kernel.active.kernelSize = int(kernel_size)
        config.kernel.active.kernelSizeMin = min(int(kernel_size), 11)
    result = ModelPsfMatchTask(config=config).run(exposure, reference, kernelSum=kernel_sum)
    write_exposure(result.psfMatchedExposure, output, overwrite=overwrite)
    return {
        "exposure": os.fspath(path),
        "output": os.fspath(output),
        "input_psf_fwhm": round(float(fwhm_in), 4),
        "reference_psf_fwhm": round(float(fwhm_ref), 4),
        "psf_image_size": int(result.kernelCellSet.psf_size),
        "kernel_size": int(result.psfMatchingKernel.getWidth()),
        "kernel_sum": float(result.psfMatchingKernel.getKernelSum()),
        "n_cells": len(result.kernelCellSet),
        "seconds": round(time.perf_counter() - t0, 3),
    }
