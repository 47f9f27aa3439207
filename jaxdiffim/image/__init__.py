"""Exposures, PSF models, FITS files and source catalogues (the Task layer's data model).

Nothing in the functional core imports this package.
"""

from .catalog import read_sources, source_columns
from .exposure import Box2I, Exposure, Image, Mask
from .fits import estimate_variance, read_exposure, read_psf, write_exposure
from .psf import DoubleGaussianPsf, GaussianPsf, GridImagePsf, ImagePsf, Shape, SingleGaussianPsf

__all__ = [
    "Box2I",
    "DoubleGaussianPsf",
    "Exposure",
    "GaussianPsf",
    "GridImagePsf",
    "Image",
    "ImagePsf",
    "Mask",
    "Shape",
    "SingleGaussianPsf",
    "estimate_variance",
    "read_exposure",
    "read_psf",
    "read_sources",
    "source_columns",
    "write_exposure",
]
