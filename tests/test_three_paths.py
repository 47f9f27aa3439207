"""One pipeline: the CLI, the Task and the functional API give identical results for one pair.

The pair is real DECam data (OBS18b template, OBS04b science: `auto` convolves the template),
with no options: the CLI estimates both PSFs from the stars and uses the file configuration
(:func:`jaxdiffim.cli.subtract.file_config`); the Task and the functional API are given the
same exposures (read and PSF-estimated as the CLI does) and the same configuration.
"""

import numpy as np
from utils import decam_path

from jaxdiffim import alard_lupton_subtract
from jaxdiffim.cli.main import main
from jaxdiffim.cli.subtract import file_config, load_exposure, task_config
from jaxdiffim.io import read_exposure
from jaxdiffim.tasks import AlardLuptonSubtractTask


def test_cli_task_and_functional_api_agree(tmp_path, capsys):
    out = tmp_path / "diff.fits"
    assert main(["subtract", decam_path("18b"), decam_path("04b"), "-o", str(out)]) == 0
    capsys.readouterr()
    cli = read_exposure(out)

    template, science = load_exposure(decam_path("18b")), load_exposure(decam_path("04b"))
    config = file_config()
    task = AlardLuptonSubtractTask(config=task_config(AlardLuptonSubtractTask, config))
    via_task = task.run(template, science).difference

    core = alard_lupton_subtract(
        template[science.getBBox()].maskedImage,
        science.maskedImage,
        template.psf_callable(),
        science.psf_callable(),
        None,
        config,
    )
    assert core.mode == "convolveTemplate"
    for name in ("image", "variance", "mask"):
        a = getattr(cli, name).array
        b = getattr(via_task, name).array
        c = np.asarray(getattr(core.difference, name)).astype(a.dtype)
        np.testing.assert_array_equal(a, b, err_msg=f"CLI vs Task: {name}")
        np.testing.assert_array_equal(b, c, err_msg=f"Task vs functional: {name}")
    assert np.isfinite(cli.image.array[cli.mask.array == 0]).all()
