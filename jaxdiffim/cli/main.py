"""The ``jaxdiffim`` command: ``subtract`` (one pair or a list of pairs), ``match-psf``, ``demo``.

Bad input (a missing file, mismatched shapes, no way to get a variance, too few stars, a
non-finite PSF, an existing output) ends the command with exit status 2 and one line on
stderr that says what to change, never a traceback. With ``--pairs``, a pair that fails is
reported and skipped, and the exit status is 1 when any pair failed.
"""

import json
import logging
import os
import signal
import sys
import threading

from .arguments import build_parser
from .process import PROGRESS, configure_logging, prefer_memory_schedule, progress, stop

__all__ = ["main"]

log = logging.getLogger(__name__)


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
    if args.skip_existing and os.path.exists(args.output):
        print(json.dumps({"output": args.output, "skipped": "the output exists already"}))
        return 0
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
    results, failures, skipped = [], [], []
    progress(0, len(pairs), 0)
    for i, parts in enumerate(pairs, 1):
        template, science = parts[:2]
        name = (
            parts[2] if len(parts) == 3 else f"diff_{_stem(science)}_minus_{_stem(template)}.fits"
        )
        output = os.path.join(args.outdir, name)
        summary_path = os.path.splitext(output)[0] + ".json"
        if args.skip_existing and os.path.exists(output) and os.path.exists(summary_path):
            skipped.append(output)  # written by an earlier run (the JSON is written last)
            progress(i, len(pairs), len(failures), len(skipped))
            continue
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
                summary_path=summary_path,
            )
            results.append(summary)
        except Exception as err:  # noqa: BLE001 - a failed pair is reported, the rest still run
            log.debug("pair %s %s failed", template, science, exc_info=True)
            failures.append({"template": template, "science": science, "error": _one_line(err)})
            sys.stderr.write(f"\nfailed: {template} {science}: {_one_line(err)}\n")
            PROGRESS["drawn"] = False
        progress(i, len(pairs), len(failures), len(skipped))
    sys.stderr.write("\n")
    PROGRESS["drawn"] = False
    summary = {"succeeded": len(results), "skipped": len(skipped), "failed": failures}
    print(json.dumps(summary, indent=2))
    return 1 if failures else 0


def _one_line(err):
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}"


def main(argv=None):
    """Entry point of the ``jaxdiffim`` command; returns the exit status.

    Called without ``argv`` (as the command), SIGTERM, SIGINT and SIGHUP remove the outputs
    being written and end the process (:func:`jaxdiffim.cli.process.stop`), and XLA:CPU
    schedules for memory (:func:`jaxdiffim.cli.process.prefer_memory_schedule`); ``main(argv)``
    leaves the caller's signal handling and XLA's flags alone.
    """
    if argv is None:  # the command's own process: nothing has started JAX's backend yet
        prefer_memory_schedule()
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    handlers = {}
    # as the command only (argv from sys.argv): the handler ends the process, which a caller
    # of main(argv) in its own process (a notebook, a test) must not have done to it on Ctrl-C
    if argv is None and threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGINT", "SIGHUP"):
            if hasattr(signal, name):
                handlers[name] = signal.signal(getattr(signal, name), stop)
    try:
        return _run(parser, args)
    finally:
        for name, previous in handlers.items():
            signal.signal(getattr(signal, name), previous)


def _run(parser, args):
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

            summary = run_demo(
                args.outdir,
                size=args.size,
                overwrite=args.overwrite,
                skip_existing=args.skip_existing,
            )
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
