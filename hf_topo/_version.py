"""The version of hf_topo (the same string as ``version`` in pyproject.toml; a test checks that they agree)."""

__version__ = "0.1.0"
