#!/bin/bash
# faults.sh BUILD_DIR — Redis and process faults against the real programs (issue 7, "Faults,
# in CI" and "Least privilege"). Every server is private and started here on loopback.
#
# For each Redis fault — slowed (DEBUG SLEEP), loading (-LOADING), a read-only replica
# (-READONLY), a wrong password, out of memory, a server that trickles its reply one byte at
# a time, and (not covered elsewhere for the hook and ctl) stopped and black-holed — the
# checks are:
#   milter  never answers "continue" for an unleased relay (451 or 550 only), answers within
#           MILTER_BOUND, and serves leased clients again without a restart once the fault
#           is removed (the time it takes is printed as "# recovery ...");
#   hook    always execs the login (prints EXECED) within 2 x timeout_ms + slack and writes
#           exactly one line on stderr saying why no lease was granted;
#   ctl     exits 3 with one clear line on stderr.
# Then: 500 concurrent milter sessions while Redis is black-holed (threads, RSS, answers,
# recovery); the milter SIGKILLed and restarted under SMTP load through a private Postfix;
# leases surviving a Redis restart and a Redis crash with AOF on; least privilege (user
# drop, socket group/mode, pidfile, secrets). Figures go to stdout as "# ..." lines; they
# feed docs/reliability.md.
#
# Misbehaviour is never papered over here: a failing check stays failing. Known failures
# (see docs/reliability.md, "Open problems"): the trickling server holds a milter lookup,
# popbsmtpctl and the milter's start-up check for as long as it trickles (7 checks).
#
# Environment:
#   PBS_SLOW=N     multiply every time bound by N (slow or instrumented builds); default 1
#   PBS_KEEP_TMP=1 keep the temp dir (every log, every probe output)
# shellcheck disable=SC2154 # PID_<name> is set by start_milter, through eval
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/postfix.sh"
pbs_build_dir_arg "$@"
MILTER=$PBS_BIN/milter/popbsmtp-milter
PROBE=$PBS_BIN/bench/milter-probe
LOAD=$PBS_BIN/bench/milter-load
HOOK=$PBS_BIN/hook/popbsmtp-postlogin
CTL=$PBS_BIN/ctl/popbsmtpctl
for exe in "$MILTER" "$PROBE" "$LOAD" "$HOOK" "$CTL"; do
	[ -x "$exe" ] || { echo "missing $exe (build first)" >&2; exit 1; }
done
for tool in redis-server redis-cli swaks postfix smtp-sink; do
	command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (privilege drop, Postfix)" >&2; exit 1; }

T=250                                   # redis.timeout_ms of every config here
SLOW=${PBS_SLOW:-1}
# The milter's worst case per answer: wait for a pooled connection (T), connect (T), the
# reply (T); 2 T more, once for a retry on a fresh connection (gone: nothing is sent
# twice), kept as margin; plus slack for a loaded 2-core host.
MILTER_BOUND=$(((5 * T + 1000) * SLOW))
HOOK_BOUND=$(((3 * T + 1000) * SLOW))   # the hook's hard deadline is 3 x timeout_ms
CTL_BOUND=$(((2 * T + 1000) * SLOW))    # connect + one reply
RECOVERY_BOUND=$((3000 * SLOW))         # fault removed -> a leased relay is accepted
PROBE_TIMEOUT=$((4000 * SLOW))
R=$PBS_TMP/runs                         # one set of files per program run
mkdir -p "$R"
START_MS=$(pbs_now_ms)

LEASED=192.0.2.10     # granted wherever the fault allows reads
UNLEASED=192.0.2.66   # never granted anywhere
FAR='<far@far.example>'
PF=("macro:connect:v=Postfix 3.7.11")
RELAY=('mail:<a@client.example>' 'macro:rcpt:{rcpt_mailer}=smtp' "rcpt:$FAR")

rcli() { local port=$1; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }
ctl() { local conf=$1; shift; timeout 20 "$CTL" -c "$conf" "$@"; }
note() { echo "# $*"; }
section() { echo "# --- $* --- (at $(($(pbs_now_ms) - START_MS)) ms)"; }

# write_conf NAME PORT [REDIS_EXTRA] [MILTER_EXTRA] — $PBS_TMP/NAME.conf (mode 600): Redis at
# 127.0.0.1:PORT with timeout T; a milter on $PBS_TMP/NAME.sock trusting only 127.0.0.1 and
# ::1, by default with socket mode 0666 (Postfix runs as another user) and no privilege drop.
write_conf() {
	local name=$1 port=$2 rx=${3:-} mx=${4:-}
	{
		printf 'redis: { host = "127.0.0.1"; port = %s; timeout_ms = %s; %s };\n' "$port" "$T" "$rx"
		printf 'lease: { ttl = 1800; };\n'
		printf 'limits: { user_recipients_per_hour = 0; lease_recipients_per_hour = 0; };\n'
		printf 'milter: { socket = "unix:%s"; trusted = [ "127.0.0.1/32", "::1/128" ]; %s };\n' \
			"$PBS_TMP/$name.sock" "${mx:-socket_mode = \"0666\"; user = \"\";}"
	} >"$PBS_TMP/$name.conf"
	chmod 600 "$PBS_TMP/$name.conf"
}

# start_milter NAME [CONF] — popbsmtp-milter -f -c CONF (default $PBS_TMP/NAME.conf) in the
# background, log appended to $PBS_TMP/milter-NAME.log; waits for a new "serving on" line
# (logged after the privilege drop and the start-up Redis check). Sets PID_NAME.
start_milter() {
	local name=$1 conf=${2:-$PBS_TMP/$1.conf} log=$PBS_TMP/milter-$1.log mark i=0 pid
	touch "$log"
	mark=$(grep -c 'serving on' "$log")
	"$MILTER" -f -c "$conf" >>"$log" 2>&1 &
	pid=$!
	disown "$pid"    # SIGKILLed on purpose below: no "Killed" noise from bash
	pbs_track_pid "$pid"
	eval "PID_$name=$pid"
	while [ "$(grep -c 'serving on' "$log")" -le "$mark" ]; do
		if ! kill -0 "$pid" 2>/dev/null || [ $i -ge $((200 * SLOW)) ]; then
			echo "# milter $name did not start within $((10 * SLOW)) s:" >&2
			tail -n 5 "$log" | sed 's/^/#   /' >&2
			return 1
		fi
		sleep 0.05
		i=$((i + 1))
	done
}
milter_log() { cat "$PBS_TMP/milter-$1.log"; }

# ---- program runs, each into $R/ID.{out,err,rc,ms}; safe to run in the background ----

# run_probe ID NAME ADDR — one milter session on NAME's socket from ADDR with one relay RCPT.
run_probe() {
	local id=$1 name=$2 addr=$3 t0
	t0=$(pbs_now_ms)
	"$PROBE" -t "$PROBE_TIMEOUT" "unix:$PBS_TMP/$name.sock" "${PF[@]}" "connect:$addr" \
		"${RELAY[@]}" >"$R/$id.out" 2>"$R/$id.err"
	echo $? >"$R/$id.rc"
	echo $(($(pbs_now_ms) - t0)) >"$R/$id.ms"
}

