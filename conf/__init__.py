# Makes the config root the package `sweep.conf` (pyproject.toml maps it), so that
# `python -m sweep` finds it from an editable install and from a wheel alike.
