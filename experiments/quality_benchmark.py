"""Quality benchmark: false positives, noise, constant stars and transient photometry.

Simulates hard pairs (:mod:`jaxdiffim.testing.scenes`: elliptical Moffat PSFs varying across the
field, saturated stars with bleed trails, galaxies, sky gradients, bad columns, a NO_DATA wedge,
transients and variables; ``--bright-variables N`` adds N stars of S/N > 500 per scene that vary
by 3-8 %), subtracts them and scores each difference against the truth
(:mod:`jaxdiffim.testing.scoring`; ``variable_flux_ratio``: the variables' measured over true
change):

* ``truth``: the noise-only difference (science noise + transients + variability), the floor;
* ``convolveTemplate``, ``convolveScience``, ``auto``, ``best``: :func:`alard_lupton_subtract`
  with the CLI's configuration (``FILE_DEFAULTS``: each image's sky and the difference's residual
  sky subtracted) and the given mode, the true PSF models and masks, no catalogue (built-in
  detection of kernel sources), the QA check reported (``qa_ratio_mean``) instead of raised;
  transients are photometered with the result's ``difference_psf``; ``score``: the score
  image of :func:`alard_lupton_preconvolve_subtract`, photometered the same way. Where the
  science image is not convolved, ``filtered_truth_flux_bias`` is the same measurement on the
  truth difference through the same decorrelation (and preconvolution) filter: the reference
  of ``transient_flux_bias`` with the same noise;
* ``cli``: the whole job as a user runs it: the pair written as FITS files (NaN where an input is
  flagged, ``SATURATE`` in the header; no PSFs, variances or masks) and ``jaxdiffim subtract``
  with no options; the PSFs are the command's estimates, and transients are photometered with
  the PSF written in its output. A QA failure (``BadSubtractionError``) is reported as
  ``qa_failed`` and the run is scored with ``-c raise_on_bad_subtraction_ratio=False``;
* ``sfft`` (with ``--sfft-python``): SFFT's CPU backend through ``experiments/sfft_runner.py``
  in a separate environment (see its docstring), on the same pair written as FITS files (NaN
  where either input is flagged), the sharper image convolved.

Prints JSON: per scene and method the median over seeds of every score, and every run.
Usage: ``OPENBLAS_NUM_THREADS=1 python experiments/quality_benchmark.py [--size 1024]
[--seeds 0 1 2] [--scenes moderate strong sharp equal] [--bright-variables N]
[--set NAME VALUE] [--sfft-python PY]``.
"""

import argparse
import contextlib
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
from astropy.io import fits
from scipy import signal

from jaxdiffim.algorithms.alard_lupton import (
    alard_lupton_preconvolve_subtract,
    alard_lupton_subtract,
)
from jaxdiffim.cli.main import main as cli_main
from jaxdiffim.cli.subtract import file_config
from jaxdiffim.core.masks import bits
from jaxdiffim.io.fits import read_exposure
from jaxdiffim.testing.scenes import SATURATION, SCENES, simulate_scene
from jaxdiffim.testing.scoring import BAD_PLANES, score_difference

MODES = ("convolveTemplate", "convolveScience", "auto", "best", "score", "cli")
_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sfft_runner.py")


