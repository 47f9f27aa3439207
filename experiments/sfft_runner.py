"""Run SFFT's CPU backend on a template/science FITS pair and print its time and peak memory.

Standalone runner for the peer comparison in ``benchmark_cli.py``. It must run with the Python
interpreter of a separate virtual environment that holds SFFT (not the project's environment)::

    python -m venv /tmp/sfftwork/venv
    /tmp/sfftwork/venv/bin/pip install sfft sep "numpy<2.4" astropy scipy

(tested with sfft 1.7.3, sep 1.4.1, numpy 2.3.5, astropy 8.0.2, scipy 1.17.1, numba 0.68.1,
pyFFTW 0.15.1; ``numpy<2.4`` because sfft 1.7.3 still calls ``np.in1d`` in its Easy packets).

Usage::

    OPENBLAS_NUM_THREADS=1 /tmp/sfftwork/venv/bin/python experiments/sfft_runner.py \\
        TEMPLATE.fits SCIENCE.fits OUT.fits --fwhm-template F1 --fwhm-science F2

Steps:

1. Read both images (2-D primary HDU, sky not subtracted, no variance plane) with astropy.
2. Build the masked image pair that SFFT's ``Customized_Packet`` fits on, with ``sep``
   (Source Extractor as a library) instead of the SExtractor binary that SFFT's Easy packets
   need:

   * background map (``sep.Background``, 64 px boxes, 3 x 3 median filter) and detection on
     the background-subtracted image at 5 x the global background RMS, ``minarea=5``;
   * stars kept for the fit are those detected in *both* images (matched within 1 x max FWHM,
     so that transients and variables seen in one image only are left out), with no sep flag
     set (not blended or truncated), *isolated* (no other detection in either image within
     2 x the aperture radius), *unsaturated* (peak + background below the saturation level,
     from ``--saturation`` or the ``SATURATE`` header key; no cut if neither is given) and
     whose aperture lies at least one kernel half-width inside the frame;
   * the pixels "to fit" are the union of circular apertures of radius 3 x max FWHM around
     those stars. Every other pixel of the masked images is replaced by that image's sep
     background map, as SFFT's crowded-field recipe (``AutoCrowdedPrep``) does for images
     whose sky is not subtracted: the masked pixels then only constrain the smooth
     differential background, not the kernel. With fewer than 10 such stars the runner
     falls back to fitting on every pixel (all-pixel crowded mode) and says so on stderr.

3. Call ``sfft.CustomizedPacket.Customized_Packet.CP`` with KerPolyOrder = 3, BGPolyOrder = 2,
   ConstPhotRatio = True, kernel half-width ``GKerHW = round(2 x max(FWHM))``, backend
   ``'Numpy'`` (CPU: pyFFTW + numba), ``NUM_CPU_THREADS_4SUBTRACT`` = ``--threads`` (default:
   CPUs available) and the numba cache on (stored in sfft's ``__pycache__`` or in
   ``NUMBA_CACHE_DIR``; the first run compiles for 10-15 s). The sharper image (smaller FWHM)
   is convolved, as SFFT's ``ForceConv='AUTO'`` would do: with the template convolved,
   D = SCI - K * REF; with the science image convolved, D = K * SCI - REF (SFFT's sign
   convention, new sources positive either way).
4. Write D (float32, the science header plus the SFFT configuration keys) to OUT.fits.

SFFT's own messages go to stderr; stdout gets exactly one line ``JSON {...}`` with

* ``wall_s``: reading + masks + subtraction + writing, timed with ``time.perf_counter`` from
  the first line after the imports (interpreter start-up and imports are not included);
* ``subtract_s``: the ``Customized_Packet.CP`` call only (includes numba compilation or cache
  loading);
* ``peak_rss_mb``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss / 1024``;
* ``n_stars`` and ``fit_fraction``: the stars used and the fraction of pixels fitted.

Cost (2-core VM): with KerPolyOrder = 3 the Numpy backend builds 10² = 100 complex128 N x N
planes for one block of the normal equations and FFTs them out of place, so peak memory grows as
N²: 2.3 GB at 512², 7.7 GB at 1024² (about 48-61 s warm), an estimated 30 GB at 2048². The numba
kernels are compiled for each image size, so the first run at a new size pays 5-15 s of
compilation even with a warm cache for another size.
"""

import argparse
import contextlib
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np
import sep
from astropy.io import fits
from scipy.spatial import cKDTree
from sfft.CustomizedPacket import Customized_Packet

T_START = time.perf_counter()

KER_POLY_ORDER = 3
BG_POLY_ORDER = 2
CONST_PHOT_RATIO = True
MIN_STARS = 10


