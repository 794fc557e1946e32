"""Root conftest: load stackcheck's pytest fixtures for every test directory."""

pytest_plugins = ["fixtures.engine", "fixtures.stack"]
