"""check_grads (float64, order 1, fwd + rev) of the whole subtraction program
:func:`jaxdiffim.subtract_and_decorrelate` with respect to images, widths and λ.

It runs in a child process with ``JAX_ENABLE_X64=1`` from the start: JAX reuses programs traced
with x64 off (inside jaxdiffim's float64 scope) when a process later differentiates with x64
switched on by ``jax.enable_x64``, and their Python-scalar constants are float32 there (a
dtype error in the forward-mode rules). Switching x64 in the middle of a process is JAX's
discouraged pattern; a float64 process is what a float64 user runs.
"""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdiffim import Decorrelation, MaskedImage, subtract_and_decorrelate

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_check_grads_whole_program_in_a_float64_process():
    env = dict(os.environ, JAX_ENABLE_X64="1")
    run = subprocess.run(
        [sys.executable, os.path.abspath(__file__)],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "check_grads passed" in run.stdout


def check_whole_program(problem):
    """The one program from kernel sources to the decorrelated difference
    (:func:`subtract_and_decorrelate`), float64: images and widths (Alard-Lupton) and λ
    (delta-function basis) pass check_grads, fwd + rev. Selection and mode are held fixed."""
    tmpl, sci, cands = problem
    zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
    weight = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, (SIZE, SIZE)))
    # the same fixed selection (no clipping), a constant delta-function kernel
    delta = FIXED.replace(
        kernel_basis="delta-function", kernel_size=5, spatial_kernel_order=0, spatial_bg_order=0
    )

    def program(template, science, sigmas, config):
        out = subtract_and_decorrelate(
            MaskedImage(template, jnp.asarray(tmpl.variance), zeros),
            MaskedImage(science, jnp.asarray(sci.variance), zeros),
            cands,
            config,
            sigmas,
            mode="convolveTemplate",
            subtract_background=True,
            decorrelation=Decorrelation(),
            check=False,
        )
        d = out.difference.image[6:-6, 6:-6]
        return jnp.sum(weight[6:-6, 6:-6] * d**2) / 1e3

    assert jax.config.jax_enable_x64
    t = jnp.asarray(tmpl.image, jnp.float64)
    s = jnp.asarray(sci.image, jnp.float64)
    sig = jnp.array([0.9, 1.8])
    both = ("fwd", "rev")
    check_grads(lambda a, b, c: program(a, b, c, FIXED), (t, s, sig), order=1, modes=both)

    def of_lambda(lam):
        return program(t, s, jnp.zeros(0), delta.replace(lambda_value=lam))

    check_grads(of_lambda, (jnp.float64(0.2),), order=1, modes=both)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    from utils import FIXED, SIZE, grad_problem

    check_whole_program(grad_problem())
    print("check_grads passed")
