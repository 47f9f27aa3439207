"""``AlardLuptonSubtractTask`` and ``AlardLuptonPreconvolveSubtractTask`` on exposures.

The Task layer over :func:`jaxdiffim.alard_lupton_subtract` and
:func:`jaxdiffim.alard_lupton_preconvolve_subtract`: ip_diffim's config names and defaults,
exposures in and ``Struct`` results out, metadata and timers.

``run`` validates the pair (the template's bbox must contain the science bbox; bands and WCSs
must agree), cuts the template to the science bbox, and runs the core; ``runConvolveTemplate``
and ``runConvolveScience`` are ``run`` with the mode forced; ``finalize`` is the decorrelation
subtask on exposures. Differences from ip_diffim: the core decorrelates inside ``run`` (so
``finalize`` is for users who subtract by other means); ``sources`` may be ``None`` (the
built-in detector finds kernel sources), and ``allowKernelSourceDetection`` retries with it
when the catalogue gives too few; the bad-subtraction check of ``DetectAndMeasureTask`` runs
here (``raiseOnBadSubtractionRatio``).
"""

import copy as _copy

import numpy as np
from astropy.table import Table

from ..algorithms.alard_lupton import alard_lupton_preconvolve_subtract, alard_lupton_subtract
from ..algorithms.config import SubtractionConfig
from ..errors import InsufficientKernelSourcesError, InvalidInputError
from ..image.catalog import source_columns
from ..image.exposure import Exposure
from ..image.psf import FilteredPsf
from .base import Lazy, Struct, Task
from .config_map import apply_to_task, core_config
from .decorrelate import DecorrelateALKernelTask
from .models import BackgroundModel, MatchingKernel
from .pex_config import ChoiceField, Config, Field, ListField
from .psf_match import MakeKernelTask

__all__ = [
    "AlardLuptonSubtractConfig",
    "AlardLuptonSubtractTask",
    "AlardLuptonPreconvolveSubtractConfig",
    "AlardLuptonPreconvolveSubtractTask",
]


#: The core defaults, the one source of every default below.
_D = SubtractionConfig()


class AlardLuptonSubtractConfig(Config):
    """ip_diffim's ``AlardLuptonSubtractConfig`` (names; defaults from :class:`SubtractionConfig`
    through :data:`~jaxdiffim.tasks.config_map.FIELD_MAP`)."""

    mode = ChoiceField(
        "Which image to convolve.",
        str,
        {
            "auto": "convolve the template unless it is wider in both axes",
            "best": "the direction whose kernel predicts held-out kernel stars best (jaxdiffim)",
            "convolveTemplate": "convolve the template",
            "convolveScience": "convolve the science image",
        },
        _D.mode,
    )
    makeKernel = MakeKernelTask.makeField("Kernel configuration (basis, spatial model).")
    doDecorrelation = Field("Decorrelate the difference image.", bool, _D.do_decorrelation)
    decorrelate = DecorrelateALKernelTask.makeField("Decorrelation.")
    spatiallyVaryingDecorrelation = Field(
        "Decorrelate with the spatially varying kernel (jaxdiffim addition).",
        bool,
        _D.spatially_varying_decorrelation,
    )
    requiredTemplateFraction = Field(
        "Minimum template coverage.", float, _D.required_template_fraction
    )
    minTemplateFractionForExpectedSuccess = Field(
        "Below this coverage a failed fit becomes NoWorkFound.",
        float,
        _D.min_template_fraction_for_expected_success,
    )
    doScaleVariance = Field(
        "Rescale the variance planes (ScaleVariance).", bool, _D.do_scale_variance
    )
    doSubtractBackground = Field("Subtract the fitted background.", bool, _D.do_subtract_background)
    doSubtractSky = Field(
        "Subtract each image's smooth sky first (jaxdiffim addition).", bool, _D.subtract_sky
    )
    skyBinSize = Field("Sky bin size in pixels (jaxdiffim addition).", int, _D.sky_bin_size)
    detectionThreshold = Field("Minimum S/N of kernel sources.", float, _D.detection_threshold)
    detectionThresholdMax = Field(
        "Maximum S/N of kernel sources.", float, _D.detection_threshold_max
    )
    maxKernelSources = Field(
        "At most this many kernel sources (by S/N; <=0: all).", int, _D.max_kernel_sources
    )
    minKernelSources = Field("At least this many kernel sources.", int, _D.min_kernel_sources)
    restrictKernelEdgeSources = Field(
        "Drop sources within a kernel of the edge.", bool, _D.restrict_kernel_edge_sources
    )
    allowKernelSourceDetection = Field(
        "Detect kernel sources when the catalogue gives too few.", bool, False
    )
    excludeMaskPlanes = ListField(
        "Planes that disqualify a kernel source.", str, list(_D.exclude_mask_planes)
    )
    badMaskPlanes = ListField(
        "Planes filled with the median before preconvolution and before decorrelation.",
        str,
        list(_D.bad_mask_planes),
    )
    preserveTemplateMask = ListField("Template planes kept.", str, list(_D.preserve_template_mask))
    renameTemplateMask = ListField(
        "Template planes copied to <NAME>_TEMPLATE.", str, list(_D.rename_template_mask)
    )
    raiseOnBadSubtractionRatio = Field(
        "Raise BadSubtractionError on bad QA.", bool, _D.raise_on_bad_subtraction_ratio
    )
    badSubtractionRatioThreshold = Field(
        "Limit on the mean footprint ratio.", float, _D.bad_subtraction_ratio_threshold
    )
    badSubtractionVariationThreshold = Field(
        "Limit on its standard deviation.", float, _D.bad_subtraction_variation_threshold
    )

    def setDefaults(self):  # noqa: N802
        # ip_diffim's subtraction overrides the PsfMatchConfig defaults of both kernel bases
        # (spatial orders, fitted background); here every mapped field takes the core default.
        apply_to_task(_D, self)

    def validate(self):
        super().validate()
        if self.requiredTemplateFraction > self.minTemplateFractionForExpectedSuccess:
            raise InvalidInputError(
                "requiredTemplateFraction must not exceed minTemplateFractionForExpectedSuccess."
            )


