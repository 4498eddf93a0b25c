"""The package version, in a leaf module so that any module can name it without importing the package face."""

__version__ = "0.2.0"
