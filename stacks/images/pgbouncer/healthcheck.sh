#!/bin/bash
# Healthy when PgBouncer accepts connections on its port (pg_isready: no credentials needed).
exec pg_isready -q -h 127.0.0.1 -p "${PGBOUNCER_PORT:-6432}" -t 2
