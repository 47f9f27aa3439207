"""Figures of exposures, differences and matching kernels (matplotlib, written as PNG).

Images are drawn with ``origin="lower"`` on axes in pixel coordinates of the parent frame
(array pixel ``[j, i]`` is centred on ``(x0 + i, y0 + j)``, as in afw and ds9 with ``xy0``);
every panel has a colour bar. Direct images use an asinh stretch between the low z-scale limit
and the 99.5th percentile (:class:`astropy.visualization.ImageNormalize`), so noise and bright
stars are both visible; differences use a linear stretch symmetric about 0 out to the z-scale
limits, on a diverging colour map. Masked pixels (e.g. ``NO_DATA``) and non-finite ones are in a
neutral grey. Figures are :class:`matplotlib.figure.Figure` objects on an Agg canvas (no
pyplot, no global state); :func:`save_png` writes them atomically.
"""

import numpy as np
from astropy.visualization import AsinhStretch, ImageNormalize, LinearStretch, ZScaleInterval
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from .atomic import atomic_output

__all__ = [
    "image_norm",
    "kernel_grid",
    "show_image",
    "show_kernels",
    "image_figure",
    "kernel_figure",
    "demo_figure",
    "save_png",
]

MASKED_COLOR = "0.55"
"""Colour of masked pixels (a neutral mid grey, away from both ends of the colour maps)."""

_DIRECT_CMAP = "gray"
_DIFF_CMAP = "RdBu_r"
_PANEL_INCHES = 4.2


def _good(image, mask):
    good = np.isfinite(image)
    if mask is not None:
        good &= ~np.asarray(mask, bool)
    return good


def image_norm(image, mask=None, difference=False, asinh_a=0.02):
    """The colour scale of an image panel.

    Parameters
    ----------
    image : array_like, shape (ny, nx)
        Pixel values (counts); non-finite values are ignored.
    mask : array_like of bool, shape (ny, nx), optional
        Pixels to ignore (True = masked).
    difference : bool
        Linear stretch symmetric about 0 out to the larger z-scale limit (for differences);
        otherwise an asinh stretch from the low z-scale limit to the 99.5th percentile.
    asinh_a : float
        Asinh transition point as a fraction of the (vmin, vmax) range: smaller values show
        fainter structure.

    Returns
    -------
    astropy.visualization.ImageNormalize
    """
    img = np.asarray(image, np.float64)
    values = img[_good(img, mask)]
    if values.size == 0:
        lo, hi = (-1.0, 1.0) if difference else (0.0, 1.0)
        return ImageNormalize(vmin=lo, vmax=hi, stretch=LinearStretch())
    lo, hi = ZScaleInterval().get_limits(values)
    if difference:
        v = max(abs(lo), abs(hi)) or float(np.max(np.abs(values))) or 1.0
        return ImageNormalize(vmin=-v, vmax=v, stretch=LinearStretch())
    top = float(np.percentile(values, 99.5))
    if top <= lo:  # mostly empty image (e.g. noiseless point sources)
        lo, top = float(values.min()), float(values.max())
    if top <= lo:
        top = lo + 1.0
    return ImageNormalize(vmin=lo, vmax=top, stretch=AsinhStretch(asinh_a))


def kernel_grid(images, gutter=1):
    """Kernel images on a grid over the field tiled into one array, with NaN gutters.

    Parameters
    ----------
    images : array_like, shape (ny, nx, k, k)
        ``images[j, i]`` is the kernel at the ``j``-th y and ``i``-th x grid position (as
        returned by ``MatchingKernel.computeImageGrid``); row 0 is the lowest y.
    gutter : int
        Width of the NaN separators between tiles (pixels).

    Returns
    -------
    ndarray, shape (ny * (k + gutter) - gutter, nx * (k + gutter) - gutter)
        Row 0 is the bottom of the field (draw with ``origin="lower"``).
    """
    grid = np.asarray(images, np.float64)
    ny, nx, ky, kx = grid.shape
    out = np.full((ny * (ky + gutter) - gutter, nx * (kx + gutter) - gutter), np.nan)
    for j in range(ny):
        for i in range(nx):
            y, x = j * (ky + gutter), i * (kx + gutter)
            out[y : y + ky, x : x + kx] = grid[j, i]
    return out


def _colorbar(ax, mappable, label):
    cbar = ax.figure.colorbar(mappable, ax=ax, fraction=0.046, pad=0.03)
    cbar.set_label(label)
    norm = mappable.norm
    if isinstance(norm, ImageNormalize) and not isinstance(norm.stretch, LinearStretch):
        # ticks evenly spaced along the bar (not crowded where the stretch compresses)
        values = np.asarray(norm.inverse(np.linspace(0.2, 1.0, 5)), np.float64).ravel()
        digits = 1 - np.floor(np.log10(np.maximum(np.abs(values), 1e-300))).astype(int)
        # two significant digits, rounded down so the top one stays on the bar
        ticks = [np.floor(v * 10.0**d) / 10.0**d for v, d in zip(values, digits, strict=True)]
        ticks = ([0.0] if norm.vmin <= 0 else []) + ticks
        kept = []
        for t in ticks:
            where = float(np.ravel(norm(t))[0])
            if 0 <= where <= 1 and all(abs(where - w) > 0.12 for _, w in kept):
                kept.append((t, where))
        cbar.set_ticks([t for t, _ in kept])
        cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.4g}"))
    return cbar


