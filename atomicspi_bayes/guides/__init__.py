"""Amortized variational guides: neural encoders image -> q(z) (and q(pose)).

Public API::

    build_guide(key, cfg: ModelConfig, static: ModelStatic, example: ParticleBatch, *,
                kind="sensitivity"|"image", hidden=(128, 128), image_size=32,
                pose_heads=4) -> AmortizedGuide
    AmortizedGuide(batch)                  # the NumPyro guide (sites "z", "rotation", "shift")
    AmortizedGuide.encode(params, batch, refine_steps=0) -> Encoding(z_mean, z_sd, rotation,
                                                rotation_sd, shift_mean, shift_sd, head)
    pretrain_pose_encoder(key, guide, ctf_pool, *, steps=1000, batch_size=64,
                          learning_rate=1e-3) -> (AmortizedGuide, losses)   # sleep phase
    refine_poses(decoder, scale, sigma, batch, static, enc, steps) -> (rotations, shifts)
    MLPEncoder(in_size, out_size, hidden, *, key), ConvEncoder(image_size, side_size,
               out_size, channels=(16, 32, 32), hidden=(128,), *, key)   # equinox
    mode_sensitivity(batch, static, scale, sigma) -> (B, K); lowpass_images(batch, static,
               size, sigma) -> (B, S, S); pose_features(batch) -> (B, 9)
"""

from atomicspi_bayes.guides.amortized import AmortizedGuide, Encoding, build_guide, refine_poses
from atomicspi_bayes.guides.encoders import ConvEncoder, MLPEncoder
from atomicspi_bayes.guides.features import lowpass_images, mode_sensitivity, pose_features
from atomicspi_bayes.guides.pretrain import pretrain_pose_encoder

__all__ = [
    "AmortizedGuide",
    "ConvEncoder",
    "Encoding",
    "MLPEncoder",
    "build_guide",
    "lowpass_images",
    "mode_sensitivity",
    "pose_features",
    "pretrain_pose_encoder",
    "refine_poses",
]