# run_hook ID CONF ADDR USER — the Dovecot hook the way Dovecot runs it.
run_hook() {
	local id=$1 conf=$2 addr=$3 user=$4 t0
	t0=$(pbs_now_ms)
	IP=$addr USER=$user timeout 20 "$HOOK" -c "$conf" -s imap /bin/echo EXECED \
		>"$R/$id.out" 2>"$R/$id.err"
	echo $? >"$R/$id.rc"
	echo $(($(pbs_now_ms) - t0)) >"$R/$id.ms"
}

# run_ctl ID CONF ARGS… — popbsmtpctl (killed after 20 s if it hangs: exit 124).
run_ctl() {
	local id=$1 conf=$2 t0
	shift 2
	t0=$(pbs_now_ms)
	timeout "${CTL_KILL_AFTER:-20}" "$CTL" -c "$conf" "$@" >"$R/$id.out" 2>"$R/$id.err"
	echo $? >"$R/$id.rc"
	echo $(($(pbs_now_ms) - t0)) >"$R/$id.ms"
}

ms_of() { cat "$R/$1.ms"; }

# answer ID — what the milter answered to the relay RCPT: continue, accept, 451, 550, … or
# "none (…)" when the session broke before that.
answer() {
	local line
	line=$(grep -F "rcpt:$FAR " "$R/$1.out" | head -n 1)
	line=${line#"rcpt:$FAR "}
	case $line in
	"replycode "*) line=${line#replycode }; echo "${line%% *}" ;;
	"") echo "none (probe exit $(cat "$R/$1.rc"): $(head -c 200 "$R/$1.err" | tr '\n' ' '))" ;;
	*) echo "$line" ;;
	esac
}

# relay NAME ADDR — run one session now; sets ANS.
relay() {
	run_probe last "$1" "$2"
	ANS=$(answer last)
}

# check_closed WHAT ID — an unleased (or fault-hit) relay got 451 or 550, never continue or
# accept, within MILTER_BOUND.
check_closed() {
	local what=$1 ans
	ans=$(answer "$2")
	pbs_check_match "$what: milter answers 451/550 (never continue)" '^(451|550)$' "$ans"
	pbs_check_le "$what: milter answered within its bound (ms)" "$MILTER_BOUND" "$(ms_of "$2")"
	MILTERMS[$what]="$ans in $(ms_of "$2")"
}

# check_answer WHAT ID WANT — the relay got exactly WANT, within MILTER_BOUND.
check_answer() {
	pbs_check_eq "$1: milter answers $3" "$3" "$(answer "$2")"
	pbs_check_le "$1: milter answered within its bound (ms)" "$MILTER_BOUND" "$(ms_of "$2")"
	MILTERMS[$1]="$(answer "$2") in $(ms_of "$2")"
}

# wait_relay NAME ADDR WANT SINCE_MS — repeat sessions until the answer is WANT (at most
# RECOVERY_BOUND + 5 s); sets WAITED (ms from SINCE_MS to the first WANT, or "never").
wait_relay() {
	local name=$1 addr=$2 want=$3 since=$4
	while :; do
		relay "$name" "$addr"
		if [ "$ANS" = "$want" ]; then
			WAITED=$(($(pbs_now_ms) - since))
			return 0
		fi
		if [ $(($(pbs_now_ms) - since)) -gt $((RECOVERY_BOUND + 5000)) ]; then
			WAITED=never
			return 1
		fi
		sleep 0.05
	done
}

# check_recovered WHAT NAME SINCE_MS — a leased relay is accepted again, soon after SINCE_MS,
# with the same milter process.
check_recovered() {
	local what=$1 name=$2 since=$3 pid
	eval "pid=\$PID_$name"
	wait_relay "$name" "$LEASED" accept "$since"
	pbs_check_eq "$what: fault removed, a leased relay is accepted again" accept "$ANS"
	if [ "$WAITED" != never ]; then
		pbs_check_le "$what: recovery time (ms)" "$RECOVERY_BOUND" "$WAITED"
	fi
	if kill -0 "$pid" 2>/dev/null; then pbs_ok "$what: recovered without a milter restart"; else
		pbs_fail "$what: the milter died"
	fi
	note "recovery $what: ${WAITED} ms"
	REC[$what]=$WAITED
}

# check_hook_fault WHAT ID ERE — the hook execed the login within its bound and wrote one
# line on stderr, "no lease granted: …" matching ERE.
check_hook_fault() {
	local what=$1 id=$2 re=$3
	pbs_check_eq "$what: hook execs the login" EXECED "$(cat "$R/$id.out")"
	pbs_check_le "$what: hook done within 2 x timeout_ms + slack (ms)" "$HOOK_BOUND" "$(ms_of "$id")"
	pbs_check_eq "$what: hook logs exactly one line" 1 "$(grep -c . "$R/$id.err")"
	pbs_check_match "$what: hook says why" "^popbsmtp-postlogin: no lease granted: .*($re)" \
		"$(head -n 1 "$R/$id.err")"
	HOOKMS[$what]=$(ms_of "$id")
}

# check_hook_ok WHAT ID — the hook granted (exit 0), execed, and stayed silent on stderr.
check_hook_ok() {
	pbs_check_eq "$1: hook grants (exit 0) and execs" "0 EXECED" "$(cat "$R/$2.rc") $(cat "$R/$2.out")"
	pbs_check_eq "$1: hook writes nothing on stderr" "" "$(cat "$R/$2.err")"
}

# check_ctl_fault WHAT ID ERE — popbsmtpctl exited 3 with one line matching ERE, in time.
check_ctl_fault() {
	local what=$1 id=$2 re=$3
	pbs_check_eq "$what: popbsmtpctl exits 3" 3 "$(cat "$R/$id.rc")"
	pbs_check_le "$what: popbsmtpctl done within its bound (ms)" "$CTL_BOUND" "$(ms_of "$id")"
	pbs_check_eq "$what: popbsmtpctl prints one error line" 1 "$(grep -c . "$R/$id.err")"
	pbs_check_match "$what: popbsmtpctl names the problem" "^popbsmtpctl: .*($re)" \
		"$(head -n 1 "$R/$id.err")"
	CTLMS[$what]=$(ms_of "$id")
}

declare -A REC HOOKMS CTLMS MILTERMS

# =====================================================================================
# A server that answers PING and then trickles one byte of a never-ending bulk reply
# every 150 ms to any other command: each read() returns within timeout_ms, so a
# per-read timeout never fires. With "all", PING trickles too.
# =====================================================================================
start_trickle() { # start_trickle MODE — sets TRICKLE_PORT, TRICKLE_PID
	TRICKLE_PORT=$(pbs_free_port)
	/usr/bin/python3 - "$TRICKLE_PORT" "$1" <<'PY' &
import socket, sys, threading, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(128)
mode = sys.argv[2]
def serve(c):
    try:
        while True:
            data = c.recv(65536)
            if not data:
                return
            if mode != "all" and b"PING" in data.upper() and b"GET" not in data.upper():
                c.sendall(b"+PONG\r\n")
                continue
            c.sendall(b"$1000000\r\n")
            while True:
                c.sendall(b"x"); time.sleep(0.15)
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
	TRICKLE_PID=$!
	pbs_track_pid "$TRICKLE_PID"
	pbs_wait_port "$TRICKLE_PORT" 5
}

