"""The scripts in experiments/ that the issues ask for run and do what they say."""

import importlib.util
import os

import numpy as np
import pytest

from jaxdiffim.errors import InputFileError

HERE = os.path.dirname(__file__)


def load(name):
    path = os.path.join(HERE, "..", "experiments", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_model_psf_match_example(tmp_path, capsys):
    example = load("model_psf_match_example")
    summary = example.main(["--debug", "--outdir", str(tmp_path)])
    # the science stars (sigma 2) now have the template's PSF (sigma 3)
    np.testing.assert_allclose(
        summary["matched_star_fwhm"], summary["template_psf_fwhm"], rtol=0.02
    )
    assert summary["science_psf_fwhm"] < 0.7 * summary["template_psf_fwhm"]
    names = sorted(os.path.basename(p) for p in summary["debug_images"])
    assert names == ["kernel_grid.png", "matched_science.png", "science.png", "template.png"]
    for path in summary["debug_images"]:
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert '"n_cells": 25' in capsys.readouterr().out
    assert issubclass(example.MyModelPsfMatchTask, example.ModelPsfMatchTask)


def test_model_psf_match_example_file_errors(tmp_path):
    example = load("model_psf_match_example")
    real = tmp_path / "real.fits"
    real.write_text("not FITS")
    with pytest.raises(InputFileError, match="Template image .*missing.fits does not exist"):
        example.main(["-t", str(tmp_path / "missing.fits"), "-s", str(real)])
    with pytest.raises(InputFileError, match="Cannot read template image"):
        example.main(["-t", str(real), "-s", str(real)])


@pytest.mark.slow
def test_tune_basis_lowers_the_heldout_loss(tmp_path):
    """A short ``experiments/tune_basis.py`` run (x64 off, no context manager): Adam on the
    Alard-Lupton width parameters lowers the held-out χ² of the training pairs, and the script
    writes its JSON fields and figure."""
    tune = load("tune_basis")
    summary = tune.main(
        ["--train", "2", "--test", "1", "--steps", "4", "--size", "128", "--stars", "28",
         "--out", str(tmp_path)]
    )  # fmt: skip
    curve = summary["train_loss_curve"]
    assert len(curve) == 5 and all(np.isfinite(curve))
    assert curve[-1] < curve[0]
    assert summary["tuned"]["widths_px"] != summary["default"]["widths_px"]
    assert len(summary["tuned"]["test_heldout_chi2"]) == 1
    with open(summary["figure"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