class AlardLuptonPreconvolveSubtractConfig(AlardLuptonSubtractConfig):
    """Same fields; ``mode`` is ignored (the template is always convolved)."""


def _validate_exposures(template, science):
    """ip_diffim's ``_validateExposures``, as named exceptions."""
    for name, exp in (("template", template), ("science", science)):
        if not isinstance(exp, Exposure):
            raise InvalidInputError(
                f"The {name} must be a jaxdiffim Exposure, got {type(exp).__name__}."
            )
        if exp.psf is None:
            raise InvalidInputError(
                f"The {name} exposure has no PSF; set one (exposure.setPsf(GaussianPsf(...)) or "
                "ImagePsf(stamp)), or estimate it with "
                "jaxdiffim.algorithms.psf_estimate.estimate_psf."
            )
    if not template.getBBox().contains(science.getBBox()):
        raise InvalidInputError(
            f"The template bbox {template.getBBox()} does not contain the science bbox "
            f"{science.getBBox()}; warp or pad the template onto the science grid first."
        )
    if template.band and science.band and template.band != science.band:
        raise InvalidInputError(
            f"The template band {template.band!r} differs from the science band {science.band!r}."
        )
    if template.wcs is not None and science.wcs is not None:
        x, y = science.getBBox().getCenter()
        a = science.wcs.pixel_to_world_values(x, y)
        b = template.wcs.pixel_to_world_values(x, y)
        dra = (a[0] - b[0] + 180.0) % 360.0 - 180.0  # RA wraps at 0/360
        sep = np.hypot(dra * np.cos(np.radians(a[1])), a[1] - b[1]) * 3600.0
        scale = np.sqrt(abs(np.linalg.det(science.wcs.celestial.pixel_scale_matrix))) * 3600.0
        if sep > 0.5 * scale:
            raise InvalidInputError(
                f"The template and science WCSs differ by {sep:.2f} arcsec at the science centre; "
                "the images must be on one pixel grid (warp the template first)."
            )


