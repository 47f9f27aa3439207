"""Source catalogues: any astropy-readable table with positions, optional fluxes and flags.

Column names follow the LSST conventions as well as plain ones: positions ``x``/``y``,
``slot_Centroid_x``/``_y`` or ``base_SdssCentroid_x``/``_y`` (parent pixel coordinates); flux
``flux``, ``slot_PsfFlux_instFlux``, ``base_PsfFlux_instFlux`` or ``truth_instFlux`` with the
matching ``*Err`` / ``flux_err`` column (or an ``snr`` column); flags: a boolean ``flags``
column, or ``base_PsfFlux_flag``, ``sky_source`` (True = not a star, dropped).
"""

import os

import numpy as np
from astropy.table import Table

from ..errors import InputFileError, InvalidInputError

__all__ = ["read_sources", "source_columns"]

_X = ("x", "slot_Centroid_x", "base_SdssCentroid_x")
_Y = ("y", "slot_Centroid_y", "base_SdssCentroid_y")
_FLUX = (
    ("flux", "flux_err"),
    ("slot_PsfFlux_instFlux", "slot_PsfFlux_instFluxErr"),
    ("base_PsfFlux_instFlux", "base_PsfFlux_instFluxErr"),
    ("truth_instFlux", "truth_instFluxErr"),
)
_FLAGS = ("flags", "base_PsfFlux_flag", "sky_source")


def read_sources(source):
    """An astropy :class:`~astropy.table.Table` from a file (any format astropy reads) or a table.

    Raises
    ------
    InputFileError
        Missing or unreadable file.
    """
    if isinstance(source, Table):
        return source
    if not isinstance(source, (str, os.PathLike)):
        return Table(source)
    path = os.fspath(source)
    if not os.path.exists(path):
        raise InputFileError(f"Source catalogue {path!r} does not exist.")
    try:
        return Table.read(path)
    except Exception as first:  # noqa: BLE001 - try the text readers before giving up
        try:
            return Table.read(path, format="ascii")
        except Exception:  # noqa: BLE001
            raise InputFileError(
                f"Source catalogue {path!r} is not a table astropy can read ({first})."
            ) from first


def _pick(table, names):
    for name in names:
        if name in table.colnames:
            return name
    return None


def source_columns(table, xy0=(0, 0)):
    """The core's column mapping: ``x``, ``y`` in array pixels, and whatever else is known.

    Parameters
    ----------
    table : astropy.table.Table (or anything :func:`read_sources` accepts)
    xy0 : tuple of int
        Parent coordinates of the image's pixel ``[0, 0]``; subtracted from the positions.

    Returns
    -------
    dict
        ``x``, ``y`` and, when present, ``flux`` and ``flux_err`` (or ``snr``) and ``flags``.

    Raises
    ------
    InvalidInputError
        No recognised position columns.
    """
    table = read_sources(table)
    xname, yname = _pick(table, _X), _pick(table, _Y)
    if xname is None or yname is None:
        raise InvalidInputError(
            f"The source catalogue needs position columns, one of {_X} and one of {_Y}; it has "
            f"{table.colnames}."
        )
    out = {
        "x": np.asarray(table[xname], float) - xy0[0],
        "y": np.asarray(table[yname], float) - xy0[1],
    }
    for flux, err in _FLUX:
        if flux in table.colnames and err in table.colnames:
            out["flux"] = np.asarray(table[flux], float)
            out["flux_err"] = np.asarray(table[err], float)
            break
    else:
        if "snr" in table.colnames:
            out["snr"] = np.asarray(table["snr"], float)
    flags = np.zeros(len(table), bool)
    for name in _FLAGS:
        if name in table.colnames:
            flags |= np.asarray(table[name], bool)
    out["flags"] = flags
    if "isolated" in table.colnames:
        out["isolated"] = np.asarray(table["isolated"], bool)
    return out