def run_jaxdiffim(scene, mode, overrides=None):
    """Subtract ``scene`` in ``mode`` (``score``: the preconvolved difference); the scores and
    the run's facts."""
    t, s = scene.template, scene.science
    # QA failures are scored, not raised (a QA failure is reported in ``qa_ratio_mean``)
    config = file_config(
        {
            "mode": "convolveTemplate" if mode == "score" else mode,
            "raise_on_bad_subtraction_ratio": False,
            **(overrides or {}),
        }
    )
    run = alard_lupton_preconvolve_subtract if mode == "score" else alard_lupton_subtract
    t0 = time.perf_counter()
    result = run(t.maskedImage, s.maskedImage, t.psf_callable(), s.psf_callable(), None, config)
    seconds = time.perf_counter() - t0
    truth = scene.truth
    units = 1.0  # both modes give the difference in science units (ip_diffim divides by κ)
    psf = difference_psf(result, t, s)
    diff = result.difference
    scores = score_difference(
        np.asarray(diff.image), truth, psf, units, np.asarray(diff.variance), np.asarray(diff.mask)
    )
    filtered = getattr(result, "difference_psf", None)
    if filtered is not None and filtered.solution is None:  # the science image not convolved
        # the same measurement on the truth through the same filter: the noise-paired reference
        # of the flux bias (the score image's PSF is wider, its fits noisier than the truth's)
        paired = signal.fftconvolve(
            truth["truth_difference"], filtered.filter[::-1, ::-1], mode="same"
        )
        scores["filtered_truth_flux_bias"] = score_difference(
            paired, truth, psf, units, None, np.asarray(diff.mask)
        )["transient_flux_bias"]
    scores.update(
        mode=result.mode,
        seconds=round(seconds, 2),
        kernel_sum=float(result.metrics["spatialKernelSum"]),
        n_kernel_sources=int(result.metrics["nKernelSourcesUsed"]),
        qa_ratio_mean=float(result.metrics["differenceFootprintRatioMean"]),
    )
    return scores


def difference_psf(result, template, science):
    """``psf_at(x, y)`` of the difference: the PSF written with it."""
    psf = getattr(result, "difference_psf", None)
    if psf is None:  # before the difference carried its PSF: the unconvolved image's
        psf = (science if result.mode == "convolveTemplate" else template).psf_callable()
    return lambda x, y: psf(x, y) if callable(psf) else psf


def run_truth(scene):
    truth = scene.truth
    s = scene.science
    return score_difference(
        truth["truth_difference"],
        truth,
        s.psf_callable(),
        1.0,
        truth["science_variance"],
        np.asarray(s.mask.array),
    )


def write_pair(scene, folder):
    """The pair as plain FITS files (flagged pixels NaN, ``SATURATE`` set); their paths."""
    paths = []
    for name, exp in (("template", scene.template), ("science", scene.science)):
        image = np.array(exp.image.array, np.float32)
        image[(np.asarray(exp.mask.array) & bits(BAD_PLANES)) != 0] = np.nan
        path = os.path.join(folder, f"{name}.fits")
        hdu = fits.PrimaryHDU(image)
        hdu.header["SATURATE"] = SATURATION
        hdu.writeto(path, overwrite=True)
        paths.append(path)
    return paths


def run_cli(scene, folder, overrides=None):
    """``jaxdiffim subtract`` on the pair written as FITS files, with no options (or the
    ``overrides`` as ``-c NAME=VALUE``); its scores."""
    paths = write_pair(scene, folder)
    levers = [f"-c{name}={value!r}" for name, value in (overrides or {}).items()]
    out = os.path.join(folder, "cli.fits")
    facts = {}
    for options in ([], ["-c", "raise_on_bad_subtraction_ratio=False"]):
        argv = ["subtract", *paths, "-o", out, "--overwrite", "--json", out + ".json", *levers]
        argv += options
        errors = io.StringIO()
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            try:
                code = cli_main(argv)
            except SystemExit as err:  # an error: the command's message is on stderr
                code = err.code
        seconds = time.perf_counter() - t0
        if code == 0 or "BadSubtractionError" not in errors.getvalue():
            break
        facts["qa_failed"] = True
    if code != 0:
        return {"error": errors.getvalue().strip()[-400:] or f"exit status {code}", **facts}
    with open(out + ".json") as handle:
        summary = json.load(handle)
    diff = read_exposure(out)
    psf = diff.psf
    scores = score_difference(
        np.asarray(diff.image.array),
        scene.truth,
        lambda x, y: psf.computeKernelImage(x, y),
        1.0,
        np.asarray(diff.variance.array),
        np.asarray(diff.mask.array),
    )
    scores.update(
        mode=summary["mode"],
        seconds=round(seconds, 2),
        kernel_sum=summary["kernel_sum"],
        n_kernel_sources=summary["n_kernel_sources_used"],
        qa_ratio_mean=summary["qa"]["footprint_ratio_mean"],
        qa_failed=facts.get("qa_failed", False),
        fwhm=[summary["template_psf_fwhm"], summary["science_psf_fwhm"]],
    )
    return scores


