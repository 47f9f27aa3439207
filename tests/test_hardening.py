"""Bad inputs through the public entry points: a documented result or a named error.

One table per entry point (issue 14's list). A run that succeeds must leave no NaN or Inf pixel
and no non-positive variance without a mask bit, and must not modify its inputs; an error must
be a named exception whose message says which input is wrong.
"""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from astropy.io import fits
from utils import scene_pair

from jaxdiffim import MaskedImage
from jaxdiffim.algorithms.alard_lupton import alard_lupton_subtract
from jaxdiffim.algorithms.config import SubtractionConfig
from jaxdiffim.cli.main import main
from jaxdiffim.errors import (
    InsufficientKernelSourcesError,
    InvalidInputError,
    VarianceScalingError,
)
from jaxdiffim.image import Exposure, ImagePsf
from jaxdiffim.tasks import AlardLuptonSubtractTask
from jaxdiffim.testing.synthetic import gaussian_stamp

N = 160
PSF_T, PSF_S = gaussian_stamp(25, 2.0), gaussian_stamp(25, 2.4)


def _pair():
    sci, tmpl = scene_pair(2.4, 2.0, size=N)
    c = (tmpl.image.shape[0] - N) // 2  # the template has a border: cut it to the science grid

    def masked(scene, cut):
        sl = np.s_[cut : cut + N, cut : cut + N]
        return MaskedImage(
            np.array(scene.image[sl], np.float32),
            np.array(scene.variance[sl], np.float32),
            np.zeros((N, N), np.int32),
        )

    return masked(tmpl, c), masked(sci, 0)


TEMPLATE, SCIENCE = _pair()


def _set(plane, where, value):
    """A change of one plane of a MaskedImage: ``plane[where] = value``."""

    def change(m):
        a = np.array(getattr(m, plane))
        a[where] = value
        return m._replace(**{plane: a})

    return change


def _crop(shape):
    return lambda m: MaskedImage(*(np.asarray(a)[: shape[0], : shape[1]] for a in m))


def _edge_stars(m, sigma, seed):
    """Stars only within 6 pixels of the border (no kernel stamp fits around them)."""
    from jaxdiffim.testing.synthetic import make_test_image

    rng = np.random.default_rng(0)
    side = rng.integers(0, 4, 12)
    t = rng.uniform(10, N - 10, 12)
    d = rng.uniform(2, 6, 12)
    x = np.select([side == 0, side == 1, side == 2], [d, N - 1 - d, t], t)
    y = np.select([side == 0, side == 1, side == 2], [t, t, d], N - 1 - d)
    scene = make_test_image(
        psf_sigma=sigma,
        noise_level=1.0,
        noise_seed=seed,
        size=(N, N),
        x=x,
        y=y,
        flux=np.full(12, 2e4),
    )
    return m._replace(image=np.asarray(scene.image, np.float32))


def _saturate_stars(m):
    """Every star's core flagged SAT (saturated-only stars)."""
    image = np.asarray(m.image)
    core = image > np.median(image) + 5.0 * np.sqrt(np.median(m.variance))
    return m._replace(mask=np.where(core, np.int32(2), m.mask))  # SAT is bit 1


BOX = np.s_[60:70, 60:70]
WEDGE = np.tril(np.ones((N, N), bool))[::-1] & (np.add.outer(np.arange(N), np.arange(N)) > 250)

