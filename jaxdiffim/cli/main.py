"""The ``jaxdiffim`` command: ``subtract`` (one pair or a list of pairs), ``match-psf``, ``demo``.

Bad input (a missing file, mismatched shapes, no way to get a variance, too few stars, a
non-finite PSF, an existing output) ends the command with exit status 2 and one line on
stderr that says what to change, never a traceback. With ``--pairs``, a pair that fails is
reported and skipped, and the exit status is 1 when any pair failed.
"""

import argparse
import json
import logging
import os
import sys

__all__ = ["main"]

log = logging.getLogger(__name__)


def _plane_args(p, who):
    g = p.add_argument_group(f"{who} planes (for plain single-HDU images)")
    g.add_argument(f"--{who}-variance", metavar="FITS", help=f"{who} variance image")
    g.add_argument(f"--{who}-weight", metavar="FITS", help=f"{who} inverse-variance image")
    g.add_argument(f"--{who}-sigma", metavar="FITS", help=f"{who} noise (sigma) image")
    g.add_argument(f"--{who}-mask", metavar="FITS", help=f"{who} integer mask image")


def _parser():
    parser = argparse.ArgumentParser(
        prog="jaxdiffim",
        description="Alard-Lupton PSF-matched image subtraction (a JAX port of lsst.ip.diffim).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
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
        help="subtract each image's smooth sky before the fit and the fitted differential "
        "background after it (default: yes, for images whose sky has not been subtracted; "
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
    _plane_args(s, "template")
    _plane_args(s, "science")

    m = sub.add_parser(
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

    sub.add_parser("config", help="list every setting of 'subtract -c' with its default (JSON)")

    d = sub.add_parser("demo", help="simulate a realistic pair, subtract it, write FITS + PNG")
    d.add_argument("--outdir", default="jaxdiffim-demo", metavar="DIR")
    d.add_argument("--size", type=int, default=512, help="image side in pixels (>= 128)")
    d.add_argument("--overwrite", action="store_true")
    return parser


class _UsageError(Exception):
    pass


def _value(text):
    """A ``-c`` value: a Python/JSON literal, ``a,b,c`` for a list, else the string itself."""
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if "," in text:
        return tuple(_value(part) for part in text.split(",") if part.strip())
    return text


def _config(args):
    """The SubtractionConfig of a ``subtract`` command line."""
    from .subtract import file_config

    overrides = {}
    if args.mode:
        overrides["mode"] = args.mode
    if args.kernel:
        overrides["kernel.kernel_basis"] = {"al": "alard-lupton", "df": "delta-function"}[
            args.kernel
        ]
    if args.no_decorrelate:
        overrides["do_decorrelation"] = False
    if args.subtract_background is not None:
        overrides["do_subtract_background"] = args.subtract_background
        overrides["subtract_sky"] = args.subtract_background
    if args.spatial_kernel_order is not None:
        overrides["kernel.spatial_kernel_order"] = args.spatial_kernel_order
    if args.spatial_bg_order is not None:
        overrides["kernel.spatial_bg_order"] = args.spatial_bg_order
    for item in args.config:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise _UsageError(f"-c expects NAME=VALUE, got {item!r}")
        overrides[name.strip()] = _value(text)
    return file_config(overrides)


def _list_config():
    import functools

    from ..algorithms.config import config_paths
    from .subtract import file_config

    config = file_config()
    values = {}
    for path in config_paths(config):
        value = functools.reduce(getattr, path.split("."), config)
        values[path] = list(value) if isinstance(value, tuple) else value
    print(json.dumps(values, indent=2))
    return 0


def _planes(args, who):
    out = {}
    for kind in ("variance", "weight", "sigma", "mask"):
        value = getattr(args, f"{who}_{kind}")
        if value:
            out[kind] = value
    return out


def _subtract_one(args):
    from .subtract import subtract_files

    if not (args.template and args.science and args.output):
        raise _UsageError(
            "subtract needs TEMPLATE SCIENCE -o DIFF.fits (or --pairs LIST --outdir DIR)"
        )
    summary = subtract_files(
        args.template,
        args.science,
        args.output,
        config=_config(args),
        score=args.score,
        overwrite=args.overwrite,
        sources=args.sources,
        template_psf=args.template_psf,
        science_psf=args.science_psf,
        template_planes=_planes(args, "template"),
        science_planes=_planes(args, "science"),
        summary_path=args.json,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _read_pairs(path):
    if not os.path.exists(path):
        raise _UsageError(f"pairs file {path!r} does not exist")
    pairs = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) not in (2, 3):
                raise _UsageError(f"{path}:{n}: expected 'TEMPLATE SCIENCE [OUTPUT]', got {line!r}")
            pairs.append(parts)
    if not pairs:
        raise _UsageError(f"pairs file {path!r} lists no pairs")
    return pairs


def _progress(i, n, failed):
    stream = sys.stderr
    width = 30
    done = int(width * i / n)
    stream.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} pairs, {failed} failed")
    stream.flush()


def _stem(path):
    """File name without directory and without ``.gz``/``.fz`` and ``.fits``/``.fit``."""
    name = os.path.basename(path)
    for ext in (".gz", ".fz", ".fits", ".fit"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
    return name


def _subtract_pairs(args):
    from .subtract import subtract_files

    if args.template or args.science or args.output:
        raise _UsageError("give either TEMPLATE SCIENCE -o OUT or --pairs LIST --outdir DIR")
    if not args.outdir:
        raise _UsageError("--pairs needs --outdir DIR")
    per_pair = ["sources", "json"] + [
        f"{who}_{kind}"
        for who in ("template", "science")
        for kind in ("variance", "weight", "sigma", "mask")
    ]
    given = [name for name in per_pair if getattr(args, name)]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise _UsageError(f"{flags} apply to one pair; with --pairs each pair writes its JSON")
    pairs = _read_pairs(args.pairs)
    os.makedirs(args.outdir, exist_ok=True)
    config = _config(args)
    results, failures = [], []
    _progress(0, len(pairs), 0)
    for i, parts in enumerate(pairs, 1):
        template, science = parts[:2]
        name = (
            parts[2] if len(parts) == 3 else f"diff_{_stem(science)}_minus_{_stem(template)}.fits"
        )
        output = os.path.join(args.outdir, name)
        try:
            summary = subtract_files(
                template,
                science,
                output,
                config=config,
                score=args.score,
                overwrite=args.overwrite,
                template_psf=args.template_psf,
                science_psf=args.science_psf,
                summary_path=os.path.splitext(output)[0] + ".json",
            )
            results.append(summary)
        except Exception as err:  # noqa: BLE001 - a failed pair is reported, the rest still run
            log.debug("pair %s %s failed", template, science, exc_info=True)
            failures.append({"template": template, "science": science, "error": _one_line(err)})
            sys.stderr.write(f"\nfailed: {template} {science}: {_one_line(err)}\n")
        _progress(i, len(pairs), len(failures))
    sys.stderr.write("\n")
    print(json.dumps({"succeeded": len(results), "failed": failures}, indent=2))
    return 1 if failures else 0


def _one_line(err):
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"


def main(argv=None):
    """Entry point of the ``jaxdiffim`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from ..cache import enable_compilation_cache

    enable_compilation_cache()  # before any compilation: a second run loads the programs
    from ..errors import (
        BadSubtractionError,
        JaxDiffimError,
        KernelFitError,
        NoWorkFound,
        VarianceScalingError,
    )

    ALGORITHM_ERRORS = (BadSubtractionError, KernelFitError, NoWorkFound, VarianceScalingError)

    try:
        if args.command == "demo":
            if args.size < 128:
                raise _UsageError("--size must be at least 128 pixels")
            from .demo import run_demo

            summary = run_demo(args.outdir, size=args.size, overwrite=args.overwrite)
            print(json.dumps(summary, indent=2))
            return 0
        if args.command == "config":
            return _list_config()
        if args.command == "match-psf":
            from .match_psf import match_psf_file

            summary = match_psf_file(
                args.exposure,
                args.output,
                reference_fwhm=args.reference_fwhm,
                reference_psf=args.reference_psf,
                psf=args.psf,
                kernel_sum=args.kernel_sum,
                kernel_size=args.kernel_size,
                overwrite=args.overwrite,
            )
            print(json.dumps(summary, indent=2))
            return 0
        if args.pairs:
            return _subtract_pairs(args)
        return _subtract_one(args)
    except _UsageError as err:
        parser.exit(2, f"jaxdiffim: error: {err}\n")
    except (JaxDiffimError, OSError, ValueError) as err:
        hint = ""
        if isinstance(err, ALGORITHM_ERRORS) and args.command == "subtract":
            hint = " (any setting named here: -c NAME=VALUE; 'jaxdiffim config' lists them)"
        parser.exit(2, f"jaxdiffim: error: {_one_line(err)}{hint}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