# A milter whose start-up Redis check meets a trickling server; looked at near the end.
start_trickle all || exit 1
TRICKLE_ALL_PORT=$TRICKLE_PORT
write_conf tstart "$TRICKLE_ALL_PORT"
"$MILTER" -f -c "$PBS_TMP/tstart.conf" >"$PBS_TMP/milter-tstart.log" 2>&1 &
PID_tstart=$!
disown "$PID_tstart"
pbs_track_pid "$PID_tstart"
TSTART_T0=$(pbs_now_ms)

# =====================================================================================
# 1. Redis slowed: DEBUG SLEEP 2 while the lookups, the hook and ctl run
# =====================================================================================
section "Redis slowed (DEBUG SLEEP 2)"
pbs_start_redis slow --enable-debug-command yes || exit 1
P_SLOW=$REDIS_PORT
write_conf slow "$P_SLOW"
ctl "$PBS_TMP/slow.conf" grant "$LEASED" alice >/dev/null
start_milter slow || exit 1
relay slow "$LEASED"
pbs_check_eq "slowed: before the fault a leased relay is accepted" accept "$ANS"
rcli "$P_SLOW" DEBUG SLEEP 2 >/dev/null &
sleeper=$!
# Go as soon as Redis stops answering (a PING no longer comes back within 300 ms).
for i in $(seq 1 20); do timeout 0.3 redis-cli -h 127.0.0.1 -p "$P_SLOW" PING >/dev/null 2>&1 || break; done
pids=()
run_probe slow-u slow "$UNLEASED" & pids+=($!)
run_probe slow-l slow "$LEASED" & pids+=($!)
run_hook slow-h "$PBS_TMP/slow.conf" 192.0.2.12 bob & pids+=($!)
run_ctl slow-c "$PBS_TMP/slow.conf" check "$LEASED" & pids+=($!)
wait "${pids[@]}"
wait "$sleeper"
check_recovered "slowed" slow "$(pbs_now_ms)"
check_closed "slowed, unleased" slow-u
check_closed "slowed, leased" slow-l
pbs_check_match "slowed: the milter logs the timeout" 'lease lookup for 192\.0\.2\.(66|10) failed: .*timed out after 250 ms' \
	"$(milter_log slow)"
check_hook_fault "slowed" slow-h 'timed out|no answer within'
check_ctl_fault "slowed" slow-c 'timed out'
relay slow "$UNLEASED"
pbs_check_eq "slowed, after recovery: an unleased relay is refused 550" 550 "$ANS"

# =====================================================================================
# 2. Redis loading its dataset (-LOADING): a real restart with a slow RDB load
# =====================================================================================
section "Redis loading (-LOADING)"
pbs_start_redis load --enable-debug-command yes || exit 1
P_LOAD=$REDIS_PORT
write_conf load "$P_LOAD"
ctl "$PBS_TMP/load.conf" grant "$LEASED" alice >/dev/null
rcli "$P_LOAD" DEBUG POPULATE 6000 filler >/dev/null
rcli "$P_LOAD" SAVE >/dev/null
start_milter load || exit 1
relay load "$LEASED"
pbs_check_eq "loading: before the fault a leased relay is accepted" accept "$ANS"
pbs_stop_redis load
# key-load-delay (µs per key) makes the load take a few seconds; Redis answers -LOADING
# to every command meanwhile.
LOAD_T0=$(pbs_now_ms)
pbs_restart_redis load "$P_LOAD" --key-load-delay 250 --loading-process-events-interval-bytes 1024 ||
	pbs_fail "loading: Redis did not restart"
pbs_check_match "loading: precondition: Redis answers -LOADING" '^LOADING' "$(rcli "$P_LOAD" GET x 2>&1)"
pids=()
run_probe load-u load "$UNLEASED" & pids+=($!)
run_probe load-l load "$LEASED" & pids+=($!)
run_hook load-h "$PBS_TMP/load.conf" 192.0.2.12 bob & pids+=($!)
run_ctl load-c "$PBS_TMP/load.conf" check "$LEASED" & pids+=($!)
wait "${pids[@]}"
pbs_check_match "loading: precondition: Redis still loading after the runs" '^LOADING' "$(rcli "$P_LOAD" GET x 2>&1)"
check_closed "loading, unleased" load-u
check_closed "loading, leased" load-l
pbs_check_match "loading: the milter logs LOADING" 'lease lookup for 192\.0\.2\.(66|10) failed: .*LOADING' \
	"$(milter_log load)"
check_hook_fault "loading" load-h 'LOADING'
check_ctl_fault "loading" load-c 'LOADING'
while rcli "$P_LOAD" GET x 2>&1 | grep -q '^LOADING'; do sleep 0.05; done
LOAD_END=$(pbs_now_ms)
note "loading: Redis answered -LOADING for $((LOAD_END - LOAD_T0)) ms"
check_recovered "loading" load "$LOAD_END"
run_hook load-h2 "$PBS_TMP/load.conf" 192.0.2.13 bob
check_hook_ok "loading, after recovery" load-h2

# =====================================================================================
# 3. A read-only replica (-READONLY): writes fail, reads work
# =====================================================================================
section "read-only replica (-READONLY)"
pbs_start_redis master --repl-diskless-sync-delay 0 || exit 1
P_MASTER=$REDIS_PORT
write_conf master "$P_MASTER"
ctl "$PBS_TMP/master.conf" grant "$LEASED" alice >/dev/null
pbs_start_redis replica --replicaof 127.0.0.1 "$P_MASTER" || exit 1
P_RO=$REDIS_PORT
for i in $(seq 1 $((100 * SLOW))); do
	[ "$(rcli "$P_RO" EXISTS "popbsmtp:lease:$LEASED")" = 1 ] && break
	sleep 0.05
done
pbs_check_eq "readonly: precondition: the replica has the master's lease" 1 \
	"$(rcli "$P_RO" EXISTS "popbsmtp:lease:$LEASED")"
