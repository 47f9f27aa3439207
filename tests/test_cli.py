"""The ``jaxdiffim`` command: bad input gives one clear line, --pairs skips failures, the demo."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from utils import decam_path

from jaxdiffim.algorithms.psf_estimate import estimate_psf
from jaxdiffim.cli.demo import run_demo
from jaxdiffim.cli.main import main
from jaxdiffim.image import ImagePsf
from jaxdiffim.io import read_exposure
from jaxdiffim.testing.synthetic import gaussian_stamp


def fails_cleanly(argv, capsys, match):
    """Exit status 2 and exactly one stderr line naming the problem, no traceback."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxdiffim: error:") and match in lines[0], lines[0]
    assert "Traceback" not in err


def test_missing_file_via_python_m(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxdiffim",
            "subtract",
            "nope.fits",
            decam_path("18b"),
            "-o",
            "d.fits",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "jaxdiffim: error: InputFileError: Image file 'nope.fits' does not exist."
    ]
    assert not (tmp_path / "d.fits").exists()


def test_bad_inputs_one_line_each(tmp_path, capsys):
    out = str(tmp_path / "d.fits")
    # wrong shapes: a template smaller than the science image
    small = tmp_path / "small.fits"
    fits.PrimaryHDU(fits.getdata(decam_path("04b"))[:100, :100]).writeto(small)
    fails_cleanly(["subtract", str(small), decam_path("18b"), "-o", out], capsys, "cover")
    # no variance and no way to estimate one: a constant image without header keys
    flat = tmp_path / "flat.fits"
    fits.PrimaryHDU(np.ones((256, 256))).writeto(flat)
    fails_cleanly(["subtract", str(flat), decam_path("18b"), "-o", out], capsys, "variance")
    # a non-finite PSF file
    psf = gaussian_stamp(21, 2.0)
    psf[3, 3] = np.inf
    bad_psf = tmp_path / "psf.fits"
    fits.PrimaryHDU(psf).writeto(bad_psf)
    argv = [
        "subtract",
        decam_path("04b"),
        decam_path("18b"),
        "-o",
        out,
        "--science-psf",
        str(bad_psf),
    ]
    fails_cleanly(argv, capsys, "non-finite")
    # usage errors
    fails_cleanly(["subtract", decam_path("04b"), decam_path("18b")], capsys, "-o DIFF.fits")
    argv = ["subtract", "--pairs", str(small), "--outdir", str(tmp_path), "--sources", "c.csv"]
    fails_cleanly(argv, capsys, "--sources apply to one pair")
    fails_cleanly(
        ["subtract", "--pairs", str(tmp_path / "none.txt"), "--outdir", "x"],
        capsys,
        "does not exist",
    )
    assert not os.path.exists(out)


def test_too_few_stars(tmp_path, capsys):
    """OBS18a as template, OBS04a (5.2 px seeing, 4 stars at S/N > 10) as science.

    With no options the selection is widened once and the pair subtracts; asking for more
    kernel sources than there are fails cleanly, naming the selection and how to set it.
    """
    out = tmp_path / "d.fits"
    argv = ["subtract", decam_path("18a"), decam_path("04a"), "-o", str(out)]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["n_kernel_sources_used"] >= 3
    argv = ["subtract", decam_path("18a"), decam_path("04a"), "-o", str(tmp_path / "e.fits")]
    fails_cleanly(argv + ["-c", "min_kernel_sources=20"], capsys, "kernel-source selection")
    fails_cleanly(argv + ["-c", "minKernelSources=20"], capsys, "-c NAME=VALUE")


def test_the_two_psf_estimates_report_errors_in_order(monkeypatch):
    """The command estimates both PSFs at once (the science's in a thread) and reports the
    template's error first, as one after the other would; a science error alone is raised."""
    import jaxdiffim.cli.subtract as cli_subtract
    from jaxdiffim.errors import InvalidInputError

    done = []

    def fake(exp, name):
        done.append(name)
        if exp == "bad":
            raise InvalidInputError(f"{name}: too few stars")
        return exp

    monkeypatch.setattr(cli_subtract, "ensure_psf", fake)
    with pytest.raises(InvalidInputError, match="template"):
        cli_subtract._ensure_psfs(("bad", "template"), ("bad", "science"))
    assert sorted(done) == ["science", "template"]  # the thread's finished too
    with pytest.raises(InvalidInputError, match="science"):
        cli_subtract._ensure_psfs(("good", "template"), ("bad", "science"))
    cli_subtract._ensure_psfs(("good", "template"), ("good", "science"))


def test_existing_output_is_kept(tmp_path, capsys):
    out = tmp_path / "d.fits"
    out.write_bytes(b"keep me")
    fails_cleanly(
        ["subtract", decam_path("04b"), decam_path("18b"), "-o", str(out)], capsys, "--overwrite"
    )
    assert out.read_bytes() == b"keep me"


