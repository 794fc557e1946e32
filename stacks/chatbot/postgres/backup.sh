#!/bin/bash
# Doc 002's backup.sh and restore.sh for the chatbot's PostgreSQL profile (stack-postgres.toml),
# run in the postgres container (`docker exec`, as doc 002's `docker-compose exec -T postgres`),
# as the server's own user over its local socket (peer authentication: no password anywhere).
#
#   backup.sh backup    pg_dump | gzip into $BACKUP_DIR (/backups) as chatbot-<UTC time>.sql.gz,
#                       written as .partial, checked, renamed into place; the oldest beyond
#                       $BACKUP_KEEP (7, doc 002's retention) removed. The API keeps writing:
#                       pg_dump reads one consistent snapshot.
#   backup.sh restore [FILE]
#                       the latest backup (or FILE) into the database, in one transaction (the
#                       dump drops and re-creates its tables: --clean). The API stopped meanwhile.
#   backup.sh check     the live database's row counts (runbook step 3: verify data integrity).
#
# Each command prints one JSON line: the file, and the rows of each table (for a backup: the rows
# the dump holds, counted in its COPY blocks, so the restore can be checked against them).
set -euo pipefail

dir="${BACKUP_DIR:-/backups}"
keep="${BACKUP_KEEP:-7}"
db="${POSTGRES_DB:?the postgres service sets POSTGRES_DB}"
tables=(conversations messages)

fail() {  # one JSON line with the reason, exit 1
  local text="$*"
  text="${text//\\/\\\\}"; text="${text//\"/\\\"}"; text="${text//$'\n'/ }"
  printf '{"error": "%s"}\n' "$text"
  exit 1
}
run_psql() { psql -X -q -v ON_ERROR_STOP=1 -h /tmp -U postgres -d "$db" "$@"; }

live_counts() {  # {"conversations": N, "messages": M} of the live database
  local sql="SELECT json_object_agg(t, n) FROM (" sep=""
  for t in "${tables[@]}"; do sql+="$sep SELECT '$t' AS t, count(*) AS n FROM $t"; sep=" UNION ALL"; done
  run_psql -At -c "$sql) AS counts"
}

dump_counts() {  # the rows of each COPY block in a dump (one line per row in COPY's text format)
  gunzip -c "$1" | awk '
    /^COPY public\./ { name = $2; sub(/^public\./, "", name); rows = 0; copying = 1; next }
    copying && /^\\\.$/ { printf "%s\"%s\": %d", sep, name, rows; sep = ", "; copying = 0; next }
    copying { rows++ }
    END { printf "\n" }'
}

backup() {
  local stamp target partial counts t removed=""
  stamp="$(date -u +%Y%m%dT%H%M%S%6NZ)"
  target="$dir/chatbot-$stamp.sql.gz"
  partial="$target.partial"
  trap "rm -f -- $(printf %q "$partial")" EXIT  # expanded now: the local is gone when the trap runs
  pg_dump -h /tmp -U postgres --clean --if-exists "$db" | gzip > "$partial" || fail "backup: pg_dump failed"
  gzip -t "$partial" || fail "backup: $partial is not a whole gzip file"
  counts="$(dump_counts "$partial")"
  for t in "${tables[@]}"; do  # a dump without a table's data would restore it empty
    [[ "$counts" == *"\"$t\":"* ]] || fail "backup: the dump of $db has no data for table $t"
  done
  sync "$partial"
  mv "$partial" "$target"
  sync "$dir"
  while read -r old; do
    [[ -n "$old" ]] || continue
    rm -f "$old"
    removed+="${removed:+, }\"$(basename "$old")\""
  done < <(find "$dir" -maxdepth 1 -name 'chatbot-*.sql.gz' | sort | head -n "-$keep")
  printf '{"file": "%s", "tables": {%s}, "removed": [%s]}\n' "$target" "$counts" "$removed"
}

restore() {
  local file="${1:-}"
  [[ -n "$file" ]] || file="$(find "$dir" -maxdepth 1 -name 'chatbot-*.sql.gz' | sort | tail -n 1)"
  [[ -n "$file" ]] || fail "restore: no backup in $dir"
  [[ -f "$file" ]] || fail "restore: $file does not exist"
  gzip -t "$file" 2>/dev/null || fail "restore: $file is damaged (not a whole gzip file)"
  local output
  output="$(gunzip -c "$file" | run_psql --single-transaction 2>&1 >/dev/null)" || fail "restore: psql: $output"
  printf '{"file": "%s", "database": "%s", "tables": %s}\n' "$file" "$db" "$(live_counts)"
}

case "${1:-}" in
  backup) backup ;;
  restore) restore "${2:-}" ;;
  check) printf '{"database": "%s", "tables": %s}\n' "$db" "$(live_counts)" ;;
  *) fail "usage: backup.sh backup | restore [FILE] | check" ;;
esac
