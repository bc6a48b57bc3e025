# common.sh — shared helpers for popbsmtp's shell tests and the demo (bash, sourced).
# Each test gets a private temp dir; every server a test starts is recorded and stopped on
# exit, even when the test fails. Nothing here touches a server this shell did not start.

set -u
# Daemons and their tools (dovecot, postfix, runuser) live in sbin; CI shells may lack it.
export PATH="/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

PBS_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# A stop script written by pbs_keep_servers hands back its predecessor's state.
PBS_TMP=${PBS_REUSE_TMP:-$(mktemp -d /tmp/popbsmtp-test.XXXXXX)}
chmod 755 "$PBS_TMP"
PBS_PIDS=${PBS_REUSE_PIDS:-}          # pids to kill on exit
PBS_CLEANUPS=${PBS_REUSE_CLEANUPS:-}  # shell commands to run on exit (e.g. "postfix -c DIR stop")
PBS_KEEP_SERVERS=0
PBS_FAILS=0
PBS_CHECKS=0

pbs_on_exit() {
	local rc=$?
	local cmd pid
	[ "$PBS_KEEP_SERVERS" = 1 ] && exit $rc
	# Run registered cleanup commands in reverse order of registration.
	while IFS= read -r cmd; do
		[ -n "$cmd" ] && eval "$cmd" >/dev/null 2>&1
	done <<EOC
$(printf '%s\n' "$PBS_CLEANUPS" | tac)
EOC
	for pid in $PBS_PIDS; do
		kill "$pid" 2>/dev/null
	done
	sleep 0.1
	for pid in $PBS_PIDS; do
		kill -9 "$pid" 2>/dev/null
	done
	if [ "${PBS_KEEP_TMP:-0}" = 1 ] || { [ $rc -ne 0 ] && [ "${PBS_KEEP_ON_FAIL:-0}" = 1 ]; }; then
		echo "# kept $PBS_TMP" >&2
	else
		rm -rf "$PBS_TMP"
	fi
	exit $rc
}
trap pbs_on_exit EXIT
trap 'exit 130' INT TERM