def run_sfft(scene, python, folder):
    """SFFT on the pair written as FITS (flagged pixels NaN); its scores."""
    truth = scene.truth
    paths = write_pair(scene, folder)
    out = os.path.join(folder, "sfft.fits")
    f_t, f_s = truth["fwhm"]
    cmd = [python, _RUNNER, *paths, out, "--fwhm-template", f"{f_t:.3f}"]
    cmd += ["--fwhm-science", f"{f_s:.3f}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-800:]}
    diff = fits.getdata(out).astype(float)
    science_convolved = f_s < f_t  # the sharper image is convolved
    units = 1.0 / truth["flux_scale"] if science_convolved else 1.0
    unconvolved = scene.template if science_convolved else scene.science
    scores = score_difference(diff, truth, unconvolved.psf_callable(), units)
    info = json.loads([x for x in proc.stdout.splitlines() if x.startswith("JSON")][-1][5:])
    scores.update(mode="sfft", seconds=info["wall_s"])
    return scores


def _median(rows, key):
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return round(float(np.median(values)), 4) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--scenes", nargs="+", default=list(SCENES))
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument(
        "--set",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a SubtractionConfig override (a lever), e.g. --set kernel.spatial_kernel_order 2",
    )
    parser.add_argument(
        "--bright-variables",
        type=int,
        default=0,
        help="add this many bright (S/N > 500) stars per scene that vary by 3-8 %%",
    )
    parser.add_argument("--sfft-python", help="interpreter of an environment with sfft and sep")
    args = parser.parse_args(argv)
    overrides = {name: json.loads(value) for name, value in args.set}
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.scenes:
            for seed in args.seeds:
                scene = simulate_scene(kind, seed, args.size, args.bright_variables)
                truth = scene.truth
                truth["input_mask"] = np.asarray(scene.template.mask.array) | np.asarray(
                    scene.science.mask.array
                )
                methods = {"truth": lambda sc=scene: run_truth(sc)}
                for mode in args.modes:
                    if mode == "cli":
                        methods[mode] = lambda sc=scene: run_cli(sc, folder, overrides)
                    else:
                        methods[mode] = lambda sc=scene, m=mode: run_jaxdiffim(sc, m, overrides)
                if args.sfft_python:
                    methods["sfft"] = lambda sc=scene: run_sfft(sc, args.sfft_python, folder)
                for method, run in methods.items():
                    try:
                        scores = run()
                    except Exception as err:  # noqa: BLE001 - a failed run is reported
                        scores = {"error": f"{type(err).__name__}: {err}"}
                    scores.pop("false_positives_xy", None)
                    runs.append({"scene": kind, "seed": seed, "method": method, **scores})
                    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    keys = [
        "false_positives_per_mpix",
        "false_positives_near_bright",
        "noise_std",
        "constant_beyond_5sigma",
        "transient_flux_bias",
        "filtered_truth_flux_bias",
        "completeness",
        "variable_flux_ratio",
        "variable_flux_ratio_min",
        "usable_fraction",
        "qa_ratio_mean",
        "n_kernel_sources",
        "seconds",
    ]
    table = {}
    for row in runs:
        table.setdefault(row["scene"], {}).setdefault(row["method"], []).append(row)
    summary = {
        scene: {method: {k: _median(rows, k) for k in keys} for method, rows in methods.items()}
        for scene, methods in table.items()
    }
    report = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "size": args.size,
        "seeds": args.seeds,
        "overrides": overrides,
        "median_over_seeds": summary,
        "runs": runs,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
