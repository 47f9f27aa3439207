"""Exposures, PSF models and source catalogues: the Task layer's data model.

Nothing in the functional core or the algorithms imports this package; FITS files are read and
written by :mod:`jaxdiffim.io`.
"""

from .catalog import read_sources, source_columns
from .exposure import Box2I, Exposure, Image, Mask
from .psf import (
    DoubleGaussianPsf,
    FilteredPsf,
    GaussianPsf,
    GridImagePsf,
    ImagePsf,
    Shape,
    SingleGaussianPsf,
)

__all__ = [
    "Box2I",
    "DoubleGaussianPsf",
    "Exposure",
    "FilteredPsf",
    "GaussianPsf",
    "GridImagePsf",
    "Image",
    "ImagePsf",
    "Mask",
    "Shape",
    "SingleGaussianPsf",
    "read_sources",
    "source_columns",
]