# pbs_keep_servers — leave every server running at exit; write "$PBS_TMP/stop", a script
# that stops them all and removes the temp dir (the demo's --keep).
pbs_keep_servers() {
	PBS_KEEP_SERVERS=1
	{
		echo '#!/bin/bash'
		echo "# Stops the servers a popbsmtp demo or test left running, then removes $PBS_TMP."
		printf 'export PBS_REUSE_TMP=%q PBS_REUSE_PIDS=%q PBS_REUSE_CLEANUPS=%q\n' \
			"$PBS_TMP" "$PBS_PIDS" "$PBS_CLEANUPS"
		for lib in "$PBS_LIB"/*.sh; do printf '. %q\n' "$lib"; done
		echo 'cd / && exit 0'
	} >"$PBS_TMP/stop"
	chmod 755 "$PBS_TMP/stop"
}

# pbs_track_pid PID — stop PID when the test exits.
pbs_track_pid() { PBS_PIDS="$PBS_PIDS $1"; }

# pbs_on_cleanup CMD — run CMD when the test exits.
pbs_on_cleanup() { PBS_CLEANUPS="$PBS_CLEANUPS
$1"; }

# pbs_build_dir_arg ARGS… — the arguments of a test run as "SCRIPT BUILD_DIR": unless they
# are one existing directory, print the usage and exit 2. Sets PBS_BIN to its absolute path.
pbs_build_dir_arg() {
	if [ $# -ne 1 ] || [ ! -d "$1" ]; then
		echo "usage: $0 BUILD_DIR" >&2
		exit 2
	fi
	# shellcheck disable=SC2034 # for the test script and the helpers it sources
	PBS_BIN=$(cd "$1" && pwd)
}

# pbs_free_port — print a TCP port on 127.0.0.1 that is free right now.
pbs_free_port() {
	/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# pbs_wait_port PORT [SECONDS] — wait until something listens on 127.0.0.1:PORT.
pbs_wait_port() {
	local port=$1 limit=${2:-10} i=0
	while [ $i -lt $((limit * 20)) ]; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
		sleep 0.05
		i=$((i + 1))
	done
	echo "port $port did not open within ${limit}s" >&2
	return 1
}

# pbs_wait_file PATH [SECONDS] — wait until PATH exists (sockets, pidfiles).
pbs_wait_file() {
	local path=$1 limit=${2:-10} i=0
	while [ $i -lt $((limit * 20)) ]; do
		[ -e "$path" ] && return 0
		sleep 0.05
		i=$((i + 1))
	done
	echo "$path did not appear within ${limit}s" >&2
	return 1
}

# ---- assertions: each prints ok/not ok; pbs_done exits non-zero if any failed ----
# bail WHY — TAP's "Bail out!": the test cannot go on (a server did not start, …).
bail() { echo "Bail out! $*"; exit 1; }

pbs_ok() { PBS_CHECKS=$((PBS_CHECKS + 1)); echo "ok $PBS_CHECKS - $1"; }
pbs_fail() { PBS_CHECKS=$((PBS_CHECKS + 1)); PBS_FAILS=$((PBS_FAILS + 1)); echo "not ok $PBS_CHECKS - $1"; }

# pbs_check_eq WHAT EXPECTED ACTUAL
pbs_check_eq() {
	if [ "$2" = "$3" ]; then pbs_ok "$1"; else pbs_fail "$1: expected '$2', got '$3'"; fi
}

# pbs_check_match WHAT REGEX TEXT — TEXT matches the extended regex.
pbs_check_match() {
	if printf '%s' "$3" | grep -Eq -- "$2"; then pbs_ok "$1"; else pbs_fail "$1: '$3' does not match /$2/"; fi
}

# pbs_check_nomatch WHAT REGEX TEXT
pbs_check_nomatch() {
	if printf '%s' "$3" | grep -Eq -- "$2"; then pbs_fail "$1: '$3' matches /$2/"; else pbs_ok "$1"; fi
}

# pbs_check_le WHAT LIMIT VALUE — numeric VALUE <= LIMIT.
pbs_check_le() {
	if [ "$3" -le "$2" ]; then pbs_ok "$1 ($3 <= $2)"; else pbs_fail "$1: $3 > $2"; fi
}

pbs_done() {
	echo "1..$PBS_CHECKS"
	if [ "$PBS_CHECKS" -eq 0 ]; then echo "no checks ran" >&2; exit 1; fi
	[ "$PBS_FAILS" -eq 0 ] || { echo "$PBS_FAILS of $PBS_CHECKS checks failed" >&2; exit 1; }
	exit 0
}

# pbs_now_ms — monotonic-enough milliseconds for measuring bounds.
pbs_now_ms() { date +%s%3N; }

# ---- Redis ----
# pbs_start_redis [NAME] [extra redis-server args…] — start a private redis-server on a free
# loopback port. Sets REDIS_PORT (and REDIS_PORT_<NAME> if NAME given), REDIS_DIR.
pbs_start_redis() {
	local name=${1:-main}
	shift || true
	local dir="$PBS_TMP/redis-$name" port
	mkdir -p "$dir"
	port=$(pbs_free_port)
	redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
		--daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" \
		--logfile "$dir/redis.log" "$@" || return 1
	pbs_wait_file "$dir/redis.pid" 5 || return 1
	pbs_on_cleanup "kill \$(cat '$dir/redis.pid' 2>/dev/null) 2>/dev/null"
	pbs_wait_port "$port" 5 || return 1
	REDIS_PORT=$port
	REDIS_DIR=$dir
	eval "REDIS_PORT_$name=$port"
}

# pbs_stop_redis [NAME] — stop the named private Redis (e.g. to test an outage).
pbs_stop_redis() {
	local dir="$PBS_TMP/redis-${1:-main}" pid
	pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null
	# Redis removes its pidfile on exit; kill -0 would still see the unreaped zombie.
	while [ -e "$dir/redis.pid" ] && kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
	rm -f "$dir/redis.pid"
}

# pbs_restart_redis [NAME] PORT [extra args] — start a Redis again on the same port.
pbs_restart_redis() {
	local name=$1 port=$2 dir="$PBS_TMP/redis-$1"
	shift 2
	redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
		--daemonize yes --pidfile "$dir/redis.pid" --dir "$dir" \
		--logfile "$dir/redis.log" "$@" || return 1
	pbs_wait_file "$dir/redis.pid" 5 && pbs_wait_port "$port" 5
}

# pbs_redis [NAME] -- ARGS… — redis-cli against the named private Redis.
pbs_redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# Lease values another writer with Redis access can leave that popbsmtp cannot use (the
# invariant of issue 18 §3: each is no lease, never a crash or a deferral), named for
# messages. pbs_hostile_lease N prints the Nth, byte for byte (NUL included): write it
# with redis-cli -x SET KEY.
PBS_HOSTILE_LEASES=(nanoseconds milliseconds negative huge empty-user binary wrong-version
	10KB-user past-9999)
pbs_hostile_lease() {
	local now
	now=$(date +%s)
	case ${PBS_HOSTILE_LEASES[$1]} in
	nanoseconds) printf '1|%s|webmail|mallory' "$(date +%s%N)" ;;
	milliseconds) printf '1|%s|webmail|mallory' "$(date +%s%3N)" ;;
	negative) printf '1|-%s|imap|mallory' "$now" ;;
	huge) printf '1|99999999999999999999999|imap|mallory' ;;
	empty-user) printf '1|%s|imap|' "$now" ;;
	binary) printf '1|%s|imap|mal\0\001\377\033[31m' "$now" ;;
	wrong-version) printf '2|%s|imap|mallory' "$now" ;;
	10KB-user) printf '1|%s|imap|' "$now"; head -c 10240 /dev/zero | tr '\0' a ;;
	past-9999) printf '1|253402300800|imap|mallory' ;;
	esac
}

# pbs_blackhole_port — a port that accepts TCP connections and never answers.
# Sets BLACKHOLE_PORT; the listener is stopped on exit.
pbs_start_blackhole() {
	BLACKHOLE_PORT=$(pbs_free_port)
	/usr/bin/python3 - "$BLACKHOLE_PORT" <<'PY' &
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(512)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
	pbs_track_pid $!
	pbs_wait_port "$BLACKHOLE_PORT" 5
}

# pbs_start_stuck_listener — a port whose connects never complete: a listener that never
# accepts, its accept queue filled, so the kernel drops every further SYN. Sets STUCK_PORT.
pbs_start_stuck_listener() {
	STUCK_PORT=$(pbs_free_port)
	/usr/bin/python3 - "$STUCK_PORT" "$PBS_TMP/stuck-$STUCK_PORT.ready" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(0)
held = [socket.socket() for _ in range(4)]
for c in held:
    c.setblocking(False); c.connect_ex(("127.0.0.1", port))
time.sleep(0.2)  # let the handshakes that fit in the queue complete
open(sys.argv[2], "w").close()
while True:
    time.sleep(60)
PY
	pbs_track_pid $!
	# Connecting to see whether it is up would hang: it says so in a file instead.
	pbs_wait_file "$PBS_TMP/stuck-$STUCK_PORT.ready" 5
}

# pbs_doc_block FILE TEXT — print the first fenced block (```) of FILE after the first line
# that holds TEXT (a plain string, not a pattern), its indentation removed: the tests use
# the configuration the docs give, as written. PBS_DOCS is the docs/ directory.
PBS_DOCS=$(cd "$PBS_LIB/../../../docs" && pwd)
pbs_doc_block() {
	awk -v text="$2" '
		found && /^[ \t]*```/ { if (inside) exit; inside = 1; match($0, /^[ \t]*/); cut = RLENGTH; next }
		inside { print substr($0, cut + 1); next }
		!found && index($0, text) { found = 1 }' "$1"
}

