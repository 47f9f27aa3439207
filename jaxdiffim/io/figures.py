"""Write images as PNG files without a plotting library (grayscale panels in one mosaic)."""

import struct
import zlib

import numpy as np

from .atomic import atomic_output

__all__ = ["stretch", "mosaic", "kernel_grid", "write_png"]


def stretch(image, mask=None, contrast=5.0):
    """Map an image to 0..255 with an asinh stretch around its median (NaN -> 0).

    The scale is the robust (1.4826 MAD) noise, so noise is visible and bright stars do not
    saturate at once; ``contrast`` sets how many noise units reach mid-grey.
    """
    img = np.asarray(image, np.float64)
    good = np.isfinite(img) if mask is None else np.isfinite(img) & ~np.asarray(mask, bool)
    if not good.any():
        return np.zeros(img.shape, np.uint8)
    values = img[good]
    med = np.median(values)
    noise = 1.4826 * np.median(np.abs(values - med)) or (values.std() or 1.0)
    scaled = np.arcsinh((np.where(good, img, med) - med) / (contrast * noise))
    lo, hi = np.percentile(scaled, 0.5), np.percentile(scaled, 99.8)
    out = np.clip((scaled - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return (255 * out).astype(np.uint8)


def mosaic(panels, gutter=4, fill=255):
    """Panels (uint8 2-D arrays) side by side, top-aligned, separated by ``gutter`` pixels."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + gutter * (len(panels) - 1)
    out = np.full((height, width), fill, np.uint8)
    x = 0
    for p in panels:
        out[: p.shape[0], x : x + p.shape[1]] = p
        x += p.shape[1] + gutter
    return out


def kernel_grid(images, scale=1):
    """Kernel images ``(ny, nx, k, k)`` tiled into one picture: 0 grey, ±max black/white.

    Each pixel is repeated ``scale`` times along both axes.
    """
    grid = np.asarray(images, np.float64)
    tiles = np.concatenate([np.concatenate(list(row), axis=1) for row in grid], axis=0)
    tiles = tiles / (np.abs(tiles).max() or 1.0)
    img = (255 * np.clip(0.5 + 0.5 * tiles, 0, 1)).astype(np.uint8)
    return np.kron(img, np.ones((scale, scale), np.uint8))


def write_png(path, image, overwrite=False):
    """Write a uint8 2-D array as an 8-bit grayscale PNG (row 0 at the bottom, as in ds9).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (written atomically otherwise).
    """
    img = np.ascontiguousarray(np.asarray(image, np.uint8)[::-1])
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(kind, data):
        body = kind + data
        return (
            struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        )

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6))
    png += chunk(b"IEND", b"")
    with atomic_output(path, overwrite) as tmp, open(tmp, "wb") as fh:
        fh.write(png)