write_conf ro "$P_RO"
start_milter ro || exit 1
pids=()
run_probe ro-u ro "$UNLEASED" & pids+=($!)
run_probe ro-l ro "$LEASED" & pids+=($!)
run_hook ro-h "$PBS_TMP/ro.conf" 192.0.2.12 bob & pids+=($!)
run_ctl ro-c "$PBS_TMP/ro.conf" grant 192.0.2.14 carol & pids+=($!)
run_ctl ro-r "$PBS_TMP/ro.conf" check "$LEASED" & pids+=($!)
wait "${pids[@]}"
check_answer "readonly, unleased (reads work: no lease)" ro-u 550
check_answer "readonly, leased (reads work)" ro-l accept
check_hook_fault "readonly" ro-h 'READONLY'
check_ctl_fault "readonly (grant)" ro-c 'READONLY'
pbs_check_eq "readonly: popbsmtpctl check still reads (exit 0)" 0 "$(cat "$R/ro-r.rc")"
pbs_check_eq "readonly: nothing was written on the replica" 0 \
	"$(rcli "$P_RO" EXISTS popbsmtp:lease:192.0.2.12)"
rcli "$P_RO" REPLICAOF NO ONE >/dev/null
RO_END=$(pbs_now_ms)
run_hook ro-h2 "$PBS_TMP/ro.conf" 192.0.2.15 bob
check_hook_ok "readonly, promoted to master" ro-h2
wait_relay ro 192.0.2.15 accept "$RO_END"
pbs_check_eq "readonly, promoted: the new lease relays with the same milter" accept "$ANS"
note "recovery readonly: ${WAITED} ms (hook grant + first relay after REPLICAOF NO ONE)"
REC[readonly]=$WAITED

# =====================================================================================
# 4. Wrong password
# =====================================================================================
section "wrong password"
GOOD_PW="good-$RANDOM$RANDOM-pw"
BAD_PW="bad-$RANDOM$RANDOM-pw"
pbs_start_redis auth --requirepass "$GOOD_PW" || exit 1
P_AUTH=$REDIS_PORT
write_conf authgood "$P_AUTH" "password = \"$GOOD_PW\";"
write_conf auth "$P_AUTH" "password = \"$BAD_PW\";"
write_conf authnone "$P_AUTH"
ctl "$PBS_TMP/authgood.conf" grant "$LEASED" alice >/dev/null
start_milter auth || exit 1
pbs_check_match "wrong password: the start-up check says so (a warning, not fatal)" \
	'Redis not reachable at start.*(WRONGPASS|invalid username-password)' "$(milter_log auth)"
pids=()
run_probe auth-u auth "$UNLEASED" & pids+=($!)
run_probe auth-l auth "$LEASED" & pids+=($!)
run_hook auth-h "$PBS_TMP/auth.conf" 192.0.2.12 bob & pids+=($!)
run_ctl auth-c "$PBS_TMP/auth.conf" check "$LEASED" & pids+=($!)
run_ctl auth-n "$PBS_TMP/authnone.conf" check "$LEASED" & pids+=($!)
wait "${pids[@]}"
check_closed "wrong password, unleased" auth-u
check_closed "wrong password, leased" auth-l
pbs_check_match "wrong password: the milter logs the refusal" \
	'lease lookup for 192\.0\.2\.(66|10) failed: .*(WRONGPASS|invalid username-password)' "$(milter_log auth)"
check_hook_fault "wrong password" auth-h 'WRONGPASS|invalid username-password'
check_ctl_fault "wrong password" auth-c 'WRONGPASS|invalid username-password'
check_ctl_fault "no password (NOAUTH)" auth-n 'NOAUTH|Authentication required'
pbs_check_eq "wrong password: neither password appears in the milter log, hook or ctl output" 0 \
	"$(cat "$PBS_TMP/milter-auth.log" "$R"/auth-*.out "$R"/auth-*.err | grep -cF -e "$BAD_PW" -e "$GOOD_PW")"
# The administrator fixes the server side: it now expects what the config says.
rcli "$P_AUTH" -a "$GOOD_PW" --no-auth-warning CONFIG SET requirepass "$BAD_PW" >/dev/null
check_recovered "wrong password" auth "$(pbs_now_ms)"
run_hook auth-h2 "$PBS_TMP/auth.conf" 192.0.2.13 bob
check_hook_ok "wrong password, fixed" auth-h2

# =====================================================================================
# 5. Out of memory: maxmemory 1mb, noeviction, already full
# =====================================================================================
section "out of memory (maxmemory 1mb, noeviction)"
pbs_start_redis oom --enable-debug-command yes --maxmemory-policy noeviction || exit 1
P_OOM=$REDIS_PORT
write_conf oom "$P_OOM"
ctl "$PBS_TMP/oom.conf" grant "$LEASED" alice >/dev/null
rcli "$P_OOM" DEBUG POPULATE 20000 filler >/dev/null
rcli "$P_OOM" CONFIG SET maxmemory 1mb >/dev/null
pbs_check_match "oom: precondition: Redis refuses writes with OOM" '^OOM' "$(rcli "$P_OOM" SET x y 2>&1)"
start_milter oom || exit 1
pids=()
run_probe oom-u oom "$UNLEASED" & pids+=($!)
run_probe oom-l oom "$LEASED" & pids+=($!)
run_hook oom-h "$PBS_TMP/oom.conf" 192.0.2.12 bob & pids+=($!)
run_ctl oom-c "$PBS_TMP/oom.conf" grant 192.0.2.14 carol & pids+=($!)
wait "${pids[@]}"
check_answer "oom, unleased (reads work: no lease)" oom-u 550
check_answer "oom, leased (reads work)" oom-l accept
check_hook_fault "oom" oom-h 'OOM'
check_ctl_fault "oom (grant)" oom-c 'OOM'
pbs_check_eq "oom: the failed grant left no lease" 0 "$(rcli "$P_OOM" EXISTS popbsmtp:lease:192.0.2.12)"
rcli "$P_OOM" CONFIG SET maxmemory 0 >/dev/null
OOM_END=$(pbs_now_ms)
run_hook oom-h2 "$PBS_TMP/oom.conf" 192.0.2.15 bob
check_hook_ok "oom, memory freed" oom-h2
wait_relay oom 192.0.2.15 accept "$OOM_END"
pbs_check_eq "oom, memory freed: the new lease relays with the same milter" accept "$ANS"
note "recovery oom: ${WAITED} ms (hook grant + first relay after maxmemory lifted)"
REC[oom]=$WAITED

# =====================================================================================
# 6. Redis stopped and black-holed, for the hook and ctl (the milter side is covered by
#    milter_protocol.sh and milter_postfix.sh)
# =====================================================================================
section "Redis stopped / black-holed: hook and ctl"
DEAD_PORT=$(pbs_free_port)
write_conf dead "$DEAD_PORT"
pbs_start_blackhole || exit 1
write_conf hole "$BLACKHOLE_PORT"
pids=()
run_hook dead-h "$PBS_TMP/dead.conf" 192.0.2.12 bob & pids+=($!)
run_ctl dead-c "$PBS_TMP/dead.conf" check "$LEASED" & pids+=($!)
run_hook hole-h "$PBS_TMP/hole.conf" 192.0.2.12 bob & pids+=($!)
run_ctl hole-c "$PBS_TMP/hole.conf" check "$LEASED" & pids+=($!)
wait "${pids[@]}"
check_hook_fault "stopped" dead-h 'Connection refused'
check_ctl_fault "stopped" dead-c 'Connection refused'
check_hook_fault "black-holed" hole-h 'timed out|no answer within'
check_ctl_fault "black-holed" hole-c 'timed out'

