"""The README is executable: every Python block runs, in order, in one namespace.

The blocks run in a subprocess in a temporary folder (they write ``diff.fits``), on the data
that ships with the package. The Task block must give a good difference on the DECam pair.
"""

import os
import re
import subprocess
import sys

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_blocks():
    with open(README) as fh:
        return re.findall(r"```python\n(.*?)```", fh.read(), flags=re.S)


def test_readme_has_the_api_blocks():
    blocks = python_blocks()
    assert len(blocks) >= 3
    assert any("AlardLuptonSubtractTask" in b for b in blocks)
    assert any("alard_lupton_subtract" in b for b in blocks)


#: Appended after the Task block: noise of D/√V on unmasked pixels within 10 % of 1.
TASK_CHECK = """
import numpy as _np
from astropy.stats import mad_std as _mad_std
_d = result.difference
_good = (_d.mask.array == 0) & _np.isfinite(_d.image.array) & (_d.variance.array > 0)
_z = _d.image.array[_good] / _np.sqrt(_d.variance.array[_good])
assert abs(_mad_std(_z) - 1) < 0.1, _mad_std(_z)
print("README Task difference: noise", _mad_std(_z))
"""


@pytest.mark.slow
def test_readme_python_blocks_run(tmp_path):
    source = []
    for block in python_blocks():
        source.append(block)
        if "AlardLuptonSubtractTask(config=config)" in block:
            source.append(TASK_CHECK)
    script = tmp_path / "readme.py"
    script.write_text("\n".join(source))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "README Task difference: noise" in proc.stdout
