"""Bad input at the core's boundary: named exceptions with useful messages, never NaN kernels."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from utils import basis_for, candidates_for, masked

from jaxdiffim import (
    InvalidInputError,
    KernelFitConfig,
    NoKernelCandidatesError,
    alard_lupton_basis,
    describe_status,
    fit_kernel,
    make_candidates,
    raise_for_status,
    subtract_images,
)
from jaxdiffim.testing.synthetic import make_test_image


@pytest.fixture(scope="module")
def scene():
    sci = make_test_image(psf_sigma=2.4, noise_level=1.0, noise_seed=6)
    tmpl = make_test_image(psf_sigma=2.0, noise_level=1.0, noise_seed=7)
    sigmas, config = basis_for(2.0, 2.4)
    return sci, tmpl, sigmas, config


def fit(scene, **changes):
    sci, tmpl, sigmas, config = scene
    args = dict(
        template=tmpl.image,
        science=sci.image,
        template_variance=tmpl.variance,
        science_variance=sci.variance,
        candidates=candidates_for(sci),
        config=config,
        sigmas=sigmas,
    )
    args.update(changes)
    return fit_kernel(**args)


def test_wrong_rank_shape_dtype(scene):
    sci, tmpl, _, _ = scene
    with pytest.raises(InvalidInputError, match="2-D"):
        fit(scene, template=tmpl.image[None])
    with pytest.raises(InvalidInputError, match="same shape|pixel grid"):
        fit(scene, science=sci.image[:-1])
    with pytest.raises(InvalidInputError, match="floating"):
        fit(scene, science_variance=np.ones(sci.image.shape, np.int32))
    with pytest.raises(InvalidInputError, match="sigmas"):
        fit(scene, sigmas=(1.0, 2.0))
    with pytest.raises(InvalidInputError, match="Candidates"):
        fit(scene, candidates=(sci.x, sci.y))
    with pytest.raises(InvalidInputError, match="smaller than one"):
        small = np.zeros((30, 30), np.float32)
        fit(
            scene,
            template=small,
            science=small,
            template_variance=small + 1,
            science_variance=small + 1,
            candidates=make_candidates([15], [15]),
        )


def test_even_or_bad_kernel_configuration():
    with pytest.raises(InvalidInputError, match="odd"):
        KernelFitConfig(kernel_size=20)
    with pytest.raises(InvalidInputError, match="odd"):
        alard_lupton_basis(jnp.array([1.0]), (2,), 20)
    with pytest.raises(InvalidInputError, match="kernel_basis"):
        KernelFitConfig(kernel_basis="pca")
    with pytest.raises(InvalidInputError, match="spatial_model_type"):
        KernelFitConfig(spatial_model_type="legendre")
    with pytest.raises(InvalidInputError, match="max_spatial_iterations"):
        KernelFitConfig(max_spatial_iterations=0)


def test_candidate_sets_without_any_usable_entry(scene):
    with pytest.raises(InvalidInputError, match="no valid entry"):
        fit(scene, candidates=make_candidates([np.nan, np.nan], [1.0, 2.0]))
    with pytest.raises(InvalidInputError, match="inside the image"):
        fit(scene, candidates=make_candidates([3.0, 250.0], [3.0, 5.0]))
    with pytest.raises(InvalidInputError, match="capacity"):
        make_candidates([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], capacity=2)


def test_non_finite_pixels_drop_candidates_not_the_fit(scene):
    sci, tmpl, _, _ = scene
    image = sci.image.copy()
    i = 0
    image[int(round(sci.y[i])), int(round(sci.x[i]))] = np.nan
    sol = fit(scene, science=image)
    assert not np.asarray(sol.used)[i]
    assert np.isnan(float(sol.candidate_kernel_sums[i]))
    assert np.all(np.isfinite(np.asarray(sol.kernel_coefficients)))
    assert np.isfinite(float(sol.kernel_sum))


def test_all_candidates_unusable_raise_named_error(scene):
    sci, tmpl, _, _ = scene
    with pytest.raises(NoKernelCandidatesError, match="no usable kernel candidate"):
        fit(scene, science=np.full(sci.image.shape, np.nan, np.float32))
    with pytest.raises(NoKernelCandidatesError):
        zero = np.zeros(sci.image.shape, np.float32)
        fit(scene, template_variance=zero, science_variance=zero)


def test_status_inside_jit(scene):
    """Inside the user's jit there is no exception: a status that the caller turns into one."""
    sci, tmpl, sigmas, config = scene
    cands = candidates_for(sci)

    @jax.jit
    def status(science):
        return fit_kernel(
            tmpl.image, science, tmpl.variance, sci.variance, cands, config, sigmas, check=False
        ).status

    assert int(status(sci.image)) == 0
    bad = status(jnp.full(sci.image.shape, jnp.nan))
    assert int(bad) != 0
    assert any("no usable" in m for m in describe_status(bad))
    with pytest.raises(NoKernelCandidatesError):
        raise_for_status(bad)


def test_subtract_images_checks(scene):
    sci, tmpl, sigmas, config = scene
    with pytest.raises(InvalidInputError, match="mode"):
        subtract_images(masked(tmpl), masked(sci), candidates_for(sci), config, sigmas, mode="aotu")
    with pytest.raises(InvalidInputError, match="MaskedImage"):
        subtract_images(tmpl.image, masked(sci), candidates_for(sci), config, sigmas)
    mi = masked(sci)
    with pytest.raises(InvalidInputError, match="mask"):
        subtract_images(
            masked(tmpl), mi._replace(mask=mi.mask[:-1]), candidates_for(sci), config, sigmas
        )