# pbs_write_config FILE [extra libconfig text…] — a popbsmtp.conf pointing at REDIS_PORT.
# Extra arguments are appended as whole groups ("milter: { … };"). Environment knobs:
# PBS_CONF_REDIS_PORT, PBS_CONF_TIMEOUT_MS, PBS_CONF_TTL, PBS_CONF_LEASE_EXTRA (inside lease{}),
# PBS_CONF_LIMITS (inside limits{}). Relay limits are off unless PBS_CONF_LIMITS says
# otherwise: the tests of everything else see a lease relay accepted for the whole message
# at its first relay recipient, as limits off gives; the limits have tests of their own
# (e2e.limits, integration.policy), which set them.
pbs_write_config() {
	local file=$1
	shift
	{
		printf 'redis: { host = "127.0.0.1"; port = %s; timeout_ms = %s; };\n' \
			"${PBS_CONF_REDIS_PORT:-$REDIS_PORT}" "${PBS_CONF_TIMEOUT_MS:-250}"
		printf 'lease: { ttl = %s; %s };\n' "${PBS_CONF_TTL:-1800}" "${PBS_CONF_LEASE_EXTRA:-}"
		printf 'limits: { %s };\n' \
			"${PBS_CONF_LIMITS:-user_recipients_per_hour = 0; lease_recipients_per_hour = 0;}"
		for extra in "$@"; do printf '%s\n' "$extra"; done
	} >"$file"
	chmod 644 "$file"
}
