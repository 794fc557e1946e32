#!/bin/bash
# Healthy once /-/ready answers 200: the TSDB is open and the config (rules included) loaded.
set -euo pipefail
exec 3<>"/dev/tcp/127.0.0.1/${PROMETHEUS_PORT:-9090}"
printf 'GET /-/ready HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
read -r -t 2 _ status _ <&3
[[ "$status" == "200" ]]
