"""``jaxdiffim demo``: simulate a realistic pair, subtract it with the Task, write FITS and a PNG.

The pair (:func:`jaxdiffim.testing.demo_scene.simulate_pair`): stars and galaxies; a template with
a constant Gaussian PSF
and a science image whose PSF widens by 25 % across the field (a grid of PSF images); science
fluxes 8 % higher; a sky plane in the science image; a bad column and a saturated star;
transients (point sources only in the science image) and one star that brightens. Both images
are written as afw-layout FITS files, subtracted through :class:`AlardLuptonSubtractTask` with
``mode="auto"`` and the built-in kernel-source detection (no catalogue: two FITS files are
enough), and the difference is written too, with a PNG of template | science | difference |
kernel across the field. The summary reports how the truth is recovered.
"""

import json
import os
import tempfile
import time

import jax.numpy as jnp
import numpy as np

from ..core.convolve import dilate_mask
from ..core.masks import bits
from ..errors import OutputExistsError
from ..io import write_exposure
from ..io.atomic import pending
from ..io.figures import demo_figure, save_png
from ..tasks import AlardLuptonSubtractTask
from ..testing.demo_scene import simulate_pair
from .subtract import file_config, task_config, write_json

__all__ = ["run_demo"]


def _peak_snr(diff, x, y):
    z = diff.image.array / np.sqrt(diff.variance.array)
    out = []
    for xi, yi in zip(np.atleast_1d(x), np.atleast_1d(y), strict=True):
        ix, iy = int(round(xi)), int(round(yi))
        out.append(float(np.nanmax(z[iy - 1 : iy + 2, ix - 1 : ix + 2])))
    return out


def run_demo(outdir="jaxdiffim-demo", size=512, overwrite=False, seed=3, skip_existing=False):
    """Simulate, subtract and write; return the summary dict.

    The files are written into a hidden folder inside ``outdir`` and moved into ``outdir`` at
    the end, so an interrupted demo leaves no partial set (its folder is removed on the way
    out, or ignored and replaced by the next run). With ``skip_existing`` a complete earlier
    demo in ``outdir`` is kept and its summary returned.
    """
    names = ("template.fits", "science.fits", "difference.fits", "demo.png", "summary.json")
    paths = {name: os.path.join(outdir, name) for name in names}
    existing = [path for path in paths.values() if os.path.exists(path)]
    if skip_existing and len(existing) == len(paths):
        with open(paths["summary.json"]) as fh:
            return {**json.load(fh), "skipped": "the demo's outputs exist already"}
    if existing and not overwrite:
        raise OutputExistsError(
            f"{existing[0]!r} exists; pass --overwrite to replace the demo's files"
            + ("." if skip_existing else ", or --skip-existing to keep a complete earlier demo.")
        )
    os.makedirs(outdir, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".jaxdiffim-demo-", dir=outdir) as work,
        pending(work),
    ):
        staged = {name: os.path.join(work, name) for name in names}
        summary = _demo(staged, size, seed)
        summary["outputs"] = paths
        write_json(summary, staged["summary.json"])
        for name in names:  # summary.json last: it marks a complete demo
            os.replace(staged[name], paths[name])
    return summary


def _demo(paths, size, seed):
    """Simulate, subtract, write every file but the summary into ``paths``; the summary."""
    template, science, truth = simulate_pair(size, seed)
    write_exposure(template, paths["template.fits"])
    write_exposure(science, paths["science.fits"])
    # the configuration of `jaxdiffim subtract` (mode auto, the science sky subtracted)
    task = AlardLuptonSubtractTask(config=task_config(AlardLuptonSubtractTask, file_config()))
    t0 = time.perf_counter()
    result = task.run(template, science)
    elapsed = time.perf_counter() - t0
    diff = result.difference
    write_exposure(diff, paths["difference.fits"])
    kx, ky, kernels = result.psfMatchingKernel.computeImageGrid(3, 3, science.getBBox())
    figure = demo_figure(
        template.image.array,
        science.image.array,
        diff.image.array,
        kernels,
        kx,
        ky,
        mask=(diff.mask.array & bits(("NO_DATA", "EDGE"))) != 0,
        xy0=science.getXY0(),
        suptitle=f"jaxdiffim demo: {result.mode}, kernel sum "
        f"{result.psfMatchingKernel.getKernelSum():.3f} (truth {truth['flux_scale']})",
    )
    save_png(figure, paths["demo.png"])
    # noise on empty sky, in units of the variance plane
    z = diff.image.array / np.sqrt(diff.variance.array)
    # empty sky: 13 px away from any template pixel above 3 sigma of its noise
    bright = np.abs(template.image.array - np.median(template.image.array)) > 3 * 3.0
    quiet = np.asarray(dilate_mask(jnp.asarray(bright.astype(np.int32)), 13)) == 0
    quiet &= (diff.mask.array & bits(("EDGE", "NO_DATA", "BAD", "SAT", "SAT_TEMPLATE"))) == 0
    tx, ty, _ = truth["transients"]
    vx, vy, _ = truth["variable"]
    md = task.metadata
    cx = np.array([0, size - 1, 0, size - 1, (size - 1) / 2])
    cy = np.array([0, 0, size - 1, size - 1, (size - 1) / 2])
    a, b, c = truth["sky"]
    bg_true = a + b * cx + c * cy
    bg_fit = result.backgroundModel(cx + science.getX0(), cy + science.getY0())
    summary = {
        "outputs": paths,
        "image_size": size,
        "mode": result.mode,
        "kernel_size": int(result.psfMatchingKernel.config.kernel_size),
        "kernel_sum": round(result.psfMatchingKernel.getKernelSum(), 4),
        "kernel_sum_truth": truth["flux_scale"],
        "n_kernel_sources_used": int(np.count_nonzero(result.kernelSources["used"])),
        "background_parameters": [round(v, 4) for v in result.backgroundModel.getParameters()],
        "background_at_corners_and_centre": [round(float(v), 2) for v in bg_fit],
        "background_truth_at_corners_and_centre": [round(float(v), 2) for v in bg_true],
        "sky_noise_in_sigma": round(float(np.std(z[quiet])), 4),
        "footprint_ratio_mean": round(float(md["differenceFootprintRatioMean"]), 4),
        "transient_peak_snr": [round(v, 1) for v in _peak_snr(diff, tx, ty)],
        "variable_star_peak_snr": round(_peak_snr(diff, vx, vy)[0], 1),
        "seconds_subtraction_including_compile": round(elapsed, 2),
        "png_panels": (
            "template | science | difference | matching kernel on a 3x3 grid over the field; "
            "axes in parent pixels, colour bars in counts, asinh stretch (template, science), "
            "linear symmetric z-scale (difference; NO_DATA and EDGE pixels grey)"
        ),
    }
    return summary