# (name, template change, science change, template PSF, science PSF, expected)
# expected: None (runs), or (exception class, regex the message must match)
CASES = [
    ("nan pixels in science", None, _set("image", BOX, np.nan), None, None, None),
    ("inf pixels in template", _set("image", BOX, np.inf), None, None, None, None),
    ("pixels at +-3.3e38", None, _set("image", BOX, 3.3e38), None, None, None),
    ("nan variance pixels", None, _set("variance", BOX, np.nan), None, None, None),
    ("zero or negative variance", _set("variance", BOX, -1.0), None, None, None, None),
    ("NO_DATA wedge", None, _set("mask", WEDGE, 256), None, None, None),
    ("even-sized PSF", None, None, None, PSF_S[:24, :24], None),
    (
        "integral float mask",
        None,
        lambda m: m._replace(mask=m.mask.astype(float)),
        None,
        None,
        None,
    ),
    (
        "fractional float mask",
        None,
        lambda m: _set("mask", BOX, 0.5)(m._replace(mask=m.mask * 1.0)),
        None,
        None,
        (InvalidInputError, "science.mask must hold whole-number"),
    ),
    (
        "all pixels masked",
        None,
        _set("mask", np.s_[:, :], 1),
        None,
        None,
        (VarianceScalingError, "^science: No usable pixels"),
    ),
    (
        "zero variance plane",
        None,
        _set("variance", np.s_[:, :], 0.0),
        None,
        None,
        (VarianceScalingError, "^science: "),
    ),
    (
        "nan variance plane",
        _set("variance", np.s_[:, :], np.nan),
        None,
        None,
        None,
        (VarianceScalingError, "^template: "),
    ),
    (
        "no stars",
        lambda m: m._replace(image=np.random.default_rng(1).normal(size=(N, N)).astype("f4")),
        lambda m: m._replace(image=np.random.default_rng(2).normal(size=(N, N)).astype("f4")),
        None,
        None,
        (InsufficientKernelSourcesError, "built-in detection found"),
    ),
    (
        "stars only at the edge",
        lambda m: _edge_stars(m, 2.0, 7),
        lambda m: _edge_stars(m, 2.4, 6),
        None,
        None,
        (InsufficientKernelSourcesError, "built-in detection found"),
    ),
    (
        "saturated-only stars",
        _saturate_stars,
        _saturate_stars,
        None,
        None,
        (InsufficientKernelSourcesError, "built-in detection found"),
    ),
    ("16x16 images", _crop((16, 16)), _crop((16, 16)), None, None, (InvalidInputError, "16x16")),
    ("1xN images", _crop((1, N)), _crop((1, N)), None, None, (InvalidInputError, "too small")),
    (
        "mismatched shapes",
        _crop((N - 10, N)),
        None,
        None,
        None,
        (InvalidInputError, "one pixel grid"),
    ),
    ("all-zero PSF", None, None, np.zeros((25, 25)), None, (InvalidInputError, "^template_psf:")),
    ("nan PSF", None, None, None, np.full((25, 25), np.nan), (InvalidInputError, "^science_psf:")),
    (
        "zero-sum PSF",
        None,
        None,
        None,
        PSF_S - PSF_S.mean(),
        (InvalidInputError, "science_psf: .*positive sum"),
    ),
    (
        "oversized PSF",
        None,
        None,
        None,
        gaussian_stamp(2 * N + 1, 2.4),
        (InvalidInputError, "science_psf: .*larger than the images"),
    ),
]


def _unflagged_bad_pixels(masked):
    image, variance, mask = (np.asarray(a) for a in masked)
    bad = ~np.isfinite(image) | ~np.isfinite(variance) | ~(variance > 0)
    return int(np.count_nonzero(bad & (mask == 0)))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_functional_bad_inputs(case, caplog):
    _, t_change, s_change, t_psf, s_psf, expected = case
    t = t_change(TEMPLATE) if t_change else TEMPLATE
    s = s_change(SCIENCE) if s_change else SCIENCE
    copies = [np.array(a, copy=True) for a in (*t, *s)]
    args = (t, s, PSF_T if t_psf is None else t_psf, PSF_S if s_psf is None else s_psf, None)
    if expected is None:
        result = alard_lupton_subtract(*args, SubtractionConfig())
        assert _unflagged_bad_pixels(result.difference) == 0
    else:
        with pytest.raises(expected[0], match=expected[1]):
            alard_lupton_subtract(*args, SubtractionConfig())
    for before, after in zip(copies, (*t, *s), strict=True):  # inputs untouched
        np.testing.assert_array_equal(before, np.asarray(after))


def test_task_reads_masks_as_the_functional_path_does():
    """Float masks with whole-number values become int32 in both paths; others are refused."""
    exposure = Exposure(SCIENCE.image, SCIENCE.mask.astype(np.float32), SCIENCE.variance)
    assert exposure.mask.array.dtype == np.int32
    with pytest.raises(InvalidInputError, match="whole-number"):
        Exposure(SCIENCE.image, np.full((N, N), 0.5), SCIENCE.variance)


def test_task_with_an_even_psf():
    t = Exposure(TEMPLATE.image, TEMPLATE.mask, TEMPLATE.variance, psf=ImagePsf(PSF_T))
    s = Exposure(SCIENCE.image, SCIENCE.mask, SCIENCE.variance, psf=ImagePsf(PSF_S[:24, :24]))
    result = AlardLuptonSubtractTask().run(t, s)
    diff = result.difference
    masked = MaskedImage(diff.image.array, diff.variance.array, diff.mask.array)
    assert _unflagged_bad_pixels(masked) == 0