# =====================================================================================
# 7. A trickling server: every read() gets a byte in time, the reply never completes
# =====================================================================================
section "trickling Redis (one byte per 150 ms, never a whole reply)"
start_trickle except-ping || exit 1
P_TRICKLE=$TRICKLE_PORT
TRICKLE_SERVER=$TRICKLE_PID
write_conf trickle "$P_TRICKLE"
start_milter trickle || exit 1
pids=()
PROBE_TIMEOUT=$((3000 * SLOW)) run_probe tr-u trickle "$UNLEASED" & pids+=($!)
run_hook tr-h "$PBS_TMP/trickle.conf" 192.0.2.12 bob & pids+=($!)
# ctl would wait as long as the server trickles: stopped after 3 s (exit 124).
CTL_KILL_AFTER=$((3 * SLOW)) run_ctl tr-c "$PBS_TMP/trickle.conf" check "$LEASED" & pids+=($!)
wait "${pids[@]}"
check_closed "trickling, unleased" tr-u
check_hook_fault "trickling" tr-h 'no answer within|timed out'
check_ctl_fault "trickling" tr-c 'timed out'
note "trickling: milter answer $(answer tr-u) after $(ms_of tr-u) ms; ctl exit $(cat "$R/tr-c.rc") after $(ms_of tr-c) ms"
# Remove the fault: the trickler goes, a real Redis takes its port.
kill -KILL "$TRICKLE_SERVER" 2>/dev/null
wait "$TRICKLE_SERVER" 2>/dev/null
mkdir -p "$PBS_TMP/redis-trickle"
TR_END=$(pbs_now_ms)
pbs_restart_redis trickle "$P_TRICKLE" || pbs_fail "trickling: Redis did not start on the port"
pbs_on_cleanup "kill \$(cat '$PBS_TMP/redis-trickle/redis.pid' 2>/dev/null) 2>/dev/null"
ctl "$PBS_TMP/trickle.conf" grant "$LEASED" alice >/dev/null
check_recovered "trickling" trickle "$TR_END"

# =====================================================================================
# 8. 500 concurrent sessions while Redis is black-holed
# =====================================================================================
section "500 concurrent sessions, Redis black-holed"
HOLE_PORT=$(pbs_free_port)
/usr/bin/python3 - "$HOLE_PORT" <<'PY' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1024)
held = []
while True:
    c, _ = s.accept(); held.append(c)
