"""ip_diffim's steps around the core, on arrays: inputs and masks, variance scaling, PSF sizes
and the ``auto`` mode, source detection and selection, QA, and the whole subtraction
(:func:`~jaxdiffim.algorithms.alard_lupton.alard_lupton_subtract`).

Imports only :mod:`jaxdiffim.core` and :mod:`jaxdiffim.errors`.
"""
