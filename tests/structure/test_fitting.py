"""Fit open AdK to 50 noise-free projections of closed AdK through the simulator (slow)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.physics.cryoem import Scatterers, fourier_to_image, project_batch
from atomicspi_bayes.physics.geometry import random_rotations
from atomicspi_bayes.structure import coarse_grain, ideal_bond_lengths
from atomicspi_bayes.structure.align import kabsch_transform
from atomicspi_bayes.structure.fitting import FitConfig, fit_to_images
from atomicspi_bayes.structure.validation import geometry_report

BOX, PIXEL = 64, 2.0


@pytest.fixture(scope="module")
def adk_problem(adk_open, adk_closed):
    """Open beads (centred), closed truth nodes in the open frame, 50 clean projections."""
    beads_open = coarse_grain(adk_open)
    beads_closed = coarse_grain(adk_closed)
    beads = dataclasses.replace(beads_open, coords=beads_open.coords - beads_open.coords.mean(0))
    rot, t = kabsch_transform(beads_closed.coords, beads.coords)
    closed_nodes = (beads_closed.coords @ rot.T + t).astype(np.float32)
    closed_centres = np.asarray(beads_closed.scattering_coords()) @ rot.T + t
    rotations = random_rotations(jax.random.key(0), 50)
    shifts = jnp.zeros((50, 2), jnp.float32)
    scat = Scatterers.from_gaussians(jnp.asarray(beads_closed.a), jnp.asarray(beads_closed.b))
    ft, _ = project_batch(
        scat,
        jnp.asarray(closed_centres, jnp.float32),
        rotations,
        shifts,
        box=BOX,
        pixel_size=PIXEL,
    )
    clean = fourier_to_image(ft, BOX, PIXEL)
    sigma = jnp.sqrt(jnp.var(clean, axis=(1, 2)) / 0.1)  # noise level of SNR 0.1
    return beads, closed_nodes, clean, rotations, shifts, sigma


def _report(beads, coords, closed):
    lengths = ideal_bond_lengths(beads.coords, beads.bonded)
    return geometry_report(
        coords, beads.bonded, lengths, chain_index=beads.chain_index, reference=closed
    )


@pytest.mark.slow
def test_fit_with_priors_reaches_closed(adk_problem):
    beads, closed, clean, rotations, shifts, sigma = adk_problem
    start = _report(beads, beads.coords, closed)
    assert start["ca_rmsd"] > 6.5
    res = fit_to_images(
        beads, clean, rotations, shifts, pixel_size=PIXEL, noise_sigma=sigma, config=FitConfig()
    )
    rep = _report(beads, res.coords, closed)
    print(json.dumps({"fit_priors_noise_free": rep}))
    assert res.loss[-1] < 0.2 * res.loss[0]
    assert rep["ca_rmsd"] <= 1.5
    assert rep["trans_bonds_off"] == 0  # every trans Cα-Cα within 3.8 ± 0.1 Å
    assert 3.7 <= rep["trans_bond_min"] and rep["trans_bond_max"] <= 3.9
    assert abs(rep["cis_bond_min"] - 2.9) <= 0.1
    assert rep["severe_clashes"] == 0 and rep["min_nonbonded"] > 3.8


@pytest.mark.slow
def test_fit_without_priors_at_snr_0p1_breaks_geometry(adk_problem):
    beads, closed, clean, rotations, shifts, sigma = adk_problem
    noise = sigma[:, None, None] * jax.random.normal(jax.random.key(1), clean.shape)
    res = fit_to_images(
        beads,
        clean + noise,
        rotations,
        shifts,
        pixel_size=PIXEL,
        noise_sigma=sigma,
        config=FitConfig(use_priors=False, steps=80, mode_steps=25),
    )
    rep = _report(beads, res.coords, closed)
    print(json.dumps({"fit_no_priors_snr_0.1": rep}))
    # The likelihood alone lets beads chase the noise: bonds break and beads clash.
    assert rep["trans_bonds_off"] > 50 and rep["trans_bond_max"] > 5.0
    assert rep["ca_rmsd"] > 1.5


def test_fit_input_errors(model_1orc):
    beads = coarse_grain(model_1orc)
    images = jnp.zeros((2, 16, 16))
    rotations = jnp.stack([jnp.eye(3)] * 2)
    shifts = jnp.zeros((2, 2))
    with pytest.raises(InputFormatError, match="poses"):
        fit_to_images(beads, images, rotations[:1], shifts, pixel_size=PIXEL, noise_sigma=1.0)
    with pytest.raises(InputFormatError, match="NaN"):
        bad = images.at[0, 0, 0].set(jnp.nan)
        fit_to_images(beads, bad, rotations, shifts, pixel_size=PIXEL, noise_sigma=1.0)
    with pytest.raises(InputFormatError, match=r"\(B, L, L\)"):
        fit_to_images(beads, images[0], rotations, shifts, pixel_size=PIXEL, noise_sigma=1.0)
    with pytest.raises(ConfigError):
        FitConfig(steps=10, mode_steps=20)
    with pytest.raises(ConfigError):
        FitConfig(k_max=0.0)
