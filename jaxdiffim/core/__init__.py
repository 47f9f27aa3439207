"""The pure JAX core: arrays, static structure and traced numbers in, pytrees out.

Basis, spatial model, stamps, normal equations, solves, candidate rejection, fit, convolution,
subtraction, decorrelation and preconvolution, each ``jit``-able. Nothing here imports anything
from the layers above (:mod:`jaxdiffim.algorithms`, tasks, I/O, CLI).
"""
