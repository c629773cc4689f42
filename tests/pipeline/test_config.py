"""FitConfig: validation, TOML recipes and round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from atomicspi_bayes.errors import ConfigError, InputFormatError
from atomicspi_bayes.pipeline import FitConfig, read_fit_config, write_fit_config

MODELS = Path(__file__).resolve().parents[2] / "models"


def test_toml_round_trip_keeps_every_setting(tmp_path):
    cfg = FitConfig(latent_dim=2, poses="amortized", decoder_hidden=(32,), resolution=7.5,
                    z_prior="mixture", force=True)  # fmt: skip
    path = tmp_path / "config.toml"
    write_fit_config(path, cfg, {"n_particles": 12, "particles": 'a "quoted" path'})
    assert read_fit_config(path) == cfg


@pytest.mark.parametrize("recipe", sorted(MODELS.glob("*.toml")), ids=lambda p: p.name)
def test_model_recipes_are_valid_fit_configs(recipe):
    cfg = read_fit_config(recipe)
    assert isinstance(cfg, FitConfig)


def test_top_level_keys_are_accepted_and_unknown_keys_refused(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text("latent_dim = 2\nepochs = 3\n")
    assert read_fit_config(path) == FitConfig(latent_dim=2, epochs=3)
    path.write_text("[fit]\nlatent_dims = 2\n")
    with pytest.raises(ConfigError, match="latent_dims"):
        read_fit_config(path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("epochs = 1.5", "integer"),
        ("poses = 1", "string"),
        ("decoder_hidden = 64", "list"),
        ("learn_noise = 1", "true or false"),
        ('poses = "free"', "poses"),
        ("resolution = -2.0", "resolution"),
        ('encoder = "sensitivity"\nposes = "amortized"', "sensitivity"),
    ],
)
def test_bad_values_are_config_errors(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match=match):
        read_fit_config(path)


def test_missing_or_broken_file_is_an_input_error(tmp_path):
    with pytest.raises(InputFormatError, match="not found"):
        read_fit_config(tmp_path / "none.toml")
    (tmp_path / "broken.toml").write_text("epochs = = 3\n")
    with pytest.raises(InputFormatError, match="TOML"):
        read_fit_config(tmp_path / "broken.toml")


def test_replace_ignores_options_not_given():
    cfg = FitConfig(epochs=7).replace(epochs=None, seed=3)
    assert cfg.epochs == 7 and cfg.seed == 3
    assert FitConfig().encoder_kind == "sensitivity"
    assert FitConfig(poses="amortized").encoder_kind == "image"
