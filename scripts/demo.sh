#!/usr/bin/env bash
# scripts/demo.sh — make run's demo workspace and the lines it prints.
#
# Usage (DATABASE_URL set, migrations applied):
#   scripts/demo.sh ensure BIN   make FILE (default .data/demo.json) hold keys of the
#                                `demo` workspace that DATABASE_URL knows:
#                                - its admin key is an active key of demo there: kept;
#                                - no demo workspace there: created, FILE replaced;
#                                - its admin (or write) key is a revoked key of demo:
#                                  new keys only, the webhook secret kept;
#                                - FILE is missing, or names keys demo never had
#                                  (another database's file): new admin and write keys
#                                  and a new webhook secret, which a chatbot configured
#                                  with the old one must be given.
#                                Any other failure of c360 (the database restarting,
#                                too many connections) exits 1 and changes nothing.
#   scripts/demo.sh print        print the keys, the URLs (from C360_ADDR) and the
#                                database's host, port and name (never its user or
#                                password)
#
# Environment: DATABASE_URL, C360_ADDR (default :8080), C360_DEMO_FILE (default
# .data/demo.json).
set -euo pipefail

FILE="${C360_DEMO_FILE:-.data/demo.json}"
SLUG=demo

# json_field NAME FILE prints the JSON string field NAME of FILE (no jq needed).
json_field() { grep -o "\"$1\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" "$2" | head -n1 | sed 's/.*"\([^"]*\)"$/\1/'; }

# prefix_of KEY prints the prefix of an API key "c360_<prefix>_<secret>", or
# nothing.
prefix_of() {
  local p="${1#c360_}"
  p="${p%%_*}"
  if [ -n "$1" ] && [ "$p" != "$1" ]; then echo "$p"; fi
}

# KEYS holds `c360 apikey list --workspace demo --json` (set by list_keys).
KEYS=""

# list_keys BIN reads the demo workspace's keys into KEYS. It returns 1 when
# the workspace does not exist (c360 says NOT_FOUND: workspace "demo" not
# found); any other failure exits the script, so that a database that is
# restarting or out of connections changes nothing.
list_keys() {
  local err rc=0
  err="$(mktemp)"
  KEYS="$("$1" apikey list --workspace "$SLUG" --json 2>"$err")" || rc=$?
  if [ "$rc" -eq 0 ]; then rm -f "$err"; return 0; fi
  if grep -qF "workspace \"$SLUG\" not found" "$err"; then rm -f "$err"; return 1; fi
  cat "$err" >&2; rm -f "$err"
  echo "run: could not list the demo workspace's keys (above); $FILE left as it is" >&2
  exit 1
}

# key_state PREFIX prints active, revoked or unknown: the key's state among
# KEYS (one object per key; an active one has "revokedAt":null).
key_state() {
  local obj
  if [ -z "$1" ]; then echo unknown; return; fi
  obj="$(grep -o '{[^{}]*}' <<<"$KEYS" | grep -F "\"prefix\":\"$1\"" || true)"
  if [ -z "$obj" ]; then echo unknown
  elif grep -qF '"revokedAt":null' <<<"$obj"; then echo active
  else echo revoked
  fi
}

# new_key BIN ROLE prints a new API key of ROLE in the demo workspace.
new_key() {
  local out
  out="$("$1" apikey create --workspace "$SLUG" --role "$2" --json)" || return 1
  json_field apiKey <(echo "$out")
}

# write_file ID ADMIN WRITE SECRET writes FILE (through a temporary file).
write_file() {
  printf '{"id":"%s","slug":"%s","apiKey":"%s","writeKey":"%s","webhookSecret":"%s"}\n' \
    "$1" "$SLUG" "$2" "$3" "$4" >"$FILE.tmp"
  mv -f "$FILE.tmp" "$FILE"
}

