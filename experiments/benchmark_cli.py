"""Benchmark of the whole job as a user runs it: ``jaxdiffim subtract`` on two FITS files.

For each size N (default 1024, 2048, 4096) an N x N pair is simulated and written as plain FITS
files (Gaussian PSFs 2.0 -> 2.4 px sigma, or ``--sigmas``; about N²/20000 stars, 5 % more flux
in the science image, un-subtracted sky with a gradient; no variance planes, no PSF files, no
catalogue). Then, each in a fresh process:

* ``cli_cold``: the CLI with an empty cache (``JAXDIFFIM_CACHE_DIR`` a new folder: no compiled
  and no traced programs);
* ``cli_warm``: the CLI again, ``--repeat`` times, with that cache filled (median and minimum);
* ``fft_floor``: one plain N x N FFT convolution (rfft2 of the image and of a zero-padded 21 x 21
  kernel, product, irfft2), median of 5 after a warm-up: the floor the job is compared with;
* ``in_process``: ``alard_lupton_subtract`` on the same arrays (PSFs from the CLI's estimate)
  after one warm-up call, with the stage timings of its metrics (``prepare``: coverage, sky,
  ScaleVariance and masks; ``sources``: kernel-source detection and selection;
  ``fit_subtract_decorrelate``: the one program from the kernel sources to the QA ratios);
* ``sfft`` (with ``--sfft-python``, at ``--sfft-sizes``): SFFT's CPU backend on the same pair
  through ``experiments/sfft_runner.py`` in that interpreter (a separate environment, see the
  runner's docstring), once to compile numba's functions and once measured.

Wall times are measured by the parent process; peak RSS is each child's ``ru_maxrss``. Prints
JSON with the machine, its load and every figure. Usage:
``OPENBLAS_NUM_THREADS=1 python experiments/benchmark_cli.py [--sizes 1024 2048] [--repeat 3]
[--sfft-python /tmp/sfftwork/venv/bin/python]``.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

#: Runs a command and prints its peak RSS (kB on Linux) as the last line.
_LAUNCH = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('MAXRSS', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
    "sys.exit(r.returncode)"
)

_FFT = """
import sys, time
import jax, jax.numpy as jnp, numpy as np
n = int(sys.argv[1])
img = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
ker = jnp.asarray(np.ones((21, 21)) / 441.0, jnp.float32)
@jax.jit
def conv(a, k):
    kp = jnp.zeros_like(a).at[:21, :21].set(k)
    return jnp.fft.irfft2(jnp.fft.rfft2(a) * jnp.fft.rfft2(kp), s=a.shape)
conv(img, ker).block_until_ready()
ts = []
for _ in range(5):
    t0 = time.perf_counter()
    conv(img, ker).block_until_ready()
    ts.append(time.perf_counter() - t0)
print("SECONDS", sorted(ts)[2])
"""

_IN_PROCESS = """
import json, sys, time
from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
from jaxdiffim.cli.subtract import file_config, load_exposure
t, s = load_exposure(sys.argv[1]), load_exposure(sys.argv[2])
args = (t[s.getBBox()].maskedImage, s.maskedImage, t.psf_callable(), s.psf_callable(), None,
        file_config())
alard_lupton_subtract(*args)
t0 = time.perf_counter()
r = alard_lupton_subtract(*args)
total = time.perf_counter() - t0
print("JSON", json.dumps({"total_s": round(total, 3),
      "stages_s": {k: round(v, 3) for k, v in r.metrics["timings"].items()}}))
