"""Root conftest: load stackcheck's pytest fixtures (and pytester for the plugin's own tests)."""

pytest_plugins = [
    "fixtures.engine",
    "fixtures.stack",
    "fixtures.compliance",
    "fixtures.chaos",
    "fixtures.load",
    "fixtures.report",
    "pytester",
]
