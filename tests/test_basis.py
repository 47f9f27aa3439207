"""Ports of ip_diffim tests/test_basisLists.py and the width rule (ip_diffim.md §2.1, §3.5)."""

import jax
import numpy as np
import pytest

from jaxdiffim import InvalidInputError, alard_lupton_basis, alard_lupton_sigmas
from jaxdiffim.core.basis import (
    FWHM_PER_SIGMA,
    delta_function_basis,
    n_alard_lupton,
    renormalize_kernels,
)
from jaxdiffim.core.regularization import (
    central_difference_matrix,
    forward_difference_matrix,
    regularization_matrix,
)

# "7 places" of ip_diffim (|diff| < 5e-8) in float64; float32 rounding allows 1e-6.
TOL = {"float64": 5e-8, "float32": 1e-6}


def assert_al_normalised(basis):
    tol = TOL[str(basis.dtype)]
    basis = np.asarray(basis, float)
    assert basis[0].sum() == pytest.approx(1.0, abs=tol)
    np.testing.assert_allclose(basis[1:].sum(axis=(1, 2)), 0.0, atol=tol)
    np.testing.assert_allclose((basis[1:] ** 2).sum(axis=(1, 2)), 1.0, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_alard_lupton_default_list(dtype):
    with jax.enable_x64(dtype == "float64"):
        basis = alard_lupton_basis(np.array([0.7, 1.5, 3.0], dtype), (4, 2, 2), 21)
        assert basis.dtype == dtype
    assert basis.shape == (27, 21, 21)
    assert n_alard_lupton((4, 2, 2)) == 27 == 15 + 6 + 6
    assert_al_normalised(basis)


def test_alard_lupton_from_fwhm():
    sigmas, size = alard_lupton_sigmas(3.0, 4.0)
    with jax.enable_x64(True):
        assert_al_normalised(alard_lupton_basis(np.array(sigmas), (4, 2, 2), size))


def test_basis_terms_are_gaussian_times_polynomial():
    """B_0 is the unit-sum Gaussian; term 1 (x) of the first Gaussian is G(u) u/h normalised."""
    with jax.enable_x64(True):
        basis = np.asarray(alard_lupton_basis(np.array([1.2, 2.0]), (2, 1), 9))
    u = np.arange(-4, 5)
    g = np.exp(-0.5 * (u / 1.2) ** 2)
    g2 = np.outer(g, g) / np.outer(g, g).sum()
    np.testing.assert_allclose(basis[0], g2, atol=1e-15)
    x_term = g2 * (u[None, :] / 4.0)
    np.testing.assert_allclose(basis[1], x_term / np.sqrt((x_term**2).sum()), atol=1e-15)
    y_term = g2 * (u[:, None] / 4.0)
    np.testing.assert_allclose(basis[2], y_term / np.sqrt((y_term**2).sum()), atol=1e-15)


def test_width_rule_worked_examples():
    """ip_diffim.md §2.1: sigma 2.0 -> 2.4 gives [0.7, 1.4, 2.8] and 21; 9.5 vs 2.8 gives 35."""
    sig, size = alard_lupton_sigmas(2.0 * FWHM_PER_SIGMA, 2.4 * FWHM_PER_SIGMA)
    np.testing.assert_allclose(sig, [0.7, 1.4, 2.8])
    assert size == 21
    sig, size = alard_lupton_sigmas(9.5 * FWHM_PER_SIGMA, 2.8 * FWHM_PER_SIGMA)
    sk = np.sqrt(9.5**2 - 2.8**2)
    np.testing.assert_allclose(sig, [sk / 2, sk, 2 * sk])
    assert size == 35
    # deconvolution floor 0.4, convolution floor 0.7
    sig, _ = alard_lupton_sigmas(2.05 * FWHM_PER_SIGMA, 2.0 * FWHM_PER_SIGMA)
    assert sig[0] == pytest.approx(0.4)
    sig, _ = alard_lupton_sigmas(2.0 * FWHM_PER_SIGMA, 2.05 * FWHM_PER_SIGMA)
    assert sig[0] == pytest.approx(0.7)
    # equal FWHMs keep the configured widths; no FWHM -> config as given
    assert alard_lupton_sigmas(4.0, 4.0)[0] == (0.7, 1.5, 3.0)
    assert alard_lupton_sigmas(None, 4.0, kernel_size=19) == ((0.7, 1.5, 3.0), 19)
    assert alard_lupton_sigmas(3.0, 4.0, scale_by_fwhm=False) == ((0.7, 1.5, 3.0), 21)
    # a single Gaussian takes sigma_K itself
    sig, _ = alard_lupton_sigmas(
        2.0 * FWHM_PER_SIGMA, 2.6 * FWHM_PER_SIGMA, n_gauss=1, sig_gauss=(1.0,)
    )
    assert sig[0] == pytest.approx(np.sqrt(2.6**2 - 2.0**2))


def test_width_rule_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="odd"):
        alard_lupton_sigmas(3.0, 4.0, kernel_size=20)
    with pytest.raises(InvalidInputError, match="n_gauss"):
        alard_lupton_sigmas(3.0, 4.0, n_gauss=2)
    with pytest.raises(InvalidInputError, match="FWHM"):
        alard_lupton_sigmas(float("nan"), 4.0)


