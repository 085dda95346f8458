"""The package version, in the base layer so that every layer can name its writer."""

__version__ = "0.1.0"
