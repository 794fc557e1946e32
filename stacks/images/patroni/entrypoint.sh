#!/bin/bash
# Run Patroni with the stack's config: the YAML files in /etc/patroni, merged in name order (the
# cluster's shared file, then a member's own, e.g. its tags). Credentials come from the same env
# names as the postgres image (NAME or NAME_FILE) and reach Patroni as its own PATRONI_* env
# vars, so no config file holds a password. TLS files mounted in /run/tls are copied with the
# mode PostgreSQL demands of a key (0600, owned by the server's user): a mounted one is root's.
set -euo pipefail

die() { echo "patroni-entrypoint: $*" >&2; exit 1; }
secret() {
  local file_var="${1}_FILE"
  if [[ -n "${!file_var:-}" ]]; then cat "${!file_var}"; else printf '%s' "${!1:-}"; fi
}

[[ -n "${PATRONI_NAME:-}" ]] || die "set PATRONI_NAME (the member's name)"
config="${PATRONI_CONFIG:-/etc/patroni}"
compgen -G "$config/*.yml" >/dev/null || [[ -f "$config" ]] || die "mount the cluster's Patroni config in $config"

for file in /run/tls/*; do
  if [[ -f "$file" ]]; then install -m 600 "$file" "/var/lib/postgresql/tls/$(basename "$file")"; fi
done

export PATRONI_SUPERUSER_USERNAME=postgres
PATRONI_SUPERUSER_PASSWORD="$(secret POSTGRES_PASSWORD)"
export PATRONI_SUPERUSER_PASSWORD
[[ -n "$PATRONI_SUPERUSER_PASSWORD" ]] || die "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE"
export PATRONI_REPLICATION_USERNAME="${POSTGRES_REPLICATION_USER:-replicator}"
PATRONI_REPLICATION_PASSWORD="$(secret POSTGRES_REPLICATION_PASSWORD)"
export PATRONI_REPLICATION_PASSWORD
[[ -n "$PATRONI_REPLICATION_PASSWORD" ]] || die "set POSTGRES_REPLICATION_PASSWORD"
# pg_rewind lets a failed primary rejoin as a replica without a full copy.
export PATRONI_REWIND_USERNAME="${POSTGRES_REWIND_USER:-rewinder}"
PATRONI_REWIND_PASSWORD="$(secret POSTGRES_REWIND_PASSWORD)"
export PATRONI_REWIND_PASSWORD
[[ -n "$PATRONI_REWIND_PASSWORD" ]] || die "set POSTGRES_REWIND_PASSWORD"
PATRONI_RESTAPI_PASSWORD="$(secret PATRONI_RESTAPI_PASSWORD)"
if [[ -n "$PATRONI_RESTAPI_PASSWORD" ]]; then
  export PATRONI_RESTAPI_USERNAME="${PATRONI_RESTAPI_USERNAME:-patroni}" PATRONI_RESTAPI_PASSWORD
elif [[ "${PATRONI_RESTAPI_OPEN:-}" == "yes" ]]; then
  # Only for a deliberately broken variant (patroni-rest-auth must fail on it).
  unset PATRONI_RESTAPI_USERNAME PATRONI_RESTAPI_PASSWORD
else
  die "set PATRONI_RESTAPI_PASSWORD: the REST API (failover, restart, config) is never open"
fi
# post_bootstrap reads the application role's password from here, not from its command line.
export POSTGRES_APP_PASSWORD_VALUE; POSTGRES_APP_PASSWORD_VALUE="$(secret POSTGRES_APP_PASSWORD)"

exec patroni "$config"
