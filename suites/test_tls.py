"""TLS of the entrypoint (and of PostgreSQL): protocols, ciphers, certificate, ALPN, redirect."""

import pytest
from stackcheck.fixtures.compliance import test_rule  # noqa: F401  (the per-rule test, collected here)

from stackcheck.compliance.model import Area

pytestmark = pytest.mark.compliance
AREA = Area.TLS
