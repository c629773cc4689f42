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
"""

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
from atomicspi_bayes.physics.scattering import (
    bead_gaussians,
    cromer_mann,
    element_symbols,
    peng_gaussians,
)

__all__ = [
    "CTFParams",
    "axis_angle_to_matrix",
    "bead_gaussians",
    "cromer_mann",
    "ctf",
    "electron_wavelength",
    "element_symbols",
    "euler_to_matrix",
    "geodesic_angle",
    "interaction_constant",
    "matrix_to_axis_angle",
    "matrix_to_euler",
    "matrix_to_quaternion",
    "matrix_to_sixd",
    "peng_gaussians",
    "quaternion_to_matrix",
    "random_quaternions",
    "random_rotations",
    "sixd_to_matrix",
]
