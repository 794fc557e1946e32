"""Data shipped with stackcheck: the default policy (``default.toml``)."""
