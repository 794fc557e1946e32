"""The product suites, shipped in the wheel: ``compliance`` (the repository's ``suites/``), ``load``
and ``chaos``. ``pytest --stack FILE`` collects them from here (see ``stackcheck.fixtures.plugin``)."""