def test_scale_invariance():
    """×1e-6 … ×1e12 on both inputs: the difference scales with them, within float32 noise."""
    ref = alard_lupton_subtract(TEMPLATE, SCIENCE, PSF_T, PSF_S, None, SubtractionConfig())
    sigma = np.sqrt(ref.difference.variance)
    for f in (1e-6, 1e12):
        t = TEMPLATE._replace(image=TEMPLATE.image * f, variance=TEMPLATE.variance * f * f)
        s = SCIENCE._replace(image=SCIENCE.image * f, variance=SCIENCE.variance * f * f)
        out = alard_lupton_subtract(t, s, PSF_T, PSF_S, None, SubtractionConfig())
        diff = (out.difference.image / f - ref.difference.image) / sigma
        assert np.nanmax(np.abs(diff)) < 1e-3
        np.testing.assert_allclose(out.difference.variance / f**2, ref.difference.variance, 1e-3)
        np.testing.assert_array_equal(out.difference.mask, ref.difference.mask)


# ---------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The pair as afw-layout FITS files, with broken variants."""
    folder = tmp_path_factory.mktemp("hardening")
    paths = {}
    for name, m, psf in (("template", TEMPLATE, PSF_T), ("science", SCIENCE, PSF_S)):
        hdus = [fits.PrimaryHDU()]
        for ext, data in (("IMAGE", m.image), ("MASK", m.mask), ("VARIANCE", m.variance)):
            hdus.append(fits.ImageHDU(np.asarray(data), name=ext))
        hdus.append(fits.ImageHDU(psf.astype(np.float32), name="PSF"))
        paths[name] = str(folder / f"{name}.fits")
        fits.HDUList(hdus).writeto(paths[name])
    with fits.open(paths["science"]) as hdul:
        fits.HDUList([hdul[0], hdul["IMAGE"], hdul["MASK"]]).writeto(folder / "novar.fits")
        fits.HDUList([hdul[0], hdul["MASK"], hdul["VARIANCE"]]).writeto(folder / "noimage.fits")
        image = np.asarray(hdul["IMAGE"].data)
    data = pathlib.Path(paths["science"]).read_bytes()
    (folder / "truncated.fits").write_bytes(data[: len(data) // 2])
    (folder / "garbage.fits").write_bytes(np.random.default_rng(0).bytes(20000))
    # a plain integer image, big-endian (FITS' own byte order)
    fits.PrimaryHDU(np.round(image + 1000).astype(">i4")).writeto(folder / "int.fits")
    paths.update({p.stem: str(p) for p in folder.iterdir() if p.stem not in paths})
    paths["folder"] = str(folder)
    return paths


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return stop.value.code, capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{template}", "{science}", "-o", "{science}", "--overwrite"], "is the science file"),
        (["{template}", "{novar}", "-o", "{folder}/o.fits"], "no VARIANCE: it is incomplete"),
        (["{noimage}", "{science}", "-o", "{folder}/o.fits"], "no IMAGE: it is incomplete"),
        (["{template}", "{truncated}", "-o", "{folder}/o.fits"], "not a readable FITS file"),
        (["{garbage}", "{science}", "-o", "{folder}/o.fits"], "not a readable FITS file"),
        (["{template}", "{science}", "-o", "{folder}/o.fits", "--json", "{folder}/o.fits"], "is "),
    ],
    ids=["output-is-input", "no-variance", "no-image", "truncated", "garbage", "json-is-output"],
)
def test_cli_refuses(files, capsys, argv, message):
    before = {p: os.path.getmtime(p) for p in (files["science"], files["template"])}
    code, err = _cli(["subtract", *(a.format(**files) for a in argv)], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert before == {p: os.path.getmtime(p) for p in before}


def test_cli_narrow_reference_refused(files, capsys):
    argv = [
        "match-psf",
        files["science"],
        "--reference-fwhm",
        "2",
        "-o",
        files["folder"] + "/m.fits",
    ]
    code, err = _cli(argv, capsys)
    assert code == 2 and "narrower than the exposure's PSF" in err


def test_cli_options_after_the_subcommand_and_integer_files(files, capsys, caplog):
    out = os.path.join(files["folder"], "int-diff.fits")
    argv = ["subtract", files["template"], files["int"], "-o", out, "-v", "--science-psf"]
    argv.append(files["science"])  # its PSF extension is not used for a plain image: any PSF file
    with fits.open(files["science"]) as hdul:
        psf = os.path.join(files["folder"], "psf.fits")
        fits.PrimaryHDU(hdul["PSF"].data).writeto(psf, overwrite=True)
    argv[-1] = psf
    assert main(argv) == 0
    assert "Wrote" in caplog.text  # -v after the subcommand: progress at INFO
    with fits.open(out) as hdul:
        assert np.isfinite(hdul["IMAGE"].data).all()


def _pairs_file(files, name, sciences):
    """A --pairs list of the template against each of ``sciences``, and its output folder."""
    pairs = os.path.join(files["folder"], f"{name}.txt")
    with open(pairs, "w") as fh:
        fh.writelines(f"{files['template']} {files[s]}\n" for s in sciences)
    return pairs, os.path.join(files["folder"], name)


def test_pairs_resume_with_skip_existing(files, capsys):
    pairs, outdir = _pairs_file(files, "pairs", ["science", "novar"])
    assert main(["subtract", "--pairs", pairs, "--outdir", outdir]) == 1
    written = sorted(os.listdir(outdir))
    mtimes = [os.path.getmtime(os.path.join(outdir, n)) for n in written]
    capsys.readouterr()
    assert main(["subtract", "--pairs", pairs, "--outdir", outdir, "--skip-existing"]) == 1
    report = capsys.readouterr().out
    assert '"skipped": 1' in report and '"succeeded": 0' in report
    assert mtimes == [os.path.getmtime(os.path.join(outdir, n)) for n in written]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_leaves_no_partial_files(tmp_path, sig):
    """A demo stopped while it writes: one line, exit 128 + signal, no files; a rerun works."""
    outdir = tmp_path / "demo"
    cmd = [sys.executable, "-m", "jaxdiffim", "demo", "--size", "512", "--outdir", str(outdir)]
    env = {**os.environ, "JAXDIFFIM_CACHE_DIR": "off"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not any(
        f.name.startswith(".jaxdiffim") for f in (outdir.iterdir() if outdir.exists() else [])
    ):
        time.sleep(0.05)
    time.sleep(0.5)  # inside the simulation or the subtraction
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + sig, err
    assert err.decode().strip().splitlines()[-1].startswith("jaxdiffim: stopped by ")
    assert list(outdir.iterdir()) == []


def test_widened_selection_is_warned_once_in_best_mode(caplog):
    """mode=best sets up both directions; the warning is for the one it fits, once."""
    config = SubtractionConfig(mode="best", detection_threshold_max=10.5)
    with caplog.at_level("WARNING"):
        alard_lupton_subtract(TEMPLATE, SCIENCE, PSF_T, PSF_S, None, config)
    assert caplog.text.count("no upper S/N limit") == 1


def test_pairs_warnings_are_logged_once(files, capsys):
    """A truncated file in --pairs: astropy's warning once, on its own line, then the failure."""
    pairs, outdir = _pairs_file(files, "pairs-warn", ["truncated"])
    assert main(["subtract", "--pairs", pairs, "--outdir", outdir]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if "truncated" in line]
    assert sum(line.startswith("failed: ") for line in lines) == 1
    warnings = [line for line in lines if not line.startswith("failed: ")]
    assert len(warnings) <= 1 and all(line.startswith("WARNING") for line in warnings)


def _wcs(crval_ra):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [crval_ra, -30.0]
    w.wcs.crpix = [N / 2, N / 2]
    w.wcs.cdelt = [-0.27 / 3600, 0.27 / 3600]
    return w


@pytest.mark.parametrize(
    "template_kwargs, message",
    [
        ({"xy0": (20, 0)}, "does not contain the science bbox"),
        ({"wcs": _wcs(150.001)}, "WCSs differ by"),
    ],
    ids=["xy0", "wcs"],
)
def test_task_refuses_mismatched_grids(template_kwargs, message):
    t = Exposure(
        TEMPLATE.image, TEMPLATE.mask, TEMPLATE.variance, psf=ImagePsf(PSF_T), **template_kwargs
    )
    s = Exposure(
        SCIENCE.image, SCIENCE.mask, SCIENCE.variance, psf=ImagePsf(PSF_S), wcs=_wcs(150.0)
    )
    with pytest.raises(InvalidInputError, match=message):
        AlardLuptonSubtractTask().run(t, s)