"""


def simulate(n, folder, sigmas=(2.0, 2.4)):
    """Write the N x N pair (Gaussian PSF sigmas of template and science, pixels); return the
    two paths."""
    import numpy as np
    from astropy.io import fits

    from jaxdiffim.testing.synthetic import make_test_image

    rng = np.random.default_rng(n)
    n_stars = max(200, n * n // 20000)
    x, y = rng.uniform(30, n - 30, n_stars), rng.uniform(30, n - 30, n_stars)
    flux = 10 ** rng.uniform(2.7, 4.3, n_stars)
    common = dict(noise_level=5.0, size=(n, n), x=x, y=y)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    paths = []
    for name, sigma, seed, scale, sky in (
        ("template", sigmas[0], 1, 1.0, 800.0 + 60.0 * xx - 30.0 * yy),
        ("science", sigmas[1], 2, 1.05, 1300.0 - 40.0 * xx + 50.0 * yy),
    ):
        scene = make_test_image(psf_sigma=sigma, noise_seed=seed, flux=scale * flux, **common)
        path = os.path.join(folder, f"{name}_{n}.fits")
        fits.PrimaryHDU((scene.image + sky).astype(np.float32)).writeto(path, overwrite=True)
        paths.append(path)
    return paths


def _child(cmd, env=None):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _LAUNCH, *cmd], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr[-1500:]}")
    rss_kb = int(proc.stdout.strip().splitlines()[-1].split()[1])
    return wall, rss_kb / 1024.0, proc.stdout


def _sfft(python, template, science, folder, n, sigmas):
    """SFFT's CPU backend on the pair: a numba warm-up run, then the measured one."""
    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sfft_runner.py")
    out = os.path.join(folder, f"sfft_{n}.fits")
    fwhm = [f"{2.3548 * s:.3f}" for s in sigmas]  # the simulated PSFs' widths
    cmd = [python, runner, template, science, out, "--fwhm-template", fwhm[0]]
    cmd += ["--fwhm-science", fwhm[1]]
    for _ in range(2):
        wall, rss, text = _child(cmd)
    inner = json.loads([x for x in text.splitlines() if x.startswith("JSON")][-1][5:])
    return {"wall_s": round(wall, 2), "subtract_s": inner["subtract_s"], "peak_rss_mb": round(rss)}


def bench(n, folder, repeat=3, sfft_python=None, sigmas=(2.0, 2.4)):
    template, science = simulate(n, folder, sigmas)
    cache = tempfile.mkdtemp(prefix="xla-", dir=folder)
    env = dict(os.environ, JAXDIFFIM_CACHE_DIR=cache)
    out = os.path.join(folder, f"diff_{n}.fits")
    cli = [sys.executable, "-m", "jaxdiffim", "subtract", template, science, "-o", out]
    row = {"size": n, "psf_sigmas_px": list(sigmas)}
    wall, rss, _ = _child([*cli, "--overwrite"], env)
    row["cli_cold"] = {"wall_s": round(wall, 2), "peak_rss_mb": round(rss)}
    runs = [_child([*cli, "--overwrite"], env)[:2] for _ in range(repeat)]
    walls = sorted(w for w, _ in runs)
    row["cli_warm"] = {
        "wall_s": round(walls[len(walls) // 2], 2),
        "min_wall_s": round(walls[0], 2),
        "peak_rss_mb": round(max(r for _, r in runs)),
    }
    _, _, text = _child([sys.executable, "-c", _FFT, str(n)])
    fft = float([x for x in text.splitlines() if x.startswith("SECONDS")][0].split()[1])
    row["fft_floor_s"] = round(fft, 4)
    _, rss, text = _child([sys.executable, "-c", _IN_PROCESS, template, science], env)
    inproc = json.loads([x for x in text.splitlines() if x.startswith("JSON")][0][5:])
    inproc["peak_rss_mb"] = round(rss)
    inproc["in_fft_floors"] = round(inproc["total_s"] / fft, 1)
    row["in_process"] = inproc
    row["cli_warm_in_fft_floors"] = round(row["cli_warm"]["wall_s"] / fft, 1)
    if sfft_python is not None:
        row["sfft"] = _sfft(sfft_python, template, science, folder, n, sigmas)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=3, help="warm CLI runs per size")
    parser.add_argument("--sfft-python", help="interpreter of an environment with sfft and sep")
    parser.add_argument(
        "--sfft-sizes",
        type=int,
        nargs="+",
        default=[1024],
        help="sizes SFFT runs at (it needs about 8 GB at 1024², 30 GB at 2048²)",
    )
    parser.add_argument(
        "--sigmas",
        type=float,
        nargs=2,
        default=[2.0, 2.4],
        metavar=("TEMPLATE", "SCIENCE"),
        help="Gaussian PSF sigmas in pixels (default 2.0 2.4; 3.4 4.0 is 8-9 px FWHM seeing)",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        rows = [
            bench(
                n,
                folder,
                args.repeat,
                args.sfft_python if n in args.sfft_sizes else None,
                tuple(args.sigmas),
            )
            for n in args.sizes
        ]
    report = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "results": rows,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