PY
HOLE_PID=$!
disown "$HOLE_PID"
pbs_track_pid "$HOLE_PID"
pbs_wait_port "$HOLE_PORT" 5 || exit 1
write_conf bh500 "$HOLE_PORT"
start_milter bh500 || exit 1
MP=$PID_bh500
status_of() { # status_of PID FIELD — a number from /proc/PID/status (kB for Vm*)
	local k v rest
	while read -r k v rest; do [ "$k" = "$2:" ] && { echo "$v"; return; }; done <"/proc/$1/status"
	echo 0
}
# Sample Threads and VmRSS every 20 ms until told to stop.
sample() { # sample PID FILE
	while [ ! -e "$2.stop" ] && kill -0 "$1" 2>/dev/null; do
		echo "$(status_of "$1" Threads) $(status_of "$1" VmRSS)" >>"$2"
		sleep 0.02
	done
}
result() { printf '%s\n' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# The milter has one thread per open session, and a session's thread outlives its client's
# close by its teardown (the close callback, libmilter's own, AddressSanitizer's). With 500
# clients and 500 sessions sharing two cores, a teardown can wait hundreds of ms for a CPU
# while its client has opened the next session: up to about twice the concurrency is
# normal (768 was seen on a loaded CI host under ASan). A leak or a thread per session or
# recipient shows as the 2000 sessions or 4000 recipients, far above this bound, and as
# threads that do not go back to the idle count (threads_after).
THREADS_BOUND=1000
threads_after() { # threads_after PID IDLE — the thread count once the teardowns are done
	local n i
	for i in $(seq 1 100); do
		n=$(status_of "$1" Threads)
		[ "$n" -le $(($2 + 2)) ] && break
		sleep 0.1
	done
	echo "$n"
}
# load_sampled FILE ARGS… — 2000 sessions of milter-load (500 at once, 2 relay recipients
# each, ARGS for the client addresses) against the bh500 milter, sampling its threads and
# RSS into FILE meanwhile. Sets out (milter-load's output), load_rc and load_ms.
load_sampled() {
	local file=$1 sampler t0
	shift
	sample "$MP" "$file" &
	sampler=$!
	t0=$(pbs_now_ms)
	out=$("$LOAD" -q -c 500 -n 2000 -r 2 -l 0 "$@" -t 10000 "unix:$PBS_TMP/bh500.sock" 2>"$file.err")
	load_rc=$?
	load_ms=$(($(pbs_now_ms) - t0))
	sleep 0.5
	touch "$file.stop"
	wait "$sampler"
}
RSS0=$(status_of "$MP" VmRSS)
THR0=$(status_of "$MP" Threads)
load_sampled "$PBS_TMP/samples" -a 10.1.0.1 -A 2000
THR1=$(threads_after "$MP" "$THR0")
RSS1=$(status_of "$MP" VmRSS)
THRMAX=$(awk '$1 > m { m = $1 } END { print m + 0 }' "$PBS_TMP/samples")
RSSMAX=$(awk '$2 > m { m = $2 } END { print m + 0 }' "$PBS_TMP/samples")
note "black hole x500: $(printf '%s' "$out" | cut -c1-400)"
pbs_check_eq "black hole x500: milter-load ran every session (exit 0)" 0 "$load_rc"
pbs_check_eq "black hole x500: 2000 sessions ok, 0 errors (no 10 s timeout)" "2000 0" \
	"$(result "$out" ok) $(result "$out" errors)"
pbs_check_eq "black hole x500: all 4000 relay answers are 4xx" 4000 "$(result "$out" relay_reply4xx)"
pbs_check_eq "black hole x500: no relay continue, accept, 5xx or other" "0 0 0 0" \
	"$(result "$out" relay_continue) $(result "$out" relay_accept) $(result "$out" relay_reply5xx) $(result "$out" relay_other)"
max_us=$(result "$out" max_us)
pbs_check_le "black hole x500: slowest RCPT answer under the MTA's 10 s command timeout (ms)" 10000 $((${max_us%%.*} / 1000))
pbs_check_eq "black hole x500: 500 sessions really were in flight at once" 500 "$(result "$out" max_inflight)"
pbs_check_le "black hole x500: milter threads stay bounded (max Threads:)" $THREADS_BOUND "$THRMAX"
pbs_check_le "black hole x500: threads back to the idle count afterwards" $((THR0 + 2)) "$THR1"
# An AddressSanitizer build keeps a large per-thread shadow and quarantine: RSS says
# nothing about leaks there (LeakSanitizer checks those at exit instead).
if ldd "$PBS_BIN/milter/popbsmtp-milter" | grep -q libasan; then
	echo "# black hole x500: RSS growth not judged under AddressSanitizer"
else
	pbs_check_le "black hole x500: RSS growth over the run (kB)" 32768 $((RSS1 - RSS0))
fi
note "black hole x500: ${load_ms} ms for 2000 sessions; threads idle $THR0, max $THRMAX, after $THR1;" \
	"RSS before ${RSS0} kB, max ${RSSMAX} kB, after ${RSS1} kB;" \
	"RCPT p50 $(result "$out" p50_us) us, p99 $(result "$out" p99_us) us, max $max_us us"
pbs_check_eq "black hole x500: the milter is still running" yes "$(kill -0 "$MP" 2>/dev/null && echo yes || echo no)"
# Redis comes back on the same port.
kill -KILL "$HOLE_PID"
while kill -0 "$HOLE_PID" 2>/dev/null; do sleep 0.02; done
mkdir -p "$PBS_TMP/redis-bh500"
BH_END=$(pbs_now_ms)
pbs_restart_redis bh500 "$HOLE_PORT" || pbs_fail "black hole x500: Redis did not start on the port"
pbs_on_cleanup "kill \$(cat '$PBS_TMP/redis-bh500/redis.pid' 2>/dev/null) 2>/dev/null"
ctl "$PBS_TMP/bh500.conf" grant "$LEASED" alice >/dev/null
ctl "$PBS_TMP/bh500.conf" grant 10.9.0.5 alice >/dev/null
check_recovered "black hole x500" bh500 "$BH_END"
# The same 500-session burst from a leased client, Redis healthy again. The pool (16
# connections, a wait bounded by timeout_ms) may defer some of these on a loaded host:
# fail-closed, so only counted here; a leased client must never be refused 5xx.
load_sampled "$PBS_TMP/samples2" -a 10.9.0.5 -A 1
RSS2=$(status_of "$MP" VmRSS)
pbs_check_eq "Redis back x500: every session ok (exit 0)" 0 "$load_rc"
pbs_check_eq "Redis back x500: 2000 sessions ok, 0 errors" "2000 0" "$(result "$out" ok) $(result "$out" errors)"
# Two relay recipients per session: an accepted message spares the MTA the second one
# (not sent); a deferred session gets 4xx for both.
pbs_check_eq "Redis back x500: every leased session accepted or deferred 4xx, none refused" "4000 0 0 0" \
	"$(($(result "$out" relay_accept) + $(result "$out" relay_notsent) + $(result "$out" relay_reply4xx))) $(result "$out" relay_continue) $(result "$out" relay_reply5xx) $(result "$out" relay_other)"
pbs_check_eq "Redis back x500: after each accept the MTA sent no second relay recipient" \
	"$(result "$out" relay_accept)" "$(result "$out" relay_notsent)"
pbs_check_le "Redis back x500: most leased sessions accepted (at least half)" "$(result "$out" relay_accept)" 1000
busy=$(grep -c 'lease lookup for 10\.9\.0\.5 failed: all 16 Redis connections busy' "$PBS_TMP/milter-bh500.log")
pbs_check_le "Redis back x500: milter threads stay bounded" $THREADS_BOUND \
	"$(awk '$1 > m { m = $1 } END { print m + 0 }' "$PBS_TMP/samples2")"
pbs_check_le "Redis back x500: threads back to the idle count afterwards" $((THR0 + 2)) \
	"$(threads_after "$MP" "$THR0")"
if ldd "$PBS_BIN/milter/popbsmtp-milter" | grep -q libasan; then
	echo "# Redis back x500: RSS growth not judged under AddressSanitizer"
else
	pbs_check_le "Redis back x500: RSS growth since before the first run (kB)" 32768 $((RSS2 - RSS0))
fi
note "Redis back x500: ${load_ms} ms for 2000 sessions; $(result "$out" relay_accept) of 2000 leased sessions" \
	"accepted, $(result "$out" relay_reply4xx) relay recipients deferred ($busy sessions logged 'all 16 Redis connections busy');" \
	"RSS after ${RSS2} kB; RCPT p50 $(result "$out" p50_us) us, p99 $(result "$out" p99_us) us"
X500_BACK="$(result "$out" relay_accept)/2000 sessions accepted, $(result "$out" relay_reply4xx) recipients deferred (pool busy)"
BH_FIG="threads max $THRMAX (idle $THR0), RSS ${RSS0}/${RSSMAX}/${RSS1}/${RSS2} kB"

# =====================================================================================
# 9. The milter SIGKILLed and restarted under SMTP load, through a private Postfix
# =====================================================================================
section "milter killed under load (Postfix)"
pbs_start_redis pf || exit 1
P_PF=$REDIS_PORT
write_conf pf "$P_PF"
ctl "$PBS_TMP/pf.conf" grant 127.0.0.21 alice >/dev/null
start_milter pf || exit 1
pbs_start_smtp_sink || exit 1
pbs_start_postfix "unix:$PBS_TMP/pf.sock" || exit 1
NOLEASE_RCPT=nolease@remote.example
LEASED_RCPT=leased@remote.example
pf_loop() { # one session from the unleased, one from the leased address, until told to stop
	local src rcpt t0 reply
	while [ ! -e "$PBS_TMP/pf.stop" ]; do
		for src in 127.0.0.22 127.0.0.21; do
			if [ "$src" = 127.0.0.22 ]; then rcpt=$NOLEASE_RCPT; else rcpt=$LEASED_RCPT; fi
			t0=$(pbs_now_ms)
			pbs_smtp "$src" "$rcpt" >/dev/null 2>&1
			reply=$(pbs_rcpt_reply)
			echo "$t0 $(pbs_now_ms) $src ${reply:-none}" >>"$PBS_TMP/pf.records"
		done
	done
}
: >"$PBS_TMP/pf.records"
pf_loop &
looper=$!
records() { wc -l <"$PBS_TMP/pf.records"; }
i=0
while [ "$(records)" -lt 2 ] && [ $i -lt $((300 * SLOW)) ]; do sleep 0.05; i=$((i + 1)); done
kill -KILL "$PID_pf"
T_KILL=$(pbs_now_ms)
# Down until at least 2 sessions (one per client) started and ended while it was (or 8 s).
down_sessions() { awk -v k="$T_KILL" '$1 > k' "$PBS_TMP/pf.records" | wc -l; }
i=0
while [ "$(down_sessions)" -lt 2 ] && [ $i -lt $((160 * SLOW)) ]; do sleep 0.05; i=$((i + 1)); done
T_START=$(pbs_now_ms)
start_milter pf || pbs_fail "killed: the milter did not start again"
T_UP=$(pbs_now_ms)
i=0
while ! awk -v u="$T_UP" '$1 > u && $3 == "127.0.0.21" && $4 == "250"' "$PBS_TMP/pf.records" | grep -q . &&
	[ $i -lt $((200 * SLOW)) ]; do sleep 0.05; i=$((i + 1)); done
touch "$PBS_TMP/pf.stop"
wait "$looper"
pbs_postfix_wait_queue 15
sed 's/^/# pf: /' "$PBS_TMP/pf.records"
before=$(awk -v k="$T_KILL" '$2 < k { print $3, $4 }' "$PBS_TMP/pf.records" | sort -u | tr '\n' ' ')
pbs_check_eq "killed: before the kill, leased 250 and unleased 550 (the setup works)" \
	"127.0.0.21 250 127.0.0.22 550 " "$before"
pbs_check_eq "killed: the unleased client never got 250 for a relay recipient" 0 \
	"$(awk '$3 == "127.0.0.22" && $4 !~ /^[45]/' "$PBS_TMP/pf.records" | wc -l)"
# Down = started after the kill and ended before the restart began (once started, the
# milter serves before start_milter returns, so T_UP would count served sessions as down).
down=$(awk -v k="$T_KILL" -v u="$T_START" '$1 > k && $2 < u' "$PBS_TMP/pf.records")
pbs_check_le "killed: sessions run while the milter was down (at least 2)" \
	"$(printf '%s\n' "$down" | grep -c .)" 2
pbs_check_eq "killed: while down, Postfix answered every session 4xx" 0 \
	"$(printf '%s\n' "$down" | awk 'NF && $4 !~ /^4/' | wc -l)"
pbs_check_eq "killed: nothing for the unleased recipient reached the next hop" 0 "$(pbs_sink_count "$NOLEASE_RCPT")"
first_up=$(awk -v u="$T_UP" '$1 > u && $3 == "127.0.0.21" && $4 == "250" { print $2; exit }' "$PBS_TMP/pf.records")
if [ -n "$first_up" ]; then
	pbs_ok "killed: after the restart the leased client relays again"
	note "killed: milter down $((T_UP - T_KILL)) ms (restart to serving $((T_UP - T_START)) ms);" \
		"first leased session started after that ended with 250 $((first_up - T_UP)) ms after it;" \
		"median SMTP session $(awk '{ print $2 - $1 }' "$PBS_TMP/pf.records" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }') ms"
	REC[killed]="restart to serving $((T_UP - T_START)), first leased 250 +$((first_up - T_UP))"
else
	pbs_fail "killed: after the restart the leased client never relayed"
fi
leased_250=$(awk '$3 == "127.0.0.21" && $4 == "250"' "$PBS_TMP/pf.records" | wc -l)
pbs_check_le "killed: the next hop got no more leased messages than Postfix accepted" \
	"$leased_250" "$(pbs_sink_count "$LEASED_RCPT")"
pbs_check_match "killed: Postfix logged the milter as unreachable" 'connect to Milter service unix:.*pf\.sock: (Connection refused|No such file)' \
	"$(cat "$POSTFIX_LOG")"
PF_FIG="$(wc -l <"$PBS_TMP/pf.records") sessions, $(printf '%s\n' "$down" | grep -c .) while down"

# =====================================================================================
# 10. Leases survive a Redis restart and a Redis crash with AOF on
# =====================================================================================
section "AOF persistence"
AOF_ARGS=(--appendonly yes --appendfsync always)
# check_expiry WHAT KEY BEFORE_MS — KEY still expires, at the same absolute time as before
# (PEXPIRETIME, Unix ms): its remaining TTL went on counting down through the restart.
check_expiry() {
	local after ttl
	after=$(rcli "$P_AOF" PEXPIRETIME "$2")
	ttl=$(rcli "$P_AOF" TTL "$2")
	pbs_check_match "$1: the lease still expires ($ttl s left)" '^[1-9][0-9]*$' "$ttl"
	pbs_check_eq "$1: same absolute expiry as before the restart (remaining TTL kept)" "$3" "$after"
}
pbs_start_redis aof "${AOF_ARGS[@]}" || exit 1
P_AOF=$REDIS_PORT
write_conf aof "$P_AOF"
start_milter aof || exit 1
ctl "$PBS_TMP/aof.conf" grant 192.0.2.77 alice --ttl 600 >/dev/null
v1=$(rcli "$P_AOF" GET popbsmtp:lease:192.0.2.77)
exp1=$(rcli "$P_AOF" PEXPIRETIME popbsmtp:lease:192.0.2.77)
sleep 1.1   # so that a TTL restarted from 600 s would show
pbs_stop_redis aof
pbs_restart_redis aof "$P_AOF" "${AOF_ARGS[@]}" || pbs_fail "aof: Redis did not restart"
pbs_check_eq "aof, SIGTERM + restart: the lease is still there, unchanged" "$v1" "$(rcli "$P_AOF" GET popbsmtp:lease:192.0.2.77)"
check_expiry "aof, SIGTERM + restart" popbsmtp:lease:192.0.2.77 "$exp1"
AOF_END=$(pbs_now_ms)
wait_relay aof 192.0.2.77 accept "$AOF_END"
pbs_check_eq "aof, after the restart: the surviving lease relays (same milter)" accept "$ANS"
note "aof: relaying again ${WAITED} ms after the restarted Redis listened"
ctl "$PBS_TMP/aof.conf" grant 192.0.2.78 bob --ttl 600 >/dev/null
exp1=$(rcli "$P_AOF" PEXPIRETIME popbsmtp:lease:192.0.2.78)
pid=$(cat "$PBS_TMP/redis-aof/redis.pid")
kill -KILL "$pid"
while rcli "$P_AOF" PING >/dev/null 2>&1; do sleep 0.05; done
rm -f "$PBS_TMP/redis-aof/redis.pid"
pbs_restart_redis aof "$P_AOF" "${AOF_ARGS[@]}" || pbs_fail "aof: Redis did not restart after the crash"
pbs_check_match "aof (fsync always), SIGKILL + restart: the lease granted just before the crash survives" \
	'^1\|[0-9]+\|ctl\|bob$' "$(rcli "$P_AOF" GET popbsmtp:lease:192.0.2.78)"
check_expiry "aof, SIGKILL + restart" popbsmtp:lease:192.0.2.78 "$exp1"

# =====================================================================================
# 11. Least privilege
# =====================================================================================
section "least privilege"
LP_PW="lp-$RANDOM$RANDOM-secret"
pbs_start_redis lp --requirepass "$LP_PW" || exit 1
P_LP=$REDIS_PORT
NOBODY_UID=$(id -u nobody)
NOBODY_GID=$(id -g nobody)
mkdir -p "$PBS_TMP/lp"
# lp_conf NAME PIDFILE — as root, drop to nobody, socket 0660 group mail, a Redis password.
lp_conf() {
	write_conf "$1" "$P_LP" "password = \"$LP_PW\";" \
		"user = \"nobody\"; socket_mode = \"0660\"; socket_group = \"mail\"; pidfile = \"$2\";"
}
lp_conf lpf "$PBS_TMP/lp/unused.pid"
chmod 644 "$PBS_TMP/lpf.conf"   # readable by others: a warning is due
ctl "$PBS_TMP/lpf.conf" grant "$LEASED" alice >/dev/null 2>&1
# (foreground)
start_milter lpf || exit 1
pbs_check_eq "privilege drop: Uid (real, effective, saved, fs) is nobody" \
	"$NOBODY_UID $NOBODY_UID $NOBODY_UID $NOBODY_UID" \
	"$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$PID_lpf/status")"
