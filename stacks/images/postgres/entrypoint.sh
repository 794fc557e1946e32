#!/bin/bash
# Initialise (primary: initdb + roles; replica: pg_basebackup from PRIMARY_HOST) on first start,
# then run postgres in the foreground. Secrets come from NAME or NAME_FILE, never the image.
set -euo pipefail

die() { echo "pg-entrypoint: $*" >&2; exit 1; }
secret() {
  local file_var="${1}_FILE"
  if [[ -n "${!file_var:-}" ]]; then cat "${!file_var}"; else printf '%s' "${!1:-}"; fi
}

role="${PG_ROLE:-primary}"
conf_extra="$PGDATA/stackcheck.conf"

init_primary() {
  local su_pw; su_pw="$(secret POSTGRES_PASSWORD)"
  [[ -n "$su_pw" ]] || die "set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE"
  initdb -D "$PGDATA" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --pwfile=<(printf '%s\n' "$su_pw") --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  if [[ -n "${PG_SSL_CERT_FILE:-}" ]]; then
    cp "$PG_SSL_CERT_FILE" "$PGDATA/server.crt"; cp "$PG_SSL_KEY_FILE" "$PGDATA/server.key"
  else
    openssl req -new -x509 -days 365 -nodes -subj "/CN=${HOSTNAME:-postgres}" \
      -keyout "$PGDATA/server.key" -out "$PGDATA/server.crt" 2>/dev/null
  fi
  chmod 600 "$PGDATA/server.key"
  {
    echo "listen_addresses = '*'"
    echo "unix_socket_directories = '/tmp'"
    echo "password_encryption = 'scram-sha-256'"
    echo "wal_level = replica"
    echo "max_wal_senders = 10"
    echo "wal_keep_size = '256MB'"
    echo "hot_standby = on"
    echo "ssl = ${PG_SSL:-on}"
    echo "shared_preload_libraries = 'pg_stat_statements'"
  } >> "$PGDATA/postgresql.conf"
  echo "include_if_exists = 'stackcheck.conf'" >> "$PGDATA/postgresql.conf"
  {
    [[ -n "${PG_HBA_PREPEND:-}" ]] && printf '%s\n' "$PG_HBA_PREPEND"
    echo "local all all peer"
    echo "host replication all all scram-sha-256"
    echo "host all all all scram-sha-256"
  } > "$PGDATA/pg_hba.conf"

  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c ssl=off" -w start >/dev/null
  local app_user="${POSTGRES_APP_USER:-}" app_pw; app_pw="$(secret POSTGRES_APP_PASSWORD)"
  local repl_user="${POSTGRES_REPLICATION_USER:-}" repl_pw; repl_pw="$(secret POSTGRES_REPLICATION_PASSWORD)"
  local db="${POSTGRES_DB:-app}"
  # Passwords go in as psql variables on stdin, so they never show up in `ps`.
  psql -v ON_ERROR_STOP=1 -h /tmp -U postgres -d postgres -q \
    -v db="$db" -v app_user="$app_user" -v repl_user="$repl_user" <<SQL
\set app_pw '$(printf '%s' "$app_pw" | sed "s/'/''/g")'
\set repl_pw '$(printf '%s' "$repl_pw" | sed "s/'/''/g")'
SELECT (:'app_user' <> '') AS have_app \gset
SELECT (:'repl_user' <> '') AS have_repl \gset
\if :have_app
CREATE ROLE :"app_user" LOGIN PASSWORD :'app_pw';
CREATE DATABASE :"db" OWNER :"app_user";
\else
CREATE DATABASE :"db";
\endif
\if :have_repl
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_pw';
\endif
\c :"db"
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
  for f in /docker-entrypoint-initdb.d/*.sql; do
    [[ -e "$f" ]] && psql -v ON_ERROR_STOP=1 -h /tmp -U postgres -d "$db" -q -f "$f"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
}

init_replica() {
  [[ -n "${PRIMARY_HOST:-}" ]] || die "PG_ROLE=replica needs PRIMARY_HOST"
  local pw; pw="$(secret POSTGRES_REPLICATION_PASSWORD)"
  local tries=0
  until PGPASSWORD="$pw" pg_basebackup -h "$PRIMARY_HOST" -p "${PRIMARY_PORT:-5432}" \
      -U "${POSTGRES_REPLICATION_USER:?set POSTGRES_REPLICATION_USER}" -D "$PGDATA" -R -X stream -c fast; do
    tries=$((tries + 1)); (( tries < 60 )) || die "pg_basebackup from $PRIMARY_HOST failed 60 times"
    rm -rf "${PGDATA:?}"/*; sleep 1
  done
}

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  case "$role" in
    primary) init_primary ;;
    replica) init_replica ;;
    *) die "PG_ROLE must be primary or replica, not '$role'" ;;
  esac
fi
# Per-run settings (e.g. a broken variant's overrides) without editing the image.
printf '%s\n' "${PG_EXTRA_CONF:-}" > "$conf_extra"
exec postgres -D "$PGDATA" "$@"