class AlardLuptonSubtractTask(Task):
    """PSF-match and subtract a template from a science exposure (ip_diffim's task)."""

    ConfigClass = AlardLuptonSubtractConfig
    _DefaultName = "alardLuptonSubtract"
    _core = staticmethod(alard_lupton_subtract)

    def __init__(self, config=None, **kwargs):
        super().__init__(config=config, **kwargs)
        self.makeSubtask("makeKernel")
        self.makeSubtask("decorrelate")

    def run(self, template, science, sources=None, visitSummary=None):  # noqa: N803
        """Subtract; ``sources`` is a catalogue (astropy Table or file) or ``None`` (detect).

        Returns
        -------
        Struct
            ``difference``, ``matchedTemplate``, ``matchedScience`` (Exposures),
            ``backgroundModel`` (:class:`BackgroundModel`), ``psfMatchingKernel``
            (:class:`MatchingKernel`), ``kernelSources`` (astropy Table, parent coordinates).
        """
        return self._run(template, science, sources, self.config.mode)

    def runConvolveTemplate(self, template, science, selectSources):  # noqa: N802, N803
        """``run`` with the template convolved."""
        return self._run(template, science, selectSources, "convolveTemplate")

    def runConvolveScience(self, template, science, selectSources):  # noqa: N802, N803
        """``run`` with the science image convolved."""
        return self._run(template, science, selectSources, "convolveScience")

    def finalize(
        self,
        template,
        science,
        difference,
        kernel,
        templateMatched=True,  # noqa: N803
        preConvMode=False,  # noqa: N803
        preConvKernel=None,  # noqa: N803
        spatiallyVarying=False,  # noqa: N803
    ):
        """Decorrelate ``difference`` (when ``doDecorrelation``); returns the exposure."""
        if not self.config.doDecorrelation:
            return difference
        return self.decorrelate.run(
            science,
            template,
            difference,
            kernel,
            templateMatched=templateMatched,
            preConvMode=preConvMode,
            preConvKernel=preConvKernel,
            spatiallyVarying=spatiallyVarying,
        ).correctedExposure

    # ------------------------------------------------------------------------------------------
    def _run(self, template, science, sources, mode):
        with self.timer("run"):
            _validate_exposures(template, science)
            if template.getBBox() != science.getBBox():
                template = template[science.getBBox()]
            columns = None if sources is None else source_columns(sources, science.getXY0())
            try:
                result = self._call_core(template, science, columns, mode)
            except InsufficientKernelSourcesError as err:
                if columns is None or not self.config.allowKernelSourceDetection:
                    raise
                self.log.warning("%s Detecting kernel sources and retrying.", err)
                result = self._call_core(template, science, None, mode)
        return self._struct(result, template, science)

    def _call_core(self, template, science, columns, mode):
        return self._core(
            template.maskedImage,
            science.maskedImage,
            template.psf_callable(),
            science.psf_callable(),
            columns,
            core_config(self.config, mode),
            template_calibration=template.photoCalib,
            science_calibration=science.photoCalib,
        )

    def _struct(self, result, template, science):
        metrics = dict(result.metrics)
        for key, value in metrics.pop("timings", {}).items():
            self.metadata[f"{key}Duration"] = value
        self.metadata.update(metrics)
        self.metadata["mode"] = result.mode
        xy0 = science.getXY0()
        kernel = MatchingKernel(result.solution, result.kernel_config, xy0)
        background = BackgroundModel(
            result.solution,
            result.kernel_config,
            science.image.array.shape,
            xy0,
            result.background_scale,
        )
        ks = result.kernel_sources
        sources = Table(
            {
                "x": np.asarray(ks["x"], float) + xy0[0],
                "y": np.asarray(ks["y"], float) + xy0[1],
                "index": np.asarray(ks["index"], int),
                "used": np.asarray(ks["used"], bool),
            }
        )
        matched_psf = science.psf if result.mode == "convolveTemplate" else template.psf

        like = _copy.copy(science)  # the science bbox, WCS, calibration and header as of now
        if like.metadata is not None:
            like.metadata = like.metadata.copy()

        def exposure(masked, psf=matched_psf):  # made when first read (the CLI reads one)
            return Lazy(lambda: Exposure.from_masked(masked, like, psf))

        difference_psf = None  # the difference's own PSF (for the science image's sources)
        if science.psf is not None:
            difference_psf = FilteredPsf(science.psf, result.difference_psf, xy0)
        return Struct(
            **{self._output: exposure(result.difference, difference_psf)},
            matchedTemplate=exposure(result.matched_template),
            matchedScience=exposure(result.matched_science),
            backgroundModel=background,
            psfMatchingKernel=kernel,
            kernelSources=sources,
            mode=result.mode,
        )

    _output = "difference"


class AlardLuptonPreconvolveSubtractTask(AlardLuptonSubtractTask):
    """Score image: the science exposure filtered with its PSF minus the matched template."""

    ConfigClass = AlardLuptonPreconvolveSubtractConfig
    _DefaultName = "alardLuptonPreconvolveSubtract"
    _core = staticmethod(alard_lupton_preconvolve_subtract)
    _output = "scoreExposure"

    def _call_core(self, template, science, columns, mode):
        return super()._call_core(template, science, columns, "convolveTemplate")
