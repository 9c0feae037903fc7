"""The package version (one place; ``pyproject.toml`` repeats it and a test keeps them equal)."""

__version__ = "0.2.0"
