"""Figures (jaxdiffim.io.figures): labelled matplotlib panels written as PNG files, atomically."""

import os

import numpy as np
import pytest
from matplotlib.image import imread

from jaxdiffim.errors import OutputExistsError
from jaxdiffim.io.figures import (
    MASKED_COLOR,
    demo_figure,
    image_figure,
    image_norm,
    kernel_figure,
    kernel_grid,
    save_png,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:n, 0:n]
    star = 500.0 * np.exp(-0.5 * ((xx - 20) ** 2 + (yy - 40) ** 2) / 2.0**2)
    template = 10.0 + star + rng.normal(size=(n, n))
    science = 10.0 + 1.1 * star + rng.normal(size=(n, n))
    return template, science, science - template


def _kernels(k=7):
    u = np.arange(k) - k // 2
    g = np.exp(-0.5 * (u[:, None] ** 2 + u[None, :] ** 2))
    return np.array([[g / g.sum() * (1 + 0.1 * (i + j)) for i in range(3)] for j in range(3)])


def test_demo_figure_writes_a_readable_png_of_the_expected_size(tmp_path):
    template, science, diff = _images()
    mask = np.zeros(diff.shape, bool)
    mask[:, :5] = True
    diff[0, 0] = np.nan
    fig = demo_figure(
        template, science, diff, _kernels(), [0, 31, 63], [0, 31, 63], mask, (1000, 2000), "demo"
    )
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["Template", "Science", "Difference"] and "kernel" in titles[3]
    assert len(fig.axes) == 8  # four panels and their colour bars
    assert fig.axes[0].get_xlabel() == "x (pixel)" and fig.axes[0].get_ylabel() == "y (pixel)"
    # pixel coordinates of the parent frame: pixel centres at x0 + i, y0 + j
    assert fig.axes[0].get_xlim() == (999.5, 1063.5)
    assert fig.axes[0].get_ylim() == (1999.5, 2063.5)
    path = tmp_path / "demo.png"
    save_png(fig, path)
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_MAGIC
    rgba = imread(path)
    assert rgba.shape[:2] == (400, 1680)  # 16.8 x 4 inches at 100 dpi
    assert rgba[..., :3].std() > 0.1  # not blank
    assert os.listdir(tmp_path) == ["demo.png"]  # no temporary file left


def test_masked_pixels_are_neutral_grey(tmp_path):
    image = np.random.default_rng(1).normal(size=(50, 80))
    mask = np.zeros(image.shape, bool)
    mask[:, 40:] = True
    fig = image_figure(image, "half masked", mask=mask, difference=True)
    path = tmp_path / "masked.png"
    save_png(fig, path, dpi=fig.dpi)
    rgba = imread(path)
    ax = fig.axes[0]
    for (x, y), masked in (((60.0, 25.0), True), ((20.0, 25.0), False)):
        px, py = ax.transData.transform((x, y))
        row, col = rgba.shape[0] - int(round(py)), int(round(px))
        block = rgba[row - 3 : row + 4, col - 3 : col + 4, :3]
        grey = np.all(np.abs(block - float(MASKED_COLOR)) < 0.02, axis=-1)
        assert grey.all() if masked else not grey.all()


def test_save_png_refuses_to_overwrite(tmp_path):
    path = tmp_path / "kernels.png"
    path.write_bytes(b"old")
    fig = kernel_figure(_kernels(), [0, 10, 20], [0, 10, 20])
    with pytest.raises(OutputExistsError):
        save_png(fig, path)
    assert path.read_bytes() == b"old"
    save_png(fig, path, overwrite=True)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert imread(path).shape[:2] == (400, 420)
    assert sorted(os.listdir(tmp_path)) == ["kernels.png"]


def test_kernel_grid_tiles_with_nan_gutters():
    grid = _kernels(5)
    tiles = kernel_grid(grid, gutter=1)
    assert tiles.shape == (17, 17)
    np.testing.assert_array_equal(tiles[:5, :5], grid[0, 0])  # row 0 = lowest y
    np.testing.assert_array_equal(tiles[12:, 6:11], grid[2, 1])
    assert np.isnan(tiles[5]).all() and np.isnan(tiles[:, 11]).all()
    assert np.isfinite(tiles).sum() == grid.size


def test_image_norm():
    _, science, diff = _images()
    diff[0, 0] = 1e6  # a masked outlier does not set the scale
    mask = np.zeros(diff.shape, bool)
    mask[0, 0] = True
    norm = image_norm(diff, mask, difference=True)
    assert norm.vmin == -norm.vmax and 1 < norm.vmax < 10
    direct = image_norm(science)
    assert 5 < direct.vmin < 10 < direct.vmax < 500
    linear = (10.0 - direct.vmin) / (direct.vmax - direct.vmin)
    assert float(direct(10.0)) > 5 * linear  # asinh: the sky noise is lifted off black
    empty = image_norm(np.full((4, 4), np.nan))
    assert (empty.vmin, empty.vmax) == (0.0, 1.0)