def test_renormalize_gaussians():
    """testRenormalize: Gaussians (2,2), (3,4), (0.2,0.25) -> sums 1, 0, 0 and norms 1."""
    u = np.arange(-10, 11)
    kernels = np.stack(
        [
            np.exp(-(u[None, :] ** 2) / (2 * sx**2) - u[:, None] ** 2 / (2 * sy**2))
            / (2 * np.pi * sx * sy)
            for sx, sy in ((2, 2), (3, 4), (0.2, 0.25))
        ]
    )
    assert abs(kernels[1].sum() - 1) > 1e-3 and abs((kernels[2] ** 2).sum() - 1) > 1e-3
    with jax.enable_x64(True):
        out = np.asarray(renormalize_kernels(kernels))
    np.testing.assert_allclose(out.sum(axis=(1, 2)), [1, 0, 0], atol=5e-8)
    np.testing.assert_allclose((out[1:] ** 2).sum(axis=(1, 2)), 1, atol=5e-8)


def test_delta_function_basis():
    basis = np.asarray(delta_function_basis(21))
    assert basis.shape == (441, 21, 21)
    for n in (0, 5, 22, 440):
        row, col = divmod(n, 21)
        assert basis[n, row, col] == 1 and basis[n].sum() == 1


def test_regularization_matrices():
    for stencil in (5, 9):
        h = regularization_matrix(21, "centralDifference", stencil=stencil)
        assert h.shape == (442, 442)
        np.testing.assert_array_equal(h[-1], 0)
        np.testing.assert_allclose(h, h.T)
        assert np.all(np.linalg.eigvalsh(h[:-1, :-1]) > -1e-9)
    with pytest.raises(InvalidInputError, match="5 or 9"):
        central_difference_matrix(21, stencil=1)
    with pytest.raises(InvalidInputError, match="border_penalty"):
        central_difference_matrix(21, border_penalty=-1)
    central_difference_matrix(21, border_penalty=0.0)
    for orders in ((0,), (4,)):
        with pytest.raises(InvalidInputError, match="1..3"):
            forward_difference_matrix(21, orders)
    forward_difference_matrix(21, (1,))
    h = regularization_matrix(5, "forwardDifference", orders=(1, 2), fit_background=False)
    assert h.shape == (25, 25)
    with pytest.raises(InvalidInputError, match="regularization_type"):
        regularization_matrix(21, "foo")


def test_laplacian_annihilates_planes():
    """Interior rows of the stencils give 0 on any plane a + bx + cy (a discrete Laplacian)."""
    y, x = np.divmod(np.arange(49), 7)
    plane = 1.0 + 2.0 * x - 0.5 * y
    for stencil in (5, 9):
        b = central_difference_matrix(7, stencil, border_penalty=3.0)
        interior = (x > 0) & (x < 6) & (y > 0) & (y < 6)
        np.testing.assert_allclose((b @ plane)[interior], 0, atol=1e-12)
        np.testing.assert_allclose((b @ plane)[~interior], 3.0 * plane[~interior])
