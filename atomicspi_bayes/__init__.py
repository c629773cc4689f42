"""atomicspi-bayes: atomic models, poses and conformational landscapes from particle images."""

from atomicspi_bayes.errors import (
    AtomicspiError,
    ConfigError,
    ConvergenceError,
    InputFormatError,
    MissingDependencyError,
)

__version__ = "0.1.0"

__all__ = [
    "AtomicspiError",
    "ConfigError",
    "ConvergenceError",
    "InputFormatError",
    "MissingDependencyError",
    "__version__",
]
