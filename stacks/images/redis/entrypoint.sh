#!/bin/bash
# Writes the config to /tmp (so the root fs may be read-only and passwords never appear in `ps`),
# then runs redis-server. Secrets come from NAME or NAME_FILE.
set -euo pipefail
secret() {
  local file_var="${1}_FILE"
  if [[ -n "${!file_var:-}" ]]; then cat "${!file_var}"; else printf '%s' "${!1:-}"; fi
}
conf=/tmp/redis.conf
password="$(secret REDIS_PASSWORD)"
admin_password="$(secret REDIS_ADMIN_PASSWORD)"

if [[ "${1:-}" == "--healthcheck" ]]; then
  export REDISCLI_AUTH="$password"
  [[ "$(redis-cli -h 127.0.0.1 ping 2>/dev/null)" == "PONG" ]]; exit
fi

umask 077
{
  echo "bind 0.0.0.0"
  echo "protected-mode yes"
  echo "port 6379"
  echo "dir /data"
  echo "appendonly ${REDIS_APPENDONLY:-yes}"
  echo "appendfsync ${REDIS_APPENDFSYNC:-everysec}"
  echo "maxmemory ${REDIS_MAXMEMORY:-128mb}"
  echo "maxmemory-policy ${REDIS_MAXMEMORY_POLICY:-allkeys-lru}"
  if [[ -n "$password" ]]; then
    # The application user (default) may not flush, reconfigure or debug the server.
    echo "user default on >$password ~* &* +@all -@dangerous"
  fi
  if [[ -n "$admin_password" ]]; then
    echo "user admin on >$admin_password ~* &* +@all"
  fi
  printf '%s\n' "${REDIS_EXTRA_CONF:-}"
} > "$conf"
exec redis-server "$conf" "$@"
