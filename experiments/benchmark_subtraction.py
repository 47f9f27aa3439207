"""Benchmark: fit + convolve + subtract on large float32 pairs; prints JSON.

Each case runs in its own process so that its peak memory (max RSS) is its own; the pair is
generated beforehand and loaded as float32 arrays, so the peak is that of the subtraction (inputs
and outputs included), not of the simulation. Cases:

* ``subtract N``: an N x N pair with about 500 stars, kernel spatial order 1, background order 2
  (the subtraction defaults), AL basis with ip_diffim's width rule for PSF sigma 2.0 -> 2.4;
  times ``jax.jit(...).lower().compile()`` separately from execution (median and minimum of
  ``--repeats`` runs after a warm-up).
* ``fft N``: one plain N x N FFT convolution with a 21 x 21 kernel (rfft2 of the image and of the
  zero-padded kernel, product, irfft2), the floor the subtraction is compared with.

Usage: ``OPENBLAS_NUM_THREADS=1 python experiments/benchmark_subtraction.py [--sizes 2048 4096]``.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _timed(fn, args, repeats):
    import jax

    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": round(times[len(times) // 2], 4), "min_s": round(times[0], 4)}


N_STARS = 500
FLUX_RATIO = 1.05


def make_data(n, path):
    """Write a float32 template/science pair with about 500 stars to ``path`` (an .npz)."""
    import numpy as np

    from jaxdiffim.testing.synthetic import make_test_image

    rng = np.random.default_rng(0)
    x = rng.uniform(30, n - 30, N_STARS)
    y = rng.uniform(30, n - 30, N_STARS)
    flux = 10 ** rng.uniform(2.7, 4.0, N_STARS)
    common = dict(noise_level=1.0, size=(n, n), x=x, y=y)
    tmpl = make_test_image(psf_sigma=2.0, noise_seed=1, flux=flux, **common)
    sci = make_test_image(psf_sigma=2.4, noise_seed=2, flux=FLUX_RATIO * flux, **common)
    np.savez(
        path, t=tmpl.image, tv=tmpl.variance, s=sci.image, sv=sci.variance, x=x, y=y, flux=flux
    )


def case_subtract(n, repeats, path):
    """Time the jitted fit + convolve + subtract on the pair stored at ``path``."""
    import jax
    import numpy as np

    import jaxdiffim as jd
    from jaxdiffim.core.basis import FWHM_PER_SIGMA
    from jaxdiffim.core.fit import prepare_fit_arguments
    from jaxdiffim.core.pipeline import _subtract
    from jaxdiffim.core.precision import fit_precision

    data = np.load(path)
    x, y, flux = data["x"], data["y"], data["flux"]

    sigmas, k = jd.alard_lupton_sigmas(2.0 * FWHM_PER_SIGMA, 2.4 * FWHM_PER_SIGMA)
    config = jd.KernelFitConfig(kernel_size=k, spatial_kernel_order=1, spatial_bg_order=2)
    zeros = np.zeros((n, n), np.int32)
    t_mi = jd.MaskedImage(*(jax.device_put(a) for a in (data["t"], data["tv"], zeros)))
    s_mi = jd.MaskedImage(*(jax.device_put(a) for a in (data["s"], data["sv"], zeros)))
    del data
    cands = jd.make_candidates(x, y, flux)
    sig, bbox = prepare_fit_arguments(
        t_mi.image, s_mi.image, t_mi.variance, s_mi.variance, cands, config, sigmas, None, True
    )
    args = (t_mi, s_mi, cands, sig, bbox, config, "convolveTemplate", False, 0)
    with fit_precision():
        t0 = time.perf_counter()
        compiled = _subtract.lower(*args).compile()
        compile_s = time.perf_counter() - t0
        dyn = (t_mi, s_mi, cands, sig, bbox)
        run = _timed(lambda *a: compiled(*a), dyn, repeats)
        diff, sol = compiled(*dyn)
    d = np.asarray(diff.difference.image)
    return {
        "case": "subtract",
        "size": n,
        "n_stars": int(x.size),
        "n_used": int(np.asarray(sol.used).sum()),
        "kernel_size": k,
        "kernel_sum": float(sol.kernel_sum),
        "kernel_sum_truth": FLUX_RATIO,
        "all_finite": bool(np.isfinite(d).all()),
        "compile_s": round(compile_s, 3),
        **run,
    }


def case_fft(n, repeats):
    import jax
    import jax.numpy as jnp
    import numpy as np

    image = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)).astype(np.float32))
    kernel = jnp.asarray(np.random.default_rng(1).normal(size=(21, 21)).astype(np.float32))

    @jax.jit
    def conv(img, ker):
        padded = jnp.zeros_like(img).at[:21, :21].set(ker)
        padded = jnp.roll(padded, (-10, -10), axis=(0, 1))
        return jnp.fft.irfft2(jnp.fft.rfft2(img) * jnp.fft.rfft2(padded), s=img.shape)

    return {"case": "fft_convolution", "size": n, **_timed(conv, (image, kernel), repeats)}


def run_child(argv):
    out = subprocess.run(
        [sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        case, n = args.child[0], int(args.child[1])
        if case == "subtract":
            result = case_subtract(n, args.repeats, args.data)
        else:
            result = case_fft(n, args.repeats)
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print(json.dumps(result))
        return
    import jax

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            path = os.path.join(tmp, f"pair{n}.npz")
            make_data(n, path)
            repeats = ["--repeats", str(args.repeats)]
            results.append(run_child(["fft", str(n), *repeats]))
            results.append(run_child(["subtract", str(n), *repeats, "--data", path]))
    fft = {r["size"]: r["median_s"] for r in results if r["case"] == "fft_convolution"}
    for r in results:
        if r["case"] == "subtract":
            r["ratio_to_one_fft_convolution"] = round(r["median_s"] / fft[r["size"]], 2)
    print(
        json.dumps(
            {
                "machine": {
                    "platform": platform.platform(),
                    "cpus": os.cpu_count(),
                    "jax": jax.__version__,
                    "device": str(jax.devices()[0]),
                    "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                    "loadavg": os.getloadavg(),
                },
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