ensure() {
  local bin="$1" admin="" write="" admin_state write_state id secret rotated
  mkdir -p "$(dirname "$FILE")"
  if [ -f "$FILE" ] && [ ! -s "$FILE" ]; then rm -f "$FILE"; fi
  if ! list_keys "$bin"; then
    if [ -f "$FILE" ]; then
      echo "run: $FILE is another database's (this one has no demo workspace): replacing it"
    fi
    echo "run: creating demo workspace ($FILE)"
    if ! "$bin" workspace create --slug "$SLUG" --name "Demo" --json >"$FILE.tmp"; then
      rm -f "$FILE.tmp"; echo "run: creating the demo workspace failed" >&2; exit 1
    fi
    mv -f "$FILE.tmp" "$FILE"
    return 0
  fi
  if [ -f "$FILE" ]; then
    admin="$(json_field apiKey "$FILE" || true)"
    write="$(json_field writeKey "$FILE" || true)"
  fi
  admin_state="$(key_state "$(prefix_of "$admin")")"
  write_state="$(key_state "$(prefix_of "$write")")"
  if [ "$admin_state" = active ] && [ "$write_state" != revoked ]; then return 0; fi
  if [ "$admin_state" = revoked ] || { [ "$admin_state" = active ] && [ "$write_state" = revoked ]; }; then
    # This database's file with a key revoked since: new keys for the
    # revoked ones; the webhook secret, which the chatbot may be configured
    # with, stays.
    id="$(json_field id "$FILE" || true)"
    secret="$(json_field webhookSecret "$FILE" || true)"
    if [ "$admin_state" = revoked ]; then
      echo "run: the admin key in $FILE was revoked; issuing a new one (the webhook secret is kept)"
      admin="$(new_key "$bin" admin)"
    fi
    if [ "$write_state" != active ]; then
      echo "run: the write key in $FILE is not active; issuing a new one"
      write="$(new_key "$bin" write)"
    fi
    write_file "$id" "$admin" "$write" "$secret"
    return 0
  fi
  # The workspace exists, but FILE is gone or names keys it never had
  # (another database's file): its secrets are not kept anywhere, so new
  # ones are issued (the old keys stay valid; revoke them with c360 apikey
  # revoke if they matter).
  if [ -f "$FILE" ]; then
    echo "run: $FILE holds keys this database's demo workspace never had (another database's): replacing them"
  fi
  echo "run: issuing new keys and a new webhook secret for the demo workspace ($FILE);"
  echo "run: a chatbot configured with the previous webhook secret is refused (401) until given the new one"
  admin="$(new_key "$bin" admin)"
  write="$(new_key "$bin" write)"
  rotated="$("$bin" workspace update --slug "$SLUG" --rotate-webhook-secret --json)"
  write_file "$(json_field id <(echo "$rotated"))" "$admin" "$write" "$(json_field webhookSecret <(echo "$rotated"))"
}

# target prints where DATABASE_URL points: host, port and database name,
# never the user or the password. A postgres:// URL is read as pgx reads it
# (the user info ends at the first @ before a /); of a keyword/value string
# only the host, port and dbname values are printed, read pair by pair so
# that a quoted value ('a b', 'x host=y') is never taken for a key.
target() {
  local s="$1" rest hostport db="" q="'" re key val host="" port=""
  case "$s" in
    postgres://* | postgresql://*)
      rest="${s#*://}"
      case "${rest%%/*}" in *@*) rest="${rest#*@}" ;; esac
      hostport="${rest%%[/?]*}"
      rest="${rest#"$hostport"}"
      case "$rest" in /*) db="${rest#/}"; db="${db%%\?*}" ;; esac
      echo "${hostport:-(default host)}/${db:-(default database)}"
      ;;
    *)
      re="^[[:space:]]*([A-Za-z_]+)[[:space:]]*=[[:space:]]*(${q}(([^${q}\\]|\\\\.)*)${q}|([^[:space:]${q}]*))"
      while [[ $s =~ $re ]] && [ -n "${BASH_REMATCH[0]}" ]; do
        key="${BASH_REMATCH[1]}"; val="${BASH_REMATCH[3]}${BASH_REMATCH[5]}"
        s="${s:${#BASH_REMATCH[0]}}"
        case "$key" in host) host="$val" ;; port) port="$val" ;; dbname) db="$val" ;; esac
      done
      echo "host=${host:-(default)} port=${port:-(default)} dbname=${db:-(default)}"
      ;;
  esac
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
  echo "  Database:         $(target "$DATABASE_URL")"
  echo ""
}

case "${1:-}" in
  ensure) ensure "${2:?usage: scripts/demo.sh ensure BIN}" ;;
  print) print ;;
  *) echo "usage: scripts/demo.sh ensure BIN | print" >&2; exit 2 ;;
esac