def test_pairs_skip_failures(tmp_path, capsys):
    listing = tmp_path / "pairs.txt"
    missing = tmp_path / "missing.fits"
    t, s = decam_path("04b"), decam_path("18b")
    listing.write_text(f"# template science\n{t} {s}\n{missing} {s}\n")
    outdir = tmp_path / "out"
    code = main(["subtract", "--pairs", str(listing), "--outdir", str(outdir)])
    assert code == 1
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["succeeded"] == 1
    assert len(report["failed"]) == 1 and "missing.fits" in report["failed"][0]["template"]
    assert "2/2 pairs, 1 failed" in captured.err
    written = sorted(os.listdir(outdir))
    assert written == [
        "diff_DEC-OBS18b.mini_minus_DEC-OBS04b.mini.fits",
        "diff_DEC-OBS18b.mini_minus_DEC-OBS04b.mini.json",
    ]
    diff = read_exposure(outdir / written[0])
    assert np.isfinite(diff.image.array).all()


def test_demo_writes_everything(tmp_path):
    summary = run_demo(tmp_path / "demo", size=256)
    for name in ("template.fits", "science.fits", "difference.fits", "demo.png", "summary.json"):
        assert os.path.exists(summary["outputs"][name])
    with open(summary["outputs"]["demo.png"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert summary["mode"] == "convolveTemplate"
    assert summary["kernel_sum"] == pytest.approx(summary["kernel_sum_truth"], rel=0.03)
    assert min(summary["transient_peak_snr"]) > 8
    assert summary["sky_noise_in_sigma"] == pytest.approx(1.0, abs=0.1)
    with pytest.raises(FileExistsError):
        run_demo(tmp_path / "demo", size=256)


def test_match_psf_on_decam(tmp_path, capsys):
    """OBS18b (4.2 px seeing) convolved to a 6 px Gaussian PSF: its stars get 6 px within 5 %."""
    out = tmp_path / "matched.fits"
    argv = ["match-psf", decam_path("18b"), "--reference-fwhm", "6.0", "-o", str(out)]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["input_psf_fwhm"] < 4.5 and summary["kernel_sum"] == pytest.approx(1.0)
    matched = read_exposure(out)
    assert matched.psf.computeFwhm() == pytest.approx(6.0, rel=1e-3)
    mi = matched.maskedImage
    measured = ImagePsf(estimate_psf(mi.image, mi.variance, mi.mask, fwhm_guess=6.0))
    assert measured.computeFwhm() == pytest.approx(6.0, rel=0.05)
    fails_cleanly(argv, capsys, "--overwrite")  # the output exists now
    flat = tmp_path / "flat.fits"
    fits.PrimaryHDU(np.random.default_rng(0).normal(size=(64, 64))).writeto(flat)
    fails_cleanly(
        ["match-psf", str(flat), "--reference-fwhm", "5", "-o", str(tmp_path / "x.fits")],
        capsys,
        "cannot estimate a PSF",
    )


def test_the_difference_psf_is_built_on_the_better_known_psf():
    """convolveScience only: a given template PSF beats an estimate; between two estimates the
    deeper image's (lower noise in science flux units) is used; a science PSF that came with
    the inputs is always kept, and so is the science PSF in convolveTemplate mode (ip_diffim's
    choice)."""
    from types import SimpleNamespace

    from jaxdiffim.cli.subtract import _template_psf_is_better

    def exposure(sigma):
        variance = SimpleNamespace(array=np.full((8, 8), sigma**2))
        return SimpleNamespace(variance=variance, psf=object())

    def result(kernel_sum, mode="convolveScience"):
        kernel = SimpleNamespace(getKernelSum=lambda: kernel_sum)
        return SimpleNamespace(mode=mode, psfMatchingKernel=kernel)

    deep, shallow = exposure(1.0), exposure(2.0)
    assert _template_psf_is_better(deep, shallow, (False, False), result(0.9))
    assert not _template_psf_is_better(shallow, deep, (False, False), result(0.9))
    assert not _template_psf_is_better(deep, shallow, (False, True), result(0.9))
    assert _template_psf_is_better(shallow, deep, (True, False), result(0.9))
    convolved_template = result(0.9, "convolveTemplate")
    assert not _template_psf_is_better(deep, shallow, (False, False), convolved_template)
    # the kernel takes the science image to the template's flux (its sum: template/science)
    assert _template_psf_is_better(deep, deep, (False, False), result(2.0))
    assert not _template_psf_is_better(deep, deep, (False, False), result(0.8))


def test_the_command_schedules_xla_for_memory(monkeypatch):
    """As the command (no argv), XLA:CPU is asked for its depth-first schedule unless the user's
    XLA_FLAGS name that option; main(argv) leaves XLA_FLAGS alone."""
    from jaxdiffim.cli import process

    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    process.prefer_memory_schedule()
    assert os.environ["XLA_FLAGS"] == (
        "--xla_force_host_platform_device_count=2 " + process.MEMORY_SCHEDULE
    )
    mine = "--xla_cpu_enable_concurrency_optimized_scheduler=true"
    monkeypatch.setenv("XLA_FLAGS", mine)
    process.prefer_memory_schedule()
    assert os.environ["XLA_FLAGS"] == mine
    monkeypatch.delenv("XLA_FLAGS")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "XLA_FLAGS" not in os.environ
