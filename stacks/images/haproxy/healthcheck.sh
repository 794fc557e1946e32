#!/bin/bash
# Healthy when the monitor URI answers 200: the stack's config makes it fail while no server of
# the write backend is up, so "healthy" means writes have a leader to go to.
set -euo pipefail
exec 3<>"/dev/tcp/127.0.0.1/${HAPROXY_MONITOR_PORT:-8404}"
printf 'GET %s HTTP/1.0\r\n\r\n' "${HAPROXY_MONITOR_URI:-/health}" >&3
read -r -t 2 _ status _ <&3
[[ "$status" == "200" ]]
