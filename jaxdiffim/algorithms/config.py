"""The one configuration of the whole subtraction, and the policies every path shares.

:class:`SubtractionConfig` holds every setting of ip_diffim's ``AlardLuptonSubtractTask`` (field
names in snake_case) with the kernel fit's settings nested in ``kernel``
(:class:`~jaxdiffim.core.config.KernelFitConfig`). It is the single source of truth for every
default: the Task configs map onto it through one table
(:data:`jaxdiffim.tasks.config_map.FIELD_MAP`), the CLI builds one from its flags and
``-c NAME=VALUE`` options (:func:`apply_overrides`), and the functional API takes it directly.

Policies (decided here once, applied by
:func:`jaxdiffim.algorithms.alard_lupton.alard_lupton_subtract`
on every path, reported in the metrics):

- **Spatial orders are maxima.** Each spatial order (kernel, background) is lowered until the
  kernel sources number at least :data:`MIN_SOURCES_PER_SPATIAL_TERM` per term of its model
  (4 for the kernel, 2 for the background),
  and a spatial system that the kernel sources still cannot determine (``SINGULAR``) is refitted
  once with a constant kernel and background. ip_diffim fits the orders it is given and falls
  back to a pseudo-inverse, which with a handful of stars (a 256² cut-out) extrapolates wildly
  between them. Below ``min_template_fraction_for_expected_success`` coverage a failure is
  expected and the orders are kept (ip_diffim's rule).
- **Too few kernel sources.** When fewer than ``min_kernel_sources`` pass the selection, it is
  repeated once without ``detection_threshold_max`` and the ``restrict_kernel_edge_sources``
  margin (:func:`jaxdiffim.algorithms.kernel_sources.kernel_sources`); ip_diffim gives up.
- **Background.** ``subtract_sky`` (each image's own smooth sky, before everything) and
  ``do_subtract_background`` (the fitted differential background, after the fit): both off by
  default for sky-subtracted pipeline inputs, as in ip_diffim; the file path turns both on
  (:data:`FILE_DEFAULTS`).
- **QA failure** raises :class:`~jaxdiffim.errors.BadSubtractionError` (which carries the finished
  result) when ``raise_on_bad_subtraction_ratio``.
"""

import dataclasses

from ..core.basis import WIDTH_RULE
from ..core.config import KernelFitConfig
from ..core.masks import (
    FILL_BEFORE_FILTERING,
    KERNEL_SOURCE_EXCLUDE,
    MASK_PLANES,
    PRESERVE_TEMPLATE,
    RENAME_TEMPLATE,
    bits,
)
from ..errors import InvalidInputError

__all__ = [
    "MODES",
    "MIN_SOURCES_PER_SPATIAL_TERM",
    "FILE_DEFAULTS",
    "SubtractionConfig",
    "apply_overrides",
    "config_paths",
]

#: Allowed values of ``SubtractionConfig.mode``.
MODES = ("auto", "best", "convolveTemplate", "convolveScience")

#: Kernel sources needed per spatial term to keep an order: (kernel model, background model).
#: Each star pins a whole kernel but only one background value, and a spatially varying kernel
#: fitted to few stars extrapolates badly (8 stars on a 256² DECam cut-out: noise 10 % high).
MIN_SOURCES_PER_SPATIAL_TERM = (4, 2)


