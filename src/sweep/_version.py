"""The package version: one place, read by the package and by its build (pyproject)."""

__version__ = "0.1.0"
