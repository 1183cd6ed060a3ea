"""qeffbuild: a declarative, cached build system for model artifacts."""

__version__ = "0.1.0"