def read_image(path):
    """Read the primary HDU of a FITS file.

    Parameters
    ----------
    path : str
        FITS file with a 2-D image in its primary HDU.

    Returns
    -------
    data : numpy.ndarray
        The image as native-endian, C-contiguous float32 (what ``sep`` needs).
    header : astropy.io.fits.Header
        The primary header.
    """
    with fits.open(path, memmap=False) as hdul:
        data = np.ascontiguousarray(hdul[0].data, dtype=np.float32)
        header = hdul[0].header.copy()
    if data.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D primary HDU, got shape {data.shape}")
    return data, header


def detect(data, bad):
    """Estimate the background with sep and detect sources.

    Parameters
    ----------
    data : numpy.ndarray
        Image (float32, sky not subtracted).
    bad : numpy.ndarray or None
        Boolean mask of non-finite pixels, or None if there are none.

    Returns
    -------
    back : numpy.ndarray
        Background map (float32).
    objects : numpy.ndarray
        sep catalogue (structured array with ``x``, ``y``, ``peak``, ``flag``, ...).
    """
    work = data if bad is None else np.where(bad, 0.0, data).astype(np.float32)
    bkg = sep.Background(work, mask=bad, bw=64, bh=64, fw=3, fh=3)
    back = bkg.back()
    sep.set_extract_pixstack(max(300000, data.size // 10))
    objects = sep.extract(work - back, 5.0, err=bkg.globalrms, mask=bad, minarea=5)
    return back, objects


def select_stars(cat_t, cat_s, back_t, back_s, sat_t, sat_s, radius, margin, shape, match_r):
    """Pick isolated, unsaturated stars detected in both images.

    Parameters
    ----------
    cat_t, cat_s : numpy.ndarray
        sep catalogues of the template and the science image.
    back_t, back_s : numpy.ndarray
        Background maps, to turn sep's background-subtracted peaks into pixel values.
    sat_t, sat_s : float
        Saturation levels in image units (``inf`` for no cut).
    radius : float
        Aperture radius in pixels; neighbours closer than ``2 * radius`` spoil isolation.
    margin : float
        Apertures must lie this far (pixels) inside the frame.
    shape : tuple of int
        Image shape (ny, nx).
    match_r : float
        Matching radius between the two catalogues, in pixels.

    Returns
    -------
    numpy.ndarray
        (n, 2) array of (x, y) star positions (template catalogue, 0-based pixels).
    """
    if len(cat_t) == 0 or len(cat_s) == 0:
        return np.zeros((0, 2))
    xy_t = np.column_stack([cat_t["x"], cat_t["y"]])
    xy_s = np.column_stack([cat_s["x"], cat_s["y"]])
    tree_t, tree_s = cKDTree(xy_t), cKDTree(xy_s)
    dist, idx = tree_s.query(xy_t, distance_upper_bound=match_r)
    matched = np.isfinite(dist)
    idx = np.where(matched, idx, 0)
    # Isolation: only the star itself within 2 * radius, in each image.
    n_t = np.array([len(n) for n in tree_t.query_ball_point(xy_t, 2 * radius)])
    n_s = np.array([len(n) for n in tree_s.query_ball_point(xy_t, 2 * radius)])
    ny, nx = shape
    ix = np.clip(np.round(xy_t[:, 0]).astype(int), 0, nx - 1)
    iy = np.clip(np.round(xy_t[:, 1]).astype(int), 0, ny - 1)
    jx = np.clip(np.round(xy_s[idx, 0]).astype(int), 0, nx - 1)
    jy = np.clip(np.round(xy_s[idx, 1]).astype(int), 0, ny - 1)
    unsaturated = (cat_t["peak"] + back_t[iy, ix] < sat_t) & (
        cat_s["peak"][idx] + back_s[jy, jx] < sat_s
    )
    inside = (
        (xy_t[:, 0] >= radius + margin)
        & (xy_t[:, 0] <= nx - 1 - radius - margin)
        & (xy_t[:, 1] >= radius + margin)
        & (xy_t[:, 1] <= ny - 1 - radius - margin)
    )
    keep = (
        matched
        & (n_t == 1)
        & (n_s == 1)
        & (cat_t["flag"] == 0)
        & (cat_s["flag"][idx] == 0)
        & unsaturated
        & inside
    )
    return xy_t[keep]


def aperture_mask(xy, radius, shape):
    """Union of circular apertures.

    Parameters
    ----------
    xy : numpy.ndarray
        (n, 2) centres (x, y) in 0-based pixels.
    radius : float
        Aperture radius in pixels.
    shape : tuple of int
        Image shape (ny, nx).

    Returns
    -------
    numpy.ndarray
        Boolean mask, True inside any aperture.
    """
    mask = np.zeros(shape, dtype=bool)
    r = int(np.ceil(radius))
    for x, y in xy:
        x0, y0 = max(int(x) - r, 0), max(int(y) - r, 0)
        x1, y1 = min(int(x) + r + 2, shape[1]), min(int(y) + r + 2, shape[0])
        yy, xx = np.ogrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (xx - x) ** 2 + (yy - y) ** 2 <= radius**2
    return mask


def saturation_level(header, override):
    """Saturation level from the command line or the ``SATURATE`` key, else ``inf``."""
    if override is not None:
        return float(override)
    return float(header.get("SATURATE", np.inf))


def parse_args(argv=None):
    """Parse the command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    argparse.Namespace
        The parsed arguments.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("template", help="template (reference) FITS image")
    parser.add_argument("science", help="science FITS image")
    parser.add_argument("output", help="difference FITS image to write")
    parser.add_argument("--fwhm-template", type=float, required=True, help="template FWHM, px")
    parser.add_argument("--fwhm-science", type=float, required=True, help="science FWHM, px")
    parser.add_argument(
        "--saturation", type=float, default=None, help="saturation level (default: SATURATE key)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="NUM_CPU_THREADS_4SUBTRACT (default: CPUs available)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Run the subtraction and print the ``JSON`` line.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    fwhm = max(args.fwhm_template, args.fwhm_science)
    ker_hw = int(round(2.0 * fwhm))
    radius = 3.0 * fwhm
    force_conv = "REF" if args.fwhm_template <= args.fwhm_science else "SCI"

    ref, ref_header = read_image(args.template)
    sci, sci_header = read_image(args.science)
    if ref.shape != sci.shape:
        raise ValueError(f"shapes differ: {ref.shape} and {sci.shape}")
    bad = ~(np.isfinite(ref) & np.isfinite(sci))
    bad = bad if bad.any() else None

    back_t, cat_t = detect(ref, bad)
    back_s, cat_s = detect(sci, bad)
    stars = select_stars(
        cat_t,
        cat_s,
        back_t,
        back_s,
        saturation_level(ref_header, args.saturation),
        saturation_level(sci_header, args.saturation),
        radius,
        ker_hw,
        ref.shape,
        fwhm,
    )
    if len(stars) >= MIN_STARS:
        fit = aperture_mask(stars, radius, ref.shape)
        if bad is not None:
            fit &= ~bad
    else:
        print(
            f"sfft_runner: only {len(stars)} isolated stars; fitting on every pixel",
            file=sys.stderr,
        )
        fit = np.ones(ref.shape, dtype=bool) if bad is None else ~bad
    m_ref = np.where(fit, ref, back_t).astype(np.float32)
    m_sci = np.where(fit, sci, back_s).astype(np.float32)
    fit_fraction = float(fit.mean())
    del fit, back_t, back_s

    with tempfile.TemporaryDirectory(prefix="sfft-") as tmp:
        paths = [os.path.join(tmp, name) for name in ("mref.fits", "msci.fits")]
        for path, data in zip(paths, (m_ref, m_sci), strict=True):
            fits.PrimaryHDU(data).writeto(path)
        del m_ref, m_sci, data
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            _, diff = Customized_Packet.CP(
                FITS_REF=args.template,
                FITS_SCI=args.science,
                FITS_mREF=paths[0],
                FITS_mSCI=paths[1],
                ForceConv=force_conv,
                GKerHW=ker_hw,
                FITS_DIFF=None,
                KerPolyOrder=KER_POLY_ORDER,
                BGPolyOrder=BG_POLY_ORDER,
                ConstPhotRatio=CONST_PHOT_RATIO,
                BACKEND_4SUBTRACT="Numpy",
                NUM_CPU_THREADS_4SUBTRACT=args.threads,
                NUMBA_CACHE=True,
                VERBOSE_LEVEL=1,
            )
        subtract_s = time.perf_counter() - t0

    header = sci_header
    for key, value in (
        ("KERORDER", KER_POLY_ORDER),
        ("BGORDER", BG_POLY_ORDER),
        ("CPHOTR", str(CONST_PHOT_RATIO)),
        ("KERHW", ker_hw),
        ("CONVD", force_conv),
        ("NSTARFIT", len(stars)),
    ):
        header[key] = (value, "sfft_runner: SFFT Customized_Packet")
    fits.PrimaryHDU(np.ascontiguousarray(diff.T, dtype=np.float32), header).writeto(
        args.output, overwrite=True
    )
    wall_s = time.perf_counter() - T_START
    result = {
        "wall_s": round(wall_s, 3),
        "subtract_s": round(subtract_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "n_stars": int(len(stars)),
        "fit_fraction": round(fit_fraction, 4),
    }
    print("JSON", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
