#!/bin/bash
# No curl in the image: speak HTTP/1.0 over bash's /dev/tcp to the plain-HTTP port.
exec 3<>/dev/tcp/127.0.0.1/"${HEALTHCHECK_PORT:-8080}" || exit 1
printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "${HEALTHCHECK_PATH:-/healthz}" >&3
read -r -t 3 status <&3 || exit 1
[[ $status =~ ^HTTP/1\.[01]\ [23] ]]
