"""Files: FITS exposures and PSF stamps, atomic writes, figures.

Imports the data model (:mod:`jaxdiffim.image`); nothing below this layer imports it.
"""

from .atomic import atomic_output
from .fits import estimate_variance, read_exposure, read_psf, write_exposure

__all__ = ["atomic_output", "estimate_variance", "read_exposure", "read_psf", "write_exposure"]
