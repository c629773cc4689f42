"""One typed family of user-facing errors.

Raise where the problem is detected and put the offending value (and file) in the message.
Only ``cli.py`` catches :class:`AtomicspiError`: it prints the message as one line and exits
with code 2. Any other exception is a bug and keeps its traceback.
"""


class AtomicspiError(Exception):
    """Base class of every error the command line reports as one line with exit code 2."""


class InputFormatError(AtomicspiError, ValueError):
    """An input file or array is missing, unreadable or inconsistent."""


class ConfigError(AtomicspiError, ValueError):
    """A setting or option is out of range or inconsistent with another one."""


class ConvergenceError(AtomicspiError, RuntimeError):
    """An inference run diverged (NaN/inf loss or parameters)."""


class MissingDependencyError(AtomicspiError, ImportError):
    """An optional package needed for this feature is not installed."""
