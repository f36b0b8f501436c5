"""The version, in one place: setuptools reads it for the package metadata
(``[tool.setuptools.dynamic]`` in pyproject.toml) and ``soketi_impl.__version__`` is it."""

__version__ = "0.1.0"
