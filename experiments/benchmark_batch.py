"""Throughput of batched subtraction: pairs per second, looped vs ``vmap`` vs sharded.

Same-shape simulated pairs (:func:`jaxdiffim.testing.moffat_pairs.moffat_pair`, Moffat PSFs)
go through the whole subtraction program :func:`jaxdiffim.subtract_and_decorrelate` (fit,
convolution, decorrelation, QA) after a warm-up call:

* ``loop``: one jitted call per pair;
* ``vmap``: one ``jit(vmap(...))`` call on the stacked batch;
* ``sharded``: the same with the batch split over all devices (``NamedSharding``); on a CPU set
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before running to get two devices.

Prints JSON with the machine, the batch, pairs per second of each way, and the same-run floor
(one FFT convolution of one image, median of 5). Usage: ``OPENBLAS_NUM_THREADS=1 python
experiments/benchmark_batch.py [--size 256] [--batch 8]``.
"""

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxdiffim import Decorrelation, KernelFitConfig, alard_lupton_sigmas, subtract_and_decorrelate
from jaxdiffim.testing.moffat_pairs import moffat_pair


def _timed(fn, *args, repeat=3):
    jax.block_until_ready(fn(*args))  # warm-up (compiles)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def fft_floor(size):
    """One ``size``² FFT convolution with a 21×21 kernel (seconds, median of 5)."""
    image = jnp.asarray(np.random.default_rng(0).normal(size=(size, size)), jnp.float32)
    kernel = jnp.ones((21, 21), jnp.float32) / 441.0

    @jax.jit
    def conv(a, k):
        padded = jnp.zeros_like(a).at[:21, :21].set(k)
        return jnp.fft.irfft2(jnp.fft.rfft2(a) * jnp.fft.rfft2(padded), s=a.shape)

    return _timed(conv, image, kernel, repeat=5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--stars", type=int, default=60)
    args = parser.parse_args(argv)

    pairs = [moffat_pair(seed, size=args.size, n_stars=args.stars) for seed in range(args.batch)]
    sigmas, kernel_size = alard_lupton_sigmas(
        np.mean([p.template_fwhm for p in pairs]), np.mean([p.science_fwhm for p in pairs])
    )
    config = KernelFitConfig(kernel_size=kernel_size)
    sigmas = jnp.asarray(sigmas, jnp.float32)

    def one(template, science, candidates):
        out = subtract_and_decorrelate(
            template,
            science,
            candidates,
            config,
            sigmas,
            mode="convolveTemplate",
            subtract_background=True,
            decorrelation=Decorrelation(),
            check=False,
        )
        return out.difference.image, out.solution.kernel_sum

    stacked = jax.tree.map(
        lambda *a: jnp.stack([jnp.asarray(x) for x in a]),
        *[(p.template, p.science, p.candidates) for p in pairs],
    )
    single = jax.jit(one)
    items = [jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(args.batch)]

    def looped(*_):
        return [single(*item) for item in items]

    batched = jax.jit(jax.vmap(one))
    result = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "devices": [str(d) for d in jax.devices()],
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "size": args.size,
        "batch": args.batch,
        "fft_floor_s": round(fft_floor(args.size), 5),
    }
    seconds = {"loop": _timed(looped), "vmap": _timed(batched, *stacked)}
    devices = jax.devices()
    if len(devices) > 1 and args.batch % len(devices) == 0:
        split = NamedSharding(Mesh(np.array(devices), ("pairs",)), PartitionSpec("pairs"))
        sharded = jax.device_put(stacked, split)
        seconds["sharded"] = _timed(batched, *sharded)
    result["pairs_per_second"] = {k: round(args.batch / v, 2) for k, v in seconds.items()}
    result["seconds_per_pair_in_fft_floors"] = {
        k: round(v / args.batch / result["fft_floor_s"], 1) for k, v in seconds.items()
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
