"""Match a science exposure to a template's PSF with ModelPsfMatchTask (ip_diffim's example).

The example of ip_diffim's ModelPsfMatchTask documentation (``examples/modelPsfMatchTask.py``),
rewritten for jaxdiffim. ``MyModelPsfMatchTask.run(templateExp, scienceExp)`` matches the
science exposure to the template's PSF model. Without ``--template``/``--science`` it makes fake
data: a 3 x 3 grid of point sources, one per 128-px cell, seen with a Gaussian PSF of sigma 3 px
(template) and 2 px (science). ``--debug`` writes PNG images (template, science, matched science,
and the kernel across the field) instead of opening display frames. Prints a JSON summary.

    python experiments/model_psf_match_example.py [--debug] [--outdir DIR]
    python experiments/model_psf_match_example.py --template T.fits --science S.fits
"""

import argparse
import json
import os
import sys

import numpy as np

from jaxdiffim.algorithms.psf_shape import psf_fwhm
from jaxdiffim.errors import InputFileError
from jaxdiffim.image import Exposure, GaussianPsf
from jaxdiffim.io import read_exposure
from jaxdiffim.io.figures import image_figure, kernel_figure, save_png
from jaxdiffim.tasks import ModelPsfMatchTask


class MyModelPsfMatchTask(ModelPsfMatchTask):
    """ModelPsfMatchTask on two exposures: the science one is matched to the template's PSF."""

    def run(self, templateExp, scienceExp):  # noqa: N803 - ip_diffim's names
        return ModelPsfMatchTask.run(self, scienceExp, templateExp.getPsf())


def _convolved_points(sigma, psf_size, n_cell, cell, counts):
    """Point sources at the cell centres seen through a Gaussian PSF, the border trimmed."""
    border = psf_size // 2
    total = n_cell * cell + 2 * border
    image = np.zeros((total, total))
    centres = [c * cell + cell // 2 + border - 1 for c in range(n_cell)]
    psf = GaussianPsf(psf_size, psf_size, sigma)
    kernel = psf.computeKernelImage()
    for y in centres:
        for x in centres:
            image[y - border : y + border + 1, x - border : x + border + 1] += counts * kernel
    trimmed = image[border:-border, border:-border]
    positions = [c - border for c in centres]
    return trimmed, psf, positions


def generate_fake_data(cell=128, n_cell=3, psf_size=21, counts=1e4):
    """Template (PSF sigma 3) and science (sigma 2) exposures and the source positions."""
    t_img, t_psf, pos = _convolved_points(3.0, psf_size, n_cell, cell, counts)
    s_img, s_psf, _ = _convolved_points(2.0, psf_size, n_cell, cell, counts)
    ones = np.ones_like(t_img)
    template = Exposure(t_img, variance=ones, psf=t_psf)
    science = Exposure(s_img, variance=ones, psf=s_psf)
    return template, science, pos


def _read(path, what):
    if not os.path.isfile(path):
        raise InputFileError(f"{what} image {path} does not exist")
    try:
        return read_exposure(path)
    except Exception as exc:  # noqa: BLE001 - any reading failure gets ip_diffim's message
        raise InputFileError(f"Cannot read {what.lower()} image {path}") from exc


def _debug_pngs(outdir, template, science, result):
    os.makedirs(outdir, exist_ok=True)
    matched = result.psfMatchedExposure
    figures = {
        name: image_figure(exp.image.array, title, xy0=exp.getXY0())
        for name, exp, title in (
            ("template.png", template, "Template"),
            ("science.png", science, "Science"),
            ("matched_science.png", matched, "Science matched to the template PSF"),
        )
    }
    xs, ys, grid = result.psfMatchingKernel.computeImageGrid(3, 3, science.getBBox())
    figures["kernel_grid.png"] = kernel_figure(grid, xs, ys, "PSF-matching kernel")
    paths = []
    for name, figure in figures.items():
        path = os.path.join(outdir, name)
        save_png(figure, path, overwrite=True)
        paths.append(path)
    return paths


def run(args):
    """Run the example; returns the summary dict."""
    config = MyModelPsfMatchTask.ConfigClass()
    config.kernel.active.scaleByFwhm = False
    positions = None
    if args.template is not None and args.science is not None:
        template = _read(args.template, "Template")
        science = _read(args.science, "Science")
    else:
        template, science, positions = generate_fake_data()
        config.kernel.active.sizeCellX = 128
        config.kernel.active.sizeCellY = 128
    task = MyModelPsfMatchTask(config=config)
    result = task.run(template, science)
    summary = {
        "template_psf_fwhm": round(float(template.getPsf().computeFwhm()), 4),
        "science_psf_fwhm": round(float(science.getPsf().computeFwhm()), 4),
        "kernel_size": int(result.psfMatchingKernel.getWidth()),
        "n_cells": len(result.kernelCellSet),
    }
    if positions is not None:
        matched = result.psfMatchedExposure.image.array
        half = 15
        fwhm = [
            psf_fwhm(matched[y - half : y + half + 1, x - half : x + half + 1])
            for y in positions
            for x in positions
        ]
        summary["matched_star_fwhm"] = [round(float(f), 4) for f in fwhm]
    if args.debug:
        summary["debug_images"] = _debug_pngs(args.outdir, template, science, result)
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description="Demonstrate the use of ModelPsfMatchTask")
    parser.add_argument("--debug", "-d", action="store_true", help="write PNG images")
    parser.add_argument("--template", "-t", help="template exposure (FITS)", default=None)
    parser.add_argument("--science", "-s", help="science exposure (FITS)", default=None)
    parser.add_argument("--outdir", default="model_psf_match_debug", help="--debug PNG folder")
    args = parser.parse_args(argv)
    summary = run(args)
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    try:
        main()
    except InputFileError as err:
        sys.exit(f"model_psf_match_example: {err}")
