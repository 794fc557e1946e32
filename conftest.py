"""Root conftest of this repository, deliberately empty.

The stackcheck plugin (fixtures, options, markers, results collector) comes from the package's
``pytest11`` entry point, so a team's repository gets it from ``pip install stackcheck`` alone;
the project's own tests add pytester through ``addopts`` in pyproject.toml. A ``pytest_plugins``
here would also break collecting the product suites from an editable install elsewhere.
"""
