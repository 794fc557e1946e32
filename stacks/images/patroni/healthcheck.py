#!/usr/bin/python3
"""Healthy when Patroni's REST API says PostgreSQL runs here (leader, or a replica that streams)."""

import sys
import urllib.request

try:
    with urllib.request.urlopen("http://127.0.0.1:8008/health", timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