pbs_check_eq "privilege drop: Gid (real, effective, saved, fs) is nobody's group" \
	"$NOBODY_GID $NOBODY_GID $NOBODY_GID $NOBODY_GID" \
	"$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$PID_lpf/status")"
pbs_check_nomatch "privilege drop: no supplementary group 0 (root)" '(^| )0( |$)' \
	"$(awk '/^Groups:/ { $1 = ""; print }' "/proc/$PID_lpf/status")"
pbs_check_eq "privilege drop: no effective capabilities" 0000000000000000 \
	"$(awk '/^CapEff:/ { print $2 }' "/proc/$PID_lpf/status")"
pbs_check_eq "unix socket: milter.socket_mode and milter.socket_group applied" "660 mail socket" \
	"$(stat -c '%a %G %F' "$PBS_TMP/lpf.sock")"
relay lpf "$LEASED"
pbs_check_eq "privilege drop: as nobody it still reads leases (AUTH with the password)" accept "$ANS"
pbs_check_match "secret in a file others can read: warned at start" \
	'holds a Redis password but others can read it' "$(milter_log lpf)"
pbs_check_eq "secret: the password is not in the milter log" 0 "$(grep -cF "$LP_PW" "$PBS_TMP/milter-lpf.log")"
for prog in "$MILTER" "$CTL" "$HOOK"; do
	t_out=$("$prog" -t -c "$PBS_TMP/lpf.conf" 2>&1)
	pbs_check_match "secret: $(basename "$prog") -t warns about the readable file" 'others can read it' "$t_out"
	pbs_check_eq "secret: $(basename "$prog") -t does not print the password" 0 \
		"$(printf '%s' "$t_out" | grep -cF "$LP_PW")"
