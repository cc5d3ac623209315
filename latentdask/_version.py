"""The package version, in one place (the store records, outputs and the CLI read it here)."""

__version__ = "0.1.0"
