"""The ``jaxdiffim`` command's arguments (argparse); :mod:`jaxdiffim.cli.main` runs them.

Options of the command itself (``-v``) are accepted before or after the subcommand.
"""

import argparse
import functools

__all__ = ["build_parser"]


def _plane_args(p, who):
    g = p.add_argument_group(f"{who} planes (for plain single-HDU images)")
    g.add_argument(f"--{who}-variance", metavar="FITS", help=f"{who} variance image")
    g.add_argument(f"--{who}-weight", metavar="FITS", help=f"{who} inverse-variance image")
    g.add_argument(f"--{who}-sigma", metavar="FITS", help=f"{who} noise (sigma) image")
    g.add_argument(f"--{who}-mask", metavar="FITS", help=f"{who} integer mask image")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="jaxdiffim",
        description="Alard-Lupton PSF-matched image subtraction (a JAX port of lsst.ip.diffim).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    # the same option after the subcommand (its default leaves the one before it alone)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add = functools.partial(sub.add_parser, parents=[common])

    s = add(
        "subtract",
        help="subtract TEMPLATE from SCIENCE (or every pair of --pairs)",
        description="Inputs: afw MaskedImage FITS files, or plain images (variance estimated "
        "from GAIN/RDNOISE/AVSKY or the pixels when no plane is given). The difference is "
        "written in afw's layout on the science pixel grid.",
    )
    s.add_argument("template", nargs="?", help="template FITS file")
    s.add_argument("science", nargs="?", help="science FITS file")
    s.add_argument("-o", "--output", metavar="DIFF.fits", help="difference image to write")
    s.add_argument("--pairs", metavar="LIST.txt", help="file of 'TEMPLATE SCIENCE' lines")
    s.add_argument("--outdir", metavar="DIR", help="output directory for --pairs")
    s.add_argument("--sources", metavar="CAT", help="kernel-source catalogue (any astropy table)")
    s.add_argument(
        "--mode",
        choices=("best", "auto", "convolveTemplate", "convolveScience"),
        help="which image to convolve (default best: the direction whose kernel predicts "
        "held-out stars best; auto: ip_diffim's rule, the image with the smaller PSF)",
    )
    s.add_argument("--template-psf", metavar="PSF.fits", help="template PSF stamp")
    s.add_argument("--science-psf", metavar="PSF.fits", help="science PSF stamp")
    s.add_argument("--kernel", choices=("al", "df"), help="basis (default al)")
    s.add_argument("--no-decorrelate", action="store_true", help="skip decorrelation")
    s.add_argument(
        "--subtract-background",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subtract each image's smooth sky before the fit and the difference's residual "
        "sky after it (default: yes, for images whose sky has not been subtracted; "
        "--no-subtract-background keeps both, as ip_diffim does)",
    )
    s.add_argument("--score", action="store_true", help="write the score (preconvolved) image")
    s.add_argument(
        "--spatial-kernel-order",
        type=int,
        metavar="N",
        help="highest spatial order of the kernel (lowered when too few kernel sources)",
    )
    s.add_argument("--spatial-bg-order", type=int, metavar="N", help="same, background")
    s.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set any setting, by its SubtractionConfig name (min_kernel_sources, "
        "kernel.spatial_kernel_order) or ip_diffim's Task name (minKernelSources); "
        "repeatable; 'jaxdiffim config' lists them with their defaults",
    )
    s.add_argument("--json", metavar="SUMMARY.json", help="also write the summary as JSON")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    s.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip pairs whose difference image exists already (resume an interrupted --pairs)",
    )
    _plane_args(s, "template")
    _plane_args(s, "science")

    m = add(
        "match-psf",
        help="convolve an exposure so that its PSF becomes a reference PSF (ModelPsfMatchTask)",
    )
    m.add_argument("exposure", help="exposure FITS file")
    ref = m.add_mutually_exclusive_group(required=True)
    ref.add_argument("--reference-fwhm", type=float, metavar="F", help="Gaussian, FWHM in pixels")
    ref.add_argument("--reference-psf", metavar="PSF.fits", help="reference PSF stamp")
    m.add_argument("-o", "--output", required=True, metavar="OUT.fits")
    m.add_argument("--psf", metavar="PSF.fits", help="the exposure's PSF (default: file or stars)")
    m.add_argument(
        "--kernel-sum",
        type=float,
        default=1.0,
        metavar="S",
        help="sum of the reported kernel (ip_diffim's kernelSum); the exposure is convolved with "
        "the normalised kernel, so its flux scale does not change",
    )
    m.add_argument("--kernel-size", type=int, metavar="N", help="odd kernel width (default 11)")
    m.add_argument("--overwrite", action="store_true")

    add("config", help="list every setting of 'subtract -c' with its default (JSON)")

    d = add("demo", help="simulate a realistic pair, subtract it, write FITS + PNG")
    d.add_argument("--outdir", default="jaxdiffim-demo", metavar="DIR")
    d.add_argument("--size", type=int, default=512, help="image side in pixels (>= 128)")
    d.add_argument("--overwrite", action="store_true")
    d.add_argument(
        "--skip-existing", action="store_true", help="keep a complete earlier demo in DIR"
    )
    return parser
