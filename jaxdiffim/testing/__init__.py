"""Synthetic scenes and shipped real data for tests, demos, examples and benchmarks.

:func:`decam_file` gives the path of one of the four real DECam cut-outs that ship with the
package (``data/decam``: OBS04a, OBS04b, OBS18a, OBS18b; provenance in its README).
"""

import os

__all__ = ["DECAM_FILES", "decam_file"]

_DECAM_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "decam")

#: Names accepted by :func:`decam_file`.
DECAM_FILES = ("OBS04a", "OBS04b", "OBS18a", "OBS18b")


def decam_file(name):
    """Path of a shipped DECam cut-out (``"OBS04b"`` or ``"04b"``): 256² px, i band, gzipped FITS.

    Raises
    ------
    FileNotFoundError
        For a name not in :data:`DECAM_FILES`.
    """
    name = name if name.startswith("OBS") else "OBS" + name
    path = os.path.join(_DECAM_DIR, f"DEC-{name}.mini.fits.gz")
    if name not in DECAM_FILES or not os.path.exists(path):
        raise FileNotFoundError(f"no shipped DECam cut-out {name!r}; choose from {DECAM_FILES}.")
    return path
