#!/bin/bash
# Patroni's post_bootstrap (run once, on the member that initialises the cluster): the
# application role (no superuser) and its database. $1 is Patroni's local connection string.
set -euo pipefail
app_user="${POSTGRES_APP_USER:-}"
db="${POSTGRES_DB:-app}"
[[ -n "$app_user" ]] || { psql "$1" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE \"$db\""; exit; }
# The password goes in as a psql variable on stdin, so it never shows up in `ps`.
psql "$1" -v ON_ERROR_STOP=1 -q -v db="$db" -v app_user="$app_user" <<SQL
\set app_pw '$(printf '%s' "${POSTGRES_APP_PASSWORD_VALUE:-}" | sed "s/'/''/g")'
CREATE ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_pw';
CREATE DATABASE :"db" OWNER :"app_user";
\c :"db"
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
SQL
