#!/usr/bin/env bash
# scripts/demo.sh — make run's demo workspace and the lines it prints.
#
# Usage (DATABASE_URL set, migrations applied):
#   scripts/demo.sh ensure BIN   make FILE (default .data/demo.json) hold keys of the
#                                `demo` workspace that DATABASE_URL knows: keep it when
#                                its admin key is an active key of demo there; else
#                                create the workspace, or, when it exists (another
#                                database's file, or the file was removed), issue new
#                                admin and write keys and a new webhook secret for it
#   scripts/demo.sh print        print the keys, the URLs (from C360_ADDR) and the
#                                database (its password redacted)
#
# Environment: DATABASE_URL, C360_ADDR (default :8080), C360_DEMO_FILE (default
# .data/demo.json).
set -euo pipefail

FILE="${C360_DEMO_FILE:-.data/demo.json}"
SLUG=demo

# json_field NAME FILE prints the JSON string field NAME of FILE (no jq needed).
json_field() { grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$2" | head -n1 | sed 's/.*"\([^"]*\)"$/\1/'; }

# valid BIN: FILE's admin key is an active (unrevoked) key of the demo
# workspace in DATABASE_URL. Keys are "c360_<prefix>_<secret>"; the prefix is
# random, so another database's file names a prefix this one does not have.
valid() {
  local key prefix keys
  key="$(json_field apiKey "$FILE" || true)"
  prefix="${key#c360_}"; prefix="${prefix%%_*}"
  [ -n "$key" ] && [ "$prefix" != "$key" ] || return 1
  keys="$("$1" apikey list --workspace "$SLUG" --json 2>/dev/null)" || return 1
  # One object per key; the active ones have "revokedAt":null.
  grep -o '{[^{}]*}' <<<"$keys" | grep -F "\"prefix\":\"$prefix\"" | grep -qF '"revokedAt":null'
}

ensure() {
  local bin="$1" tmp="$FILE.tmp"
  mkdir -p "$(dirname "$FILE")"
  if [ -f "$FILE" ] && [ ! -s "$FILE" ]; then rm -f "$FILE"; fi
  if [ -f "$FILE" ] && valid "$bin"; then return 0; fi
  if [ -f "$FILE" ]; then
    echo "run: $FILE holds keys this database does not know (another database's, or revoked): replacing them"
  fi
  if "$bin" apikey list --workspace "$SLUG" --json >/dev/null 2>&1; then
    # The workspace exists but its file is gone or stale: its old secrets
    # are not kept anywhere, so new ones are issued (the old keys stay valid;
    # revoke them with c360 apikey revoke if they matter).
    echo "run: the demo workspace exists in this database; issuing new keys for it ($FILE)"
    local admin write rotated
    admin="$("$bin" apikey create --workspace "$SLUG" --role admin --json)"
    write="$("$bin" apikey create --workspace "$SLUG" --role write --json)"
    rotated="$("$bin" workspace update --slug "$SLUG" --rotate-webhook-secret --json)"
    printf '{"id":"%s","slug":"%s","apiKey":"%s","writeKey":"%s","webhookSecret":"%s"}\n' \
      "$(json_field id <(echo "$rotated"))" "$SLUG" "$(json_field apiKey <(echo "$admin"))" \
      "$(json_field apiKey <(echo "$write"))" "$(json_field webhookSecret <(echo "$rotated"))" >"$tmp"
  else
    echo "run: creating demo workspace ($FILE)"
    if ! "$bin" workspace create --slug "$SLUG" --name "Demo" --json >"$tmp"; then
      rm -f "$tmp"; echo "run: creating the demo workspace failed" >&2; exit 1
    fi
  fi
  mv -f "$tmp" "$FILE"
}

# redact prints a database URL or key=value connection string without its password.
redact() {
  sed -e 's#^\([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@]*\):[^@]*@#\1:***@#' -e 's#\(password=\)[^ &]*#\1***#g' <<<"$1"
}

# base prints http://HOST:PORT for C360_ADDR: a wildcard or empty host is
# reached on localhost.
base() {
  local addr="${C360_ADDR:-:8080}" host port
  host="${addr%:*}"; port="${addr##*:}"
  case "$host" in ""|0.0.0.0|"[::]"|"::") host=localhost ;; esac
  echo "http://$host:$port"
}

print() {
  local key secret wkey url
  key="$(json_field apiKey "$FILE" || true)"
  secret="$(json_field webhookSecret "$FILE" || true)"
  wkey="$(json_field writeKey "$FILE" || true)"
  url="$(base)"
  echo ""
  echo "  Demo workspace:   demo   (details in $FILE)"
  echo "  Admin API key:    ${key:-(not found in $FILE)}"
  echo "  Segment write key: ${wkey:-(not found in $FILE)}"
  echo "  Webhook secret:   ${secret:-(not found in $FILE)}"
  echo "  GraphiQL:         $url/"
  echo "  GraphQL endpoint: $url/graphql"
  echo "  Database:         $(redact "$DATABASE_URL")"
  echo ""
}

case "${1:-}" in
  ensure) ensure "${2:?usage: scripts/demo.sh ensure BIN}" ;;
  print) print ;;
  *) echo "usage: scripts/demo.sh ensure BIN | print" >&2; exit 2 ;;
esac