@dataclasses.dataclass(frozen=True)
class SubtractionConfig:
    """Configuration of the whole subtraction (ip_diffim field names in snake_case).

    Attributes
    ----------
    mode : {"auto", "best", "convolveTemplate", "convolveScience"}
        ``auto``: ip_diffim's rule (convolve the image with the smaller PSF); ``best``: the
        direction whose kernel predicts held-out kernel stars best
        (:mod:`jaxdiffim.algorithms.convolution_mode`, a jaxdiffim addition).
    kernel : KernelFitConfig
        The fit (``makeKernel.kernel.active``); its ``kernel_size`` is replaced by the
        ``scale_by_fwhm`` rule unless that is off. Its spatial orders are maxima (module
        docstring).
    scale_by_fwhm, alard_sig_gauss, alard_gauss_beta, alard_min_sig, alard_min_sig_deconv,
    kernel_size_fwhm_scaling, kernel_size_min, kernel_size_max
        The basis-width rule (:func:`jaxdiffim.core.basis.alard_lupton_sigmas`); widths in
        pixels.
    do_decorrelation, complete_var_plane_propagation : bool
        Decorrelation afterburner and its full variance propagation.
    spatially_varying_decorrelation : bool
        Follow the spatially varying kernel with ``decorrelation_nodes``² filters.
    do_scale_variance : bool
        Rescale both variance planes to the pixel noise first (``ScaleVariance``).
    do_subtract_background : bool
        Remove the fitted differential background.
    subtract_sky, sky_bin_size
        First subtract each image's own smooth sky: a 3σ-clipped binned background over
        ``sky_bin_size``-pixel bins (sources left out), interpolated; after the subtraction,
        the difference's residual sky the same way (jaxdiffim additions,
        :func:`jaxdiffim.core.background.source_free_sky`). Needed for images whose sky is not
        subtracted: the stamps' constant backgrounds cannot follow a sky gradient, which then
        biases the kernel; and a differential background fitted in the stamps takes up the PSF
        wings that the kernel cannot match (a few counts; transient fluxes 1-2 % low).
    required_template_fraction, min_template_fraction_for_expected_success : float
        Coverage guards (fractions of the science image).
    max_kernel_sources, min_kernel_sources, restrict_kernel_edge_sources,
    exclude_mask_planes, detection_threshold, detection_threshold_max
        Kernel-source selection (the S/N window is ``detection_threshold`` to
        ``detection_threshold_max``, ip_diffim's 10-500).
    bad_mask_planes : tuple of str
        Filled with the median before preconvolution and decorrelation.
    preserve_template_mask, rename_template_mask : tuple of str
        Mask semantics (:func:`jaxdiffim.algorithms.inputs.update_masks`); the preserved
        planes are also not smeared by the convolution.
    fwhm_exposure_grid, fwhm_exposure_buffer
        PSF-size grid fallback.
    raise_on_bad_subtraction_ratio, bad_subtraction_ratio_threshold,
    bad_subtraction_variation_threshold
        QA thresholds on the footprint residual ratio.
    """

    mode: str = "convolveTemplate"
    kernel: KernelFitConfig = KernelFitConfig()
    scale_by_fwhm: bool = True
    alard_sig_gauss: tuple = WIDTH_RULE["sig_gauss"]
    alard_gauss_beta: float = WIDTH_RULE["gauss_beta"]
    alard_min_sig: float = WIDTH_RULE["min_sig"]
    alard_min_sig_deconv: float = WIDTH_RULE["min_sig_deconv"]
    kernel_size_fwhm_scaling: float = WIDTH_RULE["kernel_size_fwhm_scaling"]
    kernel_size_min: int = WIDTH_RULE["kernel_size_min"]
    kernel_size_max: int = WIDTH_RULE["kernel_size_max"]
    do_decorrelation: bool = True
    complete_var_plane_propagation: bool = False
    spatially_varying_decorrelation: bool = False
    decorrelation_nodes: int = 4
    do_scale_variance: bool = True
    do_subtract_background: bool = False
    subtract_sky: bool = False
    sky_bin_size: int = 64
    required_template_fraction: float = 0.1
    min_template_fraction_for_expected_success: float = 0.2
    max_kernel_sources: int = 1000
    min_kernel_sources: int = 3
    restrict_kernel_edge_sources: bool = True
    exclude_mask_planes: tuple = KERNEL_SOURCE_EXCLUDE
    detection_threshold: float = 10.0
    detection_threshold_max: float = 500.0
    bad_mask_planes: tuple = FILL_BEFORE_FILTERING
    preserve_template_mask: tuple = PRESERVE_TEMPLATE
    rename_template_mask: tuple = RENAME_TEMPLATE
    fwhm_exposure_grid: int = 10
    fwhm_exposure_buffer: float = 0.05
    raise_on_bad_subtraction_ratio: bool = True
    bad_subtraction_ratio_threshold: float = 0.2
    bad_subtraction_variation_threshold: float = 0.4

    def __post_init__(self):
        for name in (
            "alard_sig_gauss",
            "exclude_mask_planes",
            "bad_mask_planes",
            "preserve_template_mask",
            "rename_template_mask",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "alard_sig_gauss", tuple(float(s) for s in self.alard_sig_gauss))
        if not isinstance(self.kernel, KernelFitConfig):
            raise InvalidInputError("kernel must be a KernelFitConfig.")
        if self.mode not in MODES:
            raise InvalidInputError(f"mode must be one of {MODES}, got {self.mode!r}.")
        if len(self.alard_sig_gauss) != len(self.kernel.degrees):
            raise InvalidInputError(
                f"alard_sig_gauss has {len(self.alard_sig_gauss)} widths but kernel.degrees "
                f"has {len(self.kernel.degrees)} entries; give one degree per Gaussian."
            )
        for name in ("required_template_fraction", "min_template_fraction_for_expected_success"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidInputError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.sky_bin_size < 8:
            raise InvalidInputError(f"sky_bin_size must be >= 8 pixels, got {self.sky_bin_size}.")
        if self.decorrelation_nodes < 1:
            raise InvalidInputError("decorrelation_nodes must be >= 1.")
        if self.min_kernel_sources < 1:
            raise InvalidInputError("min_kernel_sources must be >= 1.")
        if not self.detection_threshold < self.detection_threshold_max:
            raise InvalidInputError(
                "detection_threshold must be below detection_threshold_max, got "
                f"{self.detection_threshold} and {self.detection_threshold_max}."
            )
        for name in self.rename_template_mask:
            if name + "_TEMPLATE" not in MASK_PLANES:
                known = [n[: -len("_TEMPLATE")] for n in MASK_PLANES if n.endswith("_TEMPLATE")]
                raise InvalidInputError(
                    f"rename_template_mask: there is no {name}_TEMPLATE plane; "
                    f"renamable planes are {known}."
                )
        for planes in (
            self.exclude_mask_planes,
            self.bad_mask_planes,
            self.preserve_template_mask,
        ):
            bits(planes)  # unknown names raise

    def replace(self, **changes):
        """Return a validated copy with ``changes`` applied (``kernel.NAME`` keys allowed)."""
        return apply_overrides(self, changes)


#: What the file path (CLI, demo) changes from :class:`SubtractionConfig`'s ip_diffim defaults:
#: files from outside the Rubin pipeline keep their sky, and ``best`` picks the mode. (Without
#: ip_diffim's upper S/N limit of 500 on kernel sources the simulated scenes lose most of their
#: remaining false positives, but on a DECam cut-out with 7 stars the brightening variable star
#: became a kernel source and was subtracted away: the limit stays.)
FILE_DEFAULTS = {"mode": "best", "subtract_sky": True}


def config_paths(config=None):
    """Every settable path of a :class:`SubtractionConfig` (``kernel.*`` for the fit), sorted."""
    config = config or SubtractionConfig()
    top = [f.name for f in dataclasses.fields(config) if f.name != "kernel"]
    kernel = ["kernel." + f.name for f in dataclasses.fields(config.kernel)]
    return sorted(top + kernel)


def apply_overrides(config, changes):
    """A validated copy of ``config`` with ``changes`` (``{"path": value}``) applied.

    Paths are field names, or ``kernel.NAME`` for the fit's fields. Unknown paths raise
    :class:`~jaxdiffim.errors.InvalidInputError` naming the close matches.
    """
    top, kernel = {}, {}
    for path, value in changes.items():
        if path.startswith("kernel.") and path[len("kernel.") :] in _names(config.kernel):
            kernel[path[len("kernel.") :]] = value
        elif path in _names(config) and path != "kernel":
            top[path] = value
        elif path == "kernel" and isinstance(value, KernelFitConfig):
            top[path] = value
        else:
            import difflib

            close = difflib.get_close_matches(path, config_paths(config), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InvalidInputError(f"Unknown configuration field {path!r}{hint}")
    if kernel:
        top["kernel"] = dataclasses.replace(top.get("kernel", config.kernel), **kernel)
    return dataclasses.replace(config, **top)


def _names(obj):
    return {f.name for f in dataclasses.fields(obj)}
