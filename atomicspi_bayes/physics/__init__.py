"""Differentiable image-formation physics (pure JAX, no NumPyro): rotations, scattering factors,
CTF, cryo-EM projection, noise. Conventions: SCIENCE.md (RELION poses and CTF, Å, radians).

Public API (see each module for units and shapes):

geometry:   euler_to_matrix(angles (...,3) rad) -> (...,3,3) RELION A; matrix_to_euler;
            quaternion_to_matrix / matrix_to_quaternion ([w,x,y,z]); axis_angle_to_matrix /
            matrix_to_axis_angle; random_rotations(key, n) -> (n,3,3); random_quaternions;
            geodesic_angle(r1, r2) rad; sixd_to_matrix(x (...,6)) / matrix_to_sixd
scattering: peng_gaussians(elements) -> (a (N,5) Å, b (N,5) Å²); cromer_mann(elements) ->
            (a (N,4), b (N,4), c (N,)); bead_gaussians(a, b, coords, groups, n_groups) ->
            (bead_coords (G,3), a (G,K), b (G,K)); element_symbols(elements)
ctf:        CTFParams (NamedTuple; defocus_u/v Å, defocus_angle rad, voltage_kv, cs_mm,
            amplitude_contrast, phase_shift rad, bfactor Å², scale; CTFParams.create(...),
            CTFParams.from_metadata(meta, indices)); electron_wavelength(kv) Å;
            interaction_constant(kv) rad/(V·Å); ctf(freqs (...,2) 1/Å, params) -> (...)
cryoem:     Scatterers.from_elements(elements, b_factors=None) (fast all-atom layout) /
            Scatterers.from_gaussians(a (N,K), b (N,K)) (beads);
            project_batch(scat, coords (N,3)|(B,N,3), rotations (B,3,3), shifts (B,2) Å, *, box,
              pixel_size, k_max=None, chunk=None) -> (V̂ (B,L,L//2+1) c64 V·Å³, mask (L,L//2+1))
            simulate_batch(scat, coords, rotations, shifts, ctf_params (B,) leaves, *, box,
              pixel_size, k_max=None, chunk=None) -> (σ_e·CTF·V̂ (B,L,L//2+1) rad·Å², mask)
            project_fourier(coords, a, b, rotation, shift, box, pixel_size) -> (L,L//2+1)
            simulate_fourier(coords, a, b, rotation, shift, ctf_params, box, pixel_size)
            simulate_image(...) -> (L,L) float32 phase (rad/pixel), RELION sign
            rfft_frequencies(box, pixel_size) -> (L,L//2+1,2) 1/Å; frequency_mask(box, p, k_max);
            image_to_fourier(images, pixel_size) = p²·rfft2(ifftshift(.));
            fourier_to_image(ft, box, pixel_size) = fftshift(irfft2(.))/p²; POTENTIAL_CONSTANT
noise:      noise_sigma_for_snr(clean (...,L,L), snr) -> (...); add_white_noise(key, images,
            sigma); gaussian_loglik_fourier(obs_ft, model_ft, sigma, freq_mask=None, *,
            pixel_size) -> (...); gaussian_loglik_real; hermitian_weights(box)
"""

from atomicspi_bayes.physics.cryoem import (
    POTENTIAL_CONSTANT,
    Scatterers,
    fourier_to_image,
    frequency_mask,
    image_to_fourier,
    project_batch,
    project_fourier,
    rfft_frequencies,
    simulate_batch,
    simulate_fourier,
    simulate_image,
)
from atomicspi_bayes.physics.ctf import CTFParams, ctf, electron_wavelength, interaction_constant
from atomicspi_bayes.physics.geometry import (
    axis_angle_to_matrix,
    euler_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_euler,
    matrix_to_quaternion,
    matrix_to_sixd,
    quaternion_to_matrix,
    random_quaternions,
    random_rotations,
    sixd_to_matrix,
)
from atomicspi_bayes.physics.noise import (
    add_white_noise,
    gaussian_loglik_fourier,
    gaussian_loglik_real,
    hermitian_weights,
    noise_sigma_for_snr,
)
from atomicspi_bayes.physics.scattering import (
    bead_gaussians,
    cromer_mann,
    element_symbols,
    peng_gaussians,
)

__all__ = [
    "POTENTIAL_CONSTANT",
    "CTFParams",
    "Scatterers",
    "add_white_noise",
    "axis_angle_to_matrix",
    "bead_gaussians",
    "cromer_mann",
    "ctf",
    "electron_wavelength",
    "element_symbols",
    "euler_to_matrix",
    "fourier_to_image",
    "frequency_mask",
    "gaussian_loglik_fourier",
    "gaussian_loglik_real",
    "geodesic_angle",
    "hermitian_weights",
    "image_to_fourier",
    "interaction_constant",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "matrix_to_sixd",
    "noise_sigma_for_snr",
    "peng_gaussians",
    "project_batch",
    "project_fourier",
    "quaternion_to_matrix",
    "random_quaternions",
    "random_rotations",
    "rfft_frequencies",
    "simulate_batch",
    "simulate_fourier",
    "simulate_image",
    "sixd_to_matrix",
]
