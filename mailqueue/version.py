"""The package's version, for the User-Agent and ``mailqueue.__version__``."""

__version__ = "0.1.0"