done
chmod 640 "$PBS_TMP/lpf.conf"
pbs_check_nomatch "secret: no warning once the file is chmod 640" 'others can read' \
	"$("$MILTER" -t -c "$PBS_TMP/lpf.conf" 2>&1)"
# (daemon mode, without -f) over a stale pidfile naming a process that no longer exists
lp_conf lpd "$PBS_TMP/lp/milter.pid"
sh -c 'echo $$ >"$1"' sh "$PBS_TMP/lp/milter.pid"   # that shell has exited: a stale pid
stale=$(cat "$PBS_TMP/lp/milter.pid")
"$MILTER" -c "$PBS_TMP/lpd.conf" >"$PBS_TMP/lpd.start" 2>&1
pbs_check_eq "daemon: the starting command exits 0" 0 $?
for i in $(seq 1 $((100 * SLOW))); do
	[ "$(cat "$PBS_TMP/lp/milter.pid" 2>/dev/null)" != "$stale" ] && [ -S "$PBS_TMP/lpd.sock" ] && break
	sleep 0.05
done
dpid=$(tr -d ' \n' <"$PBS_TMP/lp/milter.pid" 2>/dev/null)
[ -n "$dpid" ] && pbs_track_pid "$dpid"
pbs_check_match "daemon: the stale pidfile was replaced by a live pid" '^[0-9]+$' \
	"$( [ "$dpid" != "$stale" ] && kill -0 "$dpid" 2>/dev/null && echo "$dpid")"
pbs_check_eq "daemon: the pidfile names the milter itself" "$MILTER -c $PBS_TMP/lpd.conf" \
	"$(tr '\0' ' ' <"/proc/$dpid/cmdline" 2>/dev/null | sed 's/ $//')"
pbs_check_eq "daemon: that process runs as nobody" "$NOBODY_UID" \
	"$(awk '/^Uid:/ { print $3 }' "/proc/$dpid/status" 2>/dev/null)"
relay lpd "$LEASED"
pbs_check_eq "daemon: it serves (leased relay accepted)" accept "$ANS"
# A stale pidfile naming another live process, a second milter on a locked pidfile, and
# the pidfile after SIGTERM: test/integration/privsep.sh.
# A pidfile that is a symlink: replaced, never written through.
echo precious >"$PBS_TMP/lp/victim-file"
ln -s "$PBS_TMP/lp/victim-file" "$PBS_TMP/lp/sym.pid"
lp_conf lps "$PBS_TMP/lp/sym.pid"
"$MILTER" -c "$PBS_TMP/lps.conf" >"$PBS_TMP/lps.start" 2>&1
for i in $(seq 1 $((100 * SLOW))); do [ -f "$PBS_TMP/lp/sym.pid" ] && [ ! -L "$PBS_TMP/lp/sym.pid" ] && break; sleep 0.05; done
spid=$(tr -d ' \n' <"$PBS_TMP/lp/sym.pid" 2>/dev/null)
[[ $spid =~ ^[0-9]+$ ]] && pbs_track_pid "$spid"
pbs_check_eq "pidfile as a symlink: its target is not written" precious "$(cat "$PBS_TMP/lp/victim-file")"
pbs_check_eq "pidfile as a symlink: replaced by a regular file" "regular file" \
	"$(stat -c %F "$PBS_TMP/lp/sym.pid" 2>/dev/null | sed 's/regular empty file/regular file/')"

# =====================================================================================
# Start-up against a trickling Redis (started at the top, a minute ago or so)
# =====================================================================================
section "start-up check against a trickling Redis"
if grep -q 'serving on' "$PBS_TMP/milter-tstart.log"; then
	pbs_ok "trickling at start: the milter got past its start-up Redis check and serves"
else
	pbs_fail "trickling at start: the milter never served ($(($(pbs_now_ms) - TSTART_T0)) ms after its start; log: $(tail -n 2 "$PBS_TMP/milter-tstart.log" | tr '\n' ' '))"
fi

# =====================================================================================
# Summary figures
# =====================================================================================
section "figures"
for k in "${!MILTERMS[@]}"; do note "milter answer, $k: ${MILTERMS[$k]} ms"; done | sort
for k in "${!HOOKMS[@]}"; do note "hook ms, $k: ${HOOKMS[$k]}"; done | sort
for k in "${!CTLMS[@]}"; do note "ctl ms, $k: ${CTLMS[$k]}"; done | sort
for k in "${!REC[@]}"; do note "recovery ms, $k: ${REC[$k]}"; done | sort
note "black hole x500: $BH_FIG; Redis back: $X500_BACK"
note "postfix kill: $PF_FIG"
note "bounds: milter ${MILTER_BOUND} ms, hook ${HOOK_BOUND} ms, ctl ${CTL_BOUND} ms, recovery ${RECOVERY_BOUND} ms"
note "run time: $(($(pbs_now_ms) - START_MS)) ms"
pbs_done
