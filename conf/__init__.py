"""The Hydra config root, installed as the package ``sweep.conf`` (pyproject.toml maps it), so
that ``python -m sweep`` finds it from an editable install and from a wheel alike.

Importing it registers the schema that config.yaml extends (``base_config``, sweep.config): Hydra
imports this package before it reads a file of it, whoever composes (the command line,
``initialize_config_module("sweep.conf")`` in a notebook or a test).
"""

from sweep.config import register

register()