def show_image(ax, image, title=None, mask=None, xy0=(0, 0), difference=False, unit="counts"):
    """Draw an image on ``ax`` in parent pixel coordinates, with a colour bar.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    image : array_like, shape (ny, nx)
        Pixel values in ``unit``.
    title : str, optional
    mask : array_like of bool, shape (ny, nx), optional
        Pixels drawn in :data:`MASKED_COLOR` (e.g. ``NO_DATA``); non-finite ones are too.
    xy0 : (int, int)
        Parent coordinates (x, y) of array pixel ``[0, 0]``.
    difference : bool
        Symmetric linear stretch on a diverging map (see :func:`image_norm`).
    unit : str
        Colour-bar label.

    Returns
    -------
    matplotlib.image.AxesImage
    """
    img = np.asarray(image, np.float64)
    good = _good(img, mask)
    cmap = colormaps[_DIFF_CMAP if difference else _DIRECT_CMAP].with_extremes(bad=MASKED_COLOR)
    ny, nx = img.shape
    x0, y0 = xy0
    im = ax.imshow(
        np.ma.masked_array(np.where(good, img, 0.0), ~good),
        origin="lower",
        cmap=cmap,
        norm=image_norm(img, ~good, difference),
        extent=(x0 - 0.5, x0 + nx - 0.5, y0 - 0.5, y0 + ny - 0.5),
        interpolation="nearest",
    )
    ax.set_xlabel("x (pixel)")
    ax.set_ylabel("y (pixel)")
    if title:
        ax.set_title(title)
    _colorbar(ax, im, unit)
    return im


def show_kernels(ax, images, xs, ys, title="Matching kernel across the field"):
    """Draw kernel images on a grid over the field, ticks at their parent positions.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
    images : array_like, shape (ny, nx, k, k)
        Kernel images (see :func:`kernel_grid`); drawn on one symmetric linear scale.
    xs : array_like, shape (nx,)
        Parent x coordinates (pixel) where the kernels are evaluated.
    ys : array_like, shape (ny,)
        Parent y coordinates (pixel).
    title : str

    Returns
    -------
    matplotlib.image.AxesImage
    """
    grid = np.asarray(images, np.float64)
    ny, nx, ky, kx = grid.shape
    tiles = kernel_grid(grid)
    v = float(np.max(np.abs(grid))) or 1.0
    cmap = colormaps[_DIFF_CMAP].with_extremes(bad="white")
    im = ax.imshow(
        np.ma.masked_invalid(tiles),
        origin="lower",
        cmap=cmap,
        norm=ImageNormalize(vmin=-v, vmax=v, stretch=LinearStretch()),
        interpolation="nearest",
    )
    ax.set_xticks([i * (kx + 1) + (kx - 1) / 2 for i in range(nx)])
    ax.set_xticklabels([f"{x:.0f}" for x in np.asarray(xs)])
    ax.set_yticks([j * (ky + 1) + (ky - 1) / 2 for j in range(ny)])
    ax.set_yticklabels([f"{y:.0f}" for y in np.asarray(ys)], rotation=90, va="center")
    ax.tick_params(length=0)
    ax.set_xlabel(f"x (pixel) of each {kx} x {ky} px kernel")
    ax.set_ylabel("y (pixel)")
    ax.set_title(title)
    for side in ax.spines.values():
        side.set_visible(False)
    _colorbar(ax, im, "kernel value")
    return im


def _figure(n_panels, suptitle=None):
    fig = Figure(figsize=(_PANEL_INCHES * n_panels, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    if suptitle:
        fig.suptitle(suptitle)
    return fig, axes


def image_figure(image, title=None, mask=None, xy0=(0, 0), difference=False, unit="counts"):
    """A one-panel figure of an image (see :func:`show_image` for the parameters).

    Returns
    -------
    matplotlib.figure.Figure
        About 4.2 x 4 inches.
    """
    fig, (ax,) = _figure(1)
    show_image(ax, image, title, mask, xy0, difference, unit)
    return fig


def kernel_figure(images, xs, ys, title="Matching kernel across the field"):
    """A one-panel figure of kernels over the field (see :func:`show_kernels`).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig, (ax,) = _figure(1)
    show_kernels(ax, images, xs, ys, title)
    return fig


def demo_figure(
    template,
    science,
    difference,
    kernel_images,
    kernel_xs,
    kernel_ys,
    mask=None,
    xy0=(0, 0),
    suptitle=None,
):
    """Template | science | difference | matching kernel across the field, in one row.

    Parameters
    ----------
    template, science, difference : array_like, shape (ny, nx)
        Images on one pixel grid (counts).
    kernel_images : array_like, shape (ky, kx, k, k)
        The matching kernel on a grid over the field (``MatchingKernel.computeImageGrid``).
    kernel_xs, kernel_ys : array_like, shapes (kx,) and (ky,)
        Parent coordinates (pixel) of that grid.
    mask : array_like of bool, shape (ny, nx), optional
        Difference pixels without data (drawn grey).
    xy0 : (int, int)
        Parent coordinates of array pixel ``[0, 0]``.
    suptitle : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        About 16.8 x 4 inches (1680 x 400 px at ``dpi=100``).
    """
    fig, axes = _figure(4, suptitle)
    show_image(axes[0], template, "Template", xy0=xy0)
    show_image(axes[1], science, "Science", xy0=xy0)
    show_image(axes[2], difference, "Difference", mask, xy0, difference=True)
    show_kernels(axes[3], kernel_images, kernel_xs, kernel_ys)
    return fig


def save_png(fig, path, overwrite=False, dpi=100):
    """Write a figure as a PNG file, atomically.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
    path : str or os.PathLike
    overwrite : bool
        Replace an existing file.
    dpi : float
        Pixels per inch: the PNG is ``fig.get_size_inches() * dpi`` pixels.

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``overwrite`` is False (nothing is written).
    """
    with atomic_output(path, overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
