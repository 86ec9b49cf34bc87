#!/usr/bin/env bash
# scripts/pg.sh — a project-local PostgreSQL cluster for development and tests.
#
# Usage:
#   scripts/pg.sh ensure        create the cluster if missing, start it if not running,
#                               make sure the databases c360, c360_test and c360_bench
#                               (make bench's) exist (idempotent)
#   scripts/pg.sh stop          stop the cluster (no-op when it is not running)
#   scripts/pg.sh url [DB]      print the connection URL for DB (default: c360)
#   scripts/pg.sh status        print where the cluster lives and whether it runs
#                               (exit 0 when running, 3 when not)
#
# Layout: data in $ROOT/.data/pg, unix socket in $ROOT/.data/sock, TCP on
# 127.0.0.1:$C360_PG_PORT (default 54329). PostgreSQL refuses to run as root, so
# when this script runs as root the server runs as the system user c360pg; if that
# user cannot reach $ROOT/.data, the cluster lives in /var/lib/c360/<hash>/ instead
# (the location actually used is recorded in $ROOT/.data/pgdir).
#
# Environment: C360_PG_PORT (TCP port), C360_PG_QUIET=1 (no progress lines).
set -euo pipefail

# (Few subprocesses on the fast path: a fork costs real time on a loaded box.)
_self="${BASH_SOURCE[0]}"
case "$_self" in */*) _sdir="${_self%/*}" ;; *) _sdir=. ;; esac
ROOT="$(cd "$_sdir/.." && pwd -P)"
PORT="${C360_PG_PORT:-54329}"
PGUSER_NAME="c360"
DATABASES=(c360 c360_test c360_bench)
SYS_USER="c360pg"
DATA_ROOT="$ROOT/.data"

# Short, stable id of this checkout (for paths outside it).
root_hash() { printf '%s' "$ROOT" | sha256sum | cut -c1-12; }

log() { [ "${C360_PG_QUIET:-}" = 1 ] || printf 'pg.sh: %s\n' "$*" >&2; }
die() { printf 'pg.sh: error: %s\n' "$*" >&2; exit 1; }

case "$PORT" in
  '' | *[!0-9]*) die "C360_PG_PORT must be a number, got '$PORT'" ;;
esac

IS_ROOT=0
[ "$EUID" -eq 0 ] && IS_ROOT=1

# ---------------------------------------------------------------------------
# PostgreSQL binaries

bindir_ok() { [ -n "$1" ] && [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ] && [ -x "$1/postgres" ] && [ -x "$1/psql" ]; }

find_bindir() {
  local d=""
  if command -v pg_config >/dev/null 2>&1; then
    d="$(pg_config --bindir 2>/dev/null || true)"
    if bindir_ok "$d"; then printf '%s\n' "$d"; return 0; fi
  fi
  # Highest installed Debian-style version.
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
    if bindir_ok "$d"; then printf '%s\n' "$d"; return 0; fi
  done
  # Anything already on PATH (other distributions, Homebrew, ...).
  if command -v initdb >/dev/null 2>&1; then
    d="$(dirname "$(command -v initdb)")"
    if bindir_ok "$d"; then printf '%s\n' "$d"; return 0; fi
  fi
  return 1
}

install_postgres() {
  local sudo=()
  if [ "$IS_ROOT" -ne 1 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      die "PostgreSQL server binaries not found and not root (no sudo either); install PostgreSQL (e.g. apt-get install postgresql) and retry"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "PostgreSQL server binaries not found and apt-get is unavailable; install PostgreSQL and retry"
  log "PostgreSQL server binaries not found; installing the Debian 'postgresql' package"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql >&2
}

BINDIR=""
need_bindir() {
  [ -n "$BINDIR" ] && return 0
  if ! BINDIR="$(find_bindir)"; then
    install_postgres
    BINDIR="$(find_bindir)" || die "PostgreSQL was installed but its server binaries (initdb, pg_ctl, postgres) were not found"
  fi
}

# ---------------------------------------------------------------------------
# Who runs the server, and where it lives

as_pg() {
  # Run a command as the cluster owner. From "/" so that an untraversable
  # working directory does not bother the PostgreSQL tools.
  # fd 9 (the pg.sh lock) is closed so that the postmaster does not inherit it.
  if [ "$IS_ROOT" -eq 1 ]; then
    (cd / && runuser -u "$SYS_USER" -- "$@") 9>&-
  else
    "$@" 9>&-
  fi
}

ensure_sys_user() {
  [ "$IS_ROOT" -eq 1 ] || return 0
  id -u "$SYS_USER" >/dev/null 2>&1 && return 0
  log "creating system user $SYS_USER (PostgreSQL will not run as root)"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$SYS_USER"
}

# owner_dir DIR MODE: make DIR exist, owned by the cluster owner, with MODE.
owner_dir() {
  mkdir -p "$1"
  [ "$IS_ROOT" -eq 1 ] && chown "$SYS_USER:" "$1"
  chmod "$2" "$1"
}

PGDATA_DIR=""
SOCK_DIR=""
LOCK_FILE=""

# Decide PGDATA_DIR and SOCK_DIR. With create=1 the directories are created
# (and the c360pg user, when root); with create=0 only what exists is consulted.
resolve_dirs() {
  local create="${1:-0}" base fallback recorded=""
  base="$DATA_ROOT"
  [ -f "$DATA_ROOT/pgdir" ] && read -r recorded <"$DATA_ROOT/pgdir" || true

  if [ "$create" = 1 ] && [ ! -d "$DATA_ROOT" ]; then
    mkdir -p "$DATA_ROOT"
  fi
  if [ "$IS_ROOT" -eq 1 ] && [ ! -f "$DATA_ROOT/pg/PG_VERSION" ]; then
    fallback="/var/lib/c360/$(root_hash)"
    if [ -f "$fallback/pg/PG_VERSION" ]; then
      base="$fallback"
    elif [ "$create" = 1 ]; then
      ensure_sys_user
      # c360pg must be able to traverse $ROOT/.data. Only .data itself is
      # ours to loosen; directories above the repository are left alone.
      if ! runuser -u "$SYS_USER" -- test -x "$DATA_ROOT" 2>/dev/null; then
        chmod o+x "$DATA_ROOT" 2>/dev/null || true
      fi
      if ! runuser -u "$SYS_USER" -- test -x "$DATA_ROOT" 2>/dev/null; then
        log "$SYS_USER cannot reach $DATA_ROOT (a parent directory is not traversable); using $fallback"
        base="$fallback"
        mkdir -p /var/lib/c360
        chmod 755 /var/lib/c360
        mkdir -p "$fallback"
        chmod 711 "$fallback"
      fi
    fi
  fi

  PGDATA_DIR="$base/pg"
  SOCK_DIR="$base/sock"
  # A unix socket path (dir + "/.s.PGSQL.<port>") must fit in 107 bytes.
  local sock_path="$SOCK_DIR/.s.PGSQL.$PORT"
  if [ "${#sock_path}" -gt 107 ]; then
    SOCK_DIR="/tmp/c360-$(root_hash)"
  fi
  LOCK_FILE="$DATA_ROOT/pg.lock"

  if [ "$create" = 1 ]; then
    if [ "$recorded" != "$PGDATA_DIR" ]; then
      printf '%s\n' "$PGDATA_DIR" >"$DATA_ROOT/pgdir"
    fi
    [ -d "$PGDATA_DIR" ] || owner_dir "$PGDATA_DIR" 700
    [ -d "$SOCK_DIR" ] || owner_dir "$SOCK_DIR" 755
  fi
}

take_lock() {
  mkdir -p "$DATA_ROOT"
  exec 9>"$LOCK_FILE"
  if ! flock -n 9; then
    log "waiting for another pg.sh to finish"
    flock -w 300 9 || die "timed out waiting for the lock $LOCK_FILE"
  fi
}

# ---------------------------------------------------------------------------
# Server state

# Print the PID of the postmaster serving PGDATA_DIR; fail if none runs. Unlike
# `pg_ctl status` this is not fooled by a stale postmaster.pid whose PID was
# reused by an unrelated process after a restart of the machine/container.
running_pid() {
  local pidfile="$PGDATA_DIR/postmaster.pid" pid cwd want
  [ -f "$pidfile" ] || return 1
  pid=""
  read -r pid <"$pidfile" 2>/dev/null || true
  case "$pid" in '' | *[!0-9]*) return 1 ;; esac
  if [ ! -d /proc/self ]; then
    # No procfs (not Linux): best effort.
    kill -0 "$pid" 2>/dev/null || return 1
    printf '%s\n' "$pid"
    return 0
  fi
  [ -d "/proc/$pid" ] || return 1
  cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
  if [ -n "$cwd" ]; then
    # The postmaster's working directory is its data directory.
    want="$PGDATA_DIR"
    if [ "$cwd" != "$want" ]; then
      want="$(cd "$PGDATA_DIR" 2>/dev/null && pwd -P || printf '%s' "$PGDATA_DIR")"
      [ "$cwd" = "$want" ] || return 1
    fi
  else
    # Cannot inspect the process (another user's): trust its name.
    local comm=""
    read -r comm <"/proc/$pid/comm" 2>/dev/null || true
    [ "$comm" = postgres ] || return 1
  fi
  printf '%s\n' "$pid"
}

# Port the running server listens on (line 4 of postmaster.pid).
running_port() {
  local lines=()
  mapfile -t -n 4 lines <"$PGDATA_DIR/postmaster.pid" 2>/dev/null || true
  printf '%s\n' "${lines[3]:-}"
}

remove_stale_locks() {
  if [ -f "$PGDATA_DIR/postmaster.pid" ]; then
    log "removing stale $PGDATA_DIR/postmaster.pid"
    rm -f "$PGDATA_DIR/postmaster.pid"
  fi
  local sl="$SOCK_DIR/.s.PGSQL.$PORT.lock" pid
  if [ -f "$sl" ]; then
    local comm=""
    pid=""
    read -r pid <"$sl" 2>/dev/null || true
    [ -n "$pid" ] && { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || true
    if [ "$comm" != postgres ]; then
      rm -f "$sl" "$SOCK_DIR/.s.PGSQL.$PORT"
    fi
  fi
}

# shared_buffers: a quarter of the machine's memory, between 128MB and 8GB,
# as for a server of its own (C360_PG_SHARED_BUFFERS overrides). The OS
# page cache is no substitute here: a VM may reclaim it proactively
# (damon_reclaim), and a 1M-customer benchmark then reads from disk.
shared_buffers() {
  if [ -n "${C360_PG_SHARED_BUFFERS:-}" ]; then
    printf '%s' "$C360_PG_SHARED_BUFFERS"
    return
  fi
  local kb mb limit
  kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || true)"
  # A container's memory limit (cgroup v2) bounds it too.
  limit="$(cat /sys/fs/cgroup/memory.max 2>/dev/null || true)"
  if [[ "$limit" =~ ^[0-9]+$ ]] && [ "$(( limit / 1024 ))" -lt "${kb:-0}" ]; then
    kb=$(( limit / 1024 ))
  fi
  mb=$(( ${kb:-0} / 4096 ))
  [ "$mb" -lt 128 ] && mb=128
  [ "$mb" -gt 8192 ] && mb=8192
  printf '%sMB' "$mb"
}

conf_content() {
  IFS= read -r -d '' CONF <<EOF || true
# Managed by scripts/pg.sh — rewritten by every 'scripts/pg.sh ensure'. Do not edit.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK_DIR'
max_connections = 200
shared_buffers = $(shared_buffers)
# Durability stays on: benchmarks must measure real commit costs.
fsync = on
synchronous_commit = on
full_page_writes = on
log_min_messages = warning
logging_collector = on
log_directory = 'log'
log_filename = 'postgresql-%a.log'
log_truncate_on_rotation = on
log_rotation_age = 1d
log_rotation_size = 0
log_line_prefix = '%m [%p] %q%u@%d '
log_timezone = 'UTC'
timezone = 'UTC'
EOF
}

# Write c360.conf; return 0 if it changed.
write_conf() {
  local f="$PGDATA_DIR/c360.conf" tmp old=""
  conf_content
  if [ -f "$f" ]; then
    IFS= read -r -d '' old <"$f" || true
    [ "$old" = "$CONF" ] && return 1
  fi
  tmp="$f.tmp"
  printf '%s' "$CONF" >"$tmp"
  [ "$IS_ROOT" -eq 1 ] && chown "$SYS_USER:" "$tmp"
  chmod 600 "$tmp"
  mv -f "$tmp" "$f"
  return 0
}

do_initdb() {
  local locale_args=(--no-locale)
  if locale -a 2>/dev/null | grep -qiE '^c\.utf-?8$'; then
    locale_args=(--locale=C.UTF-8)
  fi
  log "initializing cluster in $PGDATA_DIR (PostgreSQL $("$BINDIR/postgres" --version | awk '{print $3}'))"
  # initdb wants an empty directory.
  if [ -n "$(ls -A "$PGDATA_DIR" 2>/dev/null)" ]; then
    die "$PGDATA_DIR is not empty but holds no cluster (no PG_VERSION); remove it and retry"
  fi
  as_pg "$BINDIR/initdb" -D "$PGDATA_DIR" --auth=trust --username="$PGUSER_NAME" \
    --encoding=UTF8 "${locale_args[@]}" >"$DATA_ROOT/initdb.log" 2>&1 || {
    cat "$DATA_ROOT/initdb.log" >&2
    die "initdb failed"
  }
  printf "\n# c360 development settings (scripts/pg.sh)\ninclude_if_exists = 'c360.conf'\n" >>"$PGDATA_DIR/postgresql.conf"
  owner_dir "$PGDATA_DIR/log" 700
}

start_server() {
  owner_dir "$SOCK_DIR" 755
  owner_dir "$PGDATA_DIR/log" 700
  remove_stale_locks
  log "starting PostgreSQL on 127.0.0.1:$PORT"
  if ! as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -l "$PGDATA_DIR/log/pg_ctl.log" -w -t 60 start >/dev/null; then
    printf '%s\n' "--- $PGDATA_DIR/log/pg_ctl.log (tail) ---" >&2
    tail -n 20 "$PGDATA_DIR/log/pg_ctl.log" >&2 || true
    local latest
    latest="$(ls -t "$PGDATA_DIR"/log/postgresql-*.log 2>/dev/null | head -n1 || true)"
    if [ -n "$latest" ]; then
      printf '%s\n' "--- $latest (tail) ---" >&2
      tail -n 20 "$latest" >&2 || true
    fi
    die "PostgreSQL failed to start (port $PORT busy? set C360_PG_PORT to use another port)"
  fi
}

stop_server() {
  as_pg "$BINDIR/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 60 stop >/dev/null
}

psql_q() {
  "$BINDIR/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" -d postgres "$@"
}

ensure_databases() {
  local existing db
  existing="$(psql_q -c 'SELECT datname FROM pg_database')" ||
    die "cannot connect to PostgreSQL at 127.0.0.1:$PORT"
  for db in "${DATABASES[@]}"; do
    if [[ $'\n'"$existing"$'\n' != *$'\n'"$db"$'\n'* ]]; then
      log "creating database $db"
      "$BINDIR/createdb" -h 127.0.0.1 -p "$PORT" -U "$PGUSER_NAME" "$db"
    fi
  done
}

# ---------------------------------------------------------------------------
# Commands

cmd_ensure() {
  need_bindir
  resolve_dirs 1
  take_lock
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    do_initdb
  fi
  local changed=0
  write_conf && changed=1
  if running_pid >/dev/null; then
    if [ "$changed" = 1 ] || [ "$(running_port)" != "$PORT" ]; then
      log "configuration changed; restarting PostgreSQL"
      stop_server
      start_server
    fi
  else
    start_server
  fi
  ensure_databases
}

cmd_stop() {
  resolve_dirs 0
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ] || ! running_pid >/dev/null; then
    log "PostgreSQL is not running"
    return 0
  fi
  need_bindir
  take_lock
  log "stopping PostgreSQL ($PGDATA_DIR)"
  stop_server
}

cmd_url() {
  local db="${1:-c360}"
  printf 'postgres://%s@127.0.0.1:%s/%s?sslmode=disable\n' "$PGUSER_NAME" "$PORT" "$db"
}

cmd_status() {
  resolve_dirs 0
  local pid
  echo "data:   $PGDATA_DIR"
  echo "socket: $SOCK_DIR"
  echo "port:   $PORT"
  echo "url:    $(cmd_url c360)"
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    echo "state:  not initialized (run: scripts/pg.sh ensure)"
    return 3
  fi
  if pid="$(running_pid)"; then
    echo "state:  running (pid $pid, port $(running_port))"
    return 0
  fi
  echo "state:  stopped"
  return 3
}

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
  ensure) cmd_ensure "$@" ;;
  stop) cmd_stop "$@" ;;
  url) cmd_url "$@" ;;
  status) cmd_status "$@" ;;
  -h | --help | help) usage ;;
  *) printf 'pg.sh: unknown command %s\n' "$cmd" >&2; usage ;;
esac
