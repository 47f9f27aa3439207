"""Batches and devices: ``vmap`` of the whole subtraction program equals the loop, and batches
sharded over two (virtual CPU) devices run — with ``jit`` + ``NamedSharding`` and with
``shard_map`` — and give the same numbers, in seconds (they used to hang: jaxlib's batched
LAPACK kernels blocked every thread of the small intra-op pool; see
:mod:`jaxdiffim.core.solve`). The device count is fixed when JAX starts, so the sharded runs
happen in a child process."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from utils import SIZE, grad_problem

from jaxdiffim import (
    Decorrelation,
    KernelFitConfig,
    MaskedImage,
    subtract_and_decorrelate,
)

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = KernelFitConfig(kernel_size=7, degrees=(2, 1), spatial_kernel_order=1, spatial_bg_order=1)

_SETUP = f"""
import sys
sys.path.insert(0, {HERE!r})
import numpy as np, jax.numpy as jnp
from jaxdiffim import KernelFitConfig, MaskedImage, subtract_images
from utils import SIZE, grad_problem

tmpl, sci, cands = grad_problem()
config = KernelFitConfig(kernel_size=7, degrees=(2, 1), spatial_kernel_order=1, spatial_bg_order=1)
zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
tv = jnp.asarray(tmpl.variance, jnp.float32)
sv = jnp.asarray(sci.variance, jnp.float32)
sigmas = jnp.asarray([1.0, 2.0], jnp.float32)


def one(t, s):
    d, sol = subtract_images(
        MaskedImage(t, tv, zeros), MaskedImage(s, sv, zeros), cands, config, sigmas, check=False
    )
    return d.difference.image, sol.kernel_sum


templates = jnp.stack([jnp.asarray(tmpl.image, jnp.float32) * (1 + 0.02 * i) for i in range(4)])
sciences = jnp.stack([jnp.asarray(sci.image, jnp.float32)] * 4)
"""

_SHARDED = """
import json
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

assert len(jax.devices()) == 2
loop = [one(templates[i], sciences[i]) for i in range(4)]
mesh = Mesh(np.array(jax.devices()), ("pairs",))
split = NamedSharding(mesh, P("pairs"))
t_sh, s_sh = jax.device_put(templates, split), jax.device_put(sciences, split)
auto = jax.jit(jax.vmap(one))(t_sh, s_sh)
# check_vma=False: JAX's varying-axis type check trips on the fit's clipping loops (jax 0.10)
manual = jax.jit(
    jax.shard_map(
        jax.vmap(one), mesh=mesh, in_specs=P("pairs"), out_specs=P("pairs"), check_vma=False
    )
)(t_sh, s_sh)
print(json.dumps({
    "auto_devices": len(auto[0].sharding.device_set),
    "auto_ksum": float(np.max(np.abs(np.asarray(auto[1]) - [l[1] for l in loop]))),
    "auto_image": float(np.max(np.abs(np.asarray(auto[0]) - np.stack([l[0] for l in loop])))),
    "manual_ksum": float(np.max(np.abs(np.asarray(manual[1]) - [l[1] for l in loop]))),
    "manual_image": float(np.max(np.abs(np.asarray(manual[0]) - np.stack([l[0] for l in loop])))),
}))
"""


@pytest.mark.slow
def test_batch_sharded_over_two_devices_equals_loop():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    script = textwrap.dedent(_SETUP) + textwrap.dedent(_SHARDED)
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["auto_devices"] == 2
    for key in ("auto", "manual"):
        assert out[f"{key}_ksum"] < 1e-5
        assert out[f"{key}_image"] < 1e-3


@pytest.fixture(scope="module")
def pairs():
    return grad_problem()


@pytest.mark.slow
def test_vmap_of_whole_subtraction_program_equals_loop(pairs):
    """The one program from kernel sources to decorrelated difference, background and QA,
    ``vmap``-ed over 3 pairs (x64 off, no context manager)."""
    tmpl, sci, cands = pairs
    zeros = jnp.zeros((SIZE, SIZE), jnp.int32)
    tv = jnp.asarray(tmpl.variance, jnp.float32)
    sv = jnp.asarray(sci.variance, jnp.float32)
    s_img = jnp.asarray(sci.image, jnp.float32)
    sigmas = jnp.asarray([1.0, 2.0], jnp.float32)

    def run(t):
        out = subtract_and_decorrelate(
            MaskedImage(t, tv, zeros),
            MaskedImage(s_img, sv, zeros),
            cands,
            CONFIG,
            sigmas,
            mode="convolveTemplate",
            subtract_background=True,
            decorrelation=Decorrelation(),
            check=False,
        )
        return out.difference.image, out.difference.variance, out.solution.kernel_sum

    templates = jnp.stack([jnp.asarray(tmpl.image, jnp.float32) * (1 + 0.03 * i) for i in range(3)])
    batched = jax.jit(jax.vmap(run))(templates)
    for i in range(3):
        image, variance, ksum = run(templates[i])
        np.testing.assert_allclose(batched[2][i], ksum, rtol=1e-5)
        np.testing.assert_allclose(batched[0][i], image, atol=2e-3 * float(jnp.abs(image).max()))
        np.testing.assert_allclose(batched[1][i], variance, rtol=1e-4)
