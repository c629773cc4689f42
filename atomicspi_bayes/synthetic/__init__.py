"""Ground-truth synthetic datasets (cryo-EM particles, X-ray diffraction patterns).

cryoem: CryoEMDatasetConfig (frozen, validated); simulate_dataset(key, frames (F,N,3) | (N,3),
        elements, config, *, weights, residue_index, n_residues, anchor, progress) ->
        SyntheticParticles (images, rotations, shifts, ctf, frame_index, path_position,
        noise_sigma, clean_variance, snr); simulate_cryoem_dataset(key, structure_path,
        out_dir, config, *, trajectory_path, topology_path, weights, force, progress) -> dict
        (writes particles.star/.mrcs, truth.npz, simulation.json); align_frames;
        load_frame_weights.
xray:   XrayDatasetConfig, default_xray_geometry, simulate_xray_dataset, read_xray_dataset.
"""

from atomicspi_bayes.synthetic.cryoem import (
    CryoEMDatasetConfig,
    SyntheticParticles,
    align_frames,
    load_frame_weights,
    simulate_cryoem_dataset,
    simulate_dataset,
)
from atomicspi_bayes.synthetic.xray import (
    XrayDatasetConfig,
    default_xray_geometry,
    read_xray_dataset,
    simulate_xray_dataset,
)

__all__ = [
    "CryoEMDatasetConfig",
    "SyntheticParticles",
    "XrayDatasetConfig",
    "align_frames",
    "default_xray_geometry",
    "load_frame_weights",
    "read_xray_dataset",
    "simulate_cryoem_dataset",
    "simulate_dataset",
    "simulate_xray_dataset",
]
