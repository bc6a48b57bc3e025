#!/bin/bash
# hook_exec.sh BUILD_DIR — what the login inherits from popbsmtp-postlogin (issue 11): the
# program the hook execs must hold no socket the hook opened and must get the signal
# dispositions and mask the hook was started with — on the normal path (Redis up, Redis
# black-holed) and on the deadline path, where the exec happens from the SIGALRM handler in
# the middle of a Redis exchange (black-holed sentinels; a sentinel naming a master whose
# connect never completes). The hook runs directly, as Dovecot's script-login would run it:
# wiped environment, a socket on fd 3, and a command to exec that reports its own state.
# PBS_HOOK=/path/to/popbsmtp-postlogin runs the checks against another build of the hook.

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/sentinel.sh"

pbs_build_dir_arg "$@"
hook=${PBS_HOOK:-$PBS_BIN/hook/popbsmtp-postlogin}
[ -x "$hook" ] || { echo "Bail out! $hook: not built"; exit 1; }
T=300 # redis.timeout_ms; the hook's deadline is 2 T

# launch.py IGNORE BLOCK CMD… — exec CMD with exactly these signals ignored and blocked
# (comma-separated names, or "-"), and a socket on fd 3 as Dovecot leaves one there.
cat >"$PBS_TMP/launch.py" <<'PY'
import os, signal, socket, sys
def sigs(v):
    return [] if v == "-" else [getattr(signal, "SIG" + n) for n in v.split(",")]
for sig in (signal.SIGPIPE, signal.SIGXFSZ):  # Python ignores these itself
    signal.signal(sig, signal.SIG_DFL)
for sig in sigs(sys.argv[1]):
    signal.signal(sig, signal.SIG_IGN)
a, b = socket.socketpair()
if a.fileno() != 3:
    os.dup2(a.fileno(), 3)
os.set_inheritable(3, True)
signal.pthread_sigmask(signal.SIG_SETMASK, sigs(sys.argv[2]))
os.execv(sys.argv[3], sys.argv[3:])
PY
# What the exec'd program (dash) reports: its ignored and blocked signal sets (read by the
# shell itself before it runs any command: dash clears its mask around its first vfork), its
# descriptors (ls runs in a child, so lists only the shell's own), and that it lived past
# the hook's deadline (an interval timer left armed would kill it with SIGALRM first).
report='while read -r k v; do case $k in SigIgn:|SigBlk:) echo "$k $v" ;; esac; done </proc/$$/status
ls -l /proc/$$/fd
sleep 1
echo alive'

# launch NAME IGNORE BLOCK CMD… — run CMD through launch.py as Dovecot runs the hook (only
# IP and USER in the environment); stdout to NAME.out, stderr to NAME.err.
launch() {
	local name=$1 ign=$2 blk=$3
	shift 3
	env -i IP=192.0.2.44 USER=alice /usr/bin/python3 "$PBS_TMP/launch.py" "$ign" "$blk" "$@" \
		>"$PBS_TMP/$name.out" 2>"$PBS_TMP/$name.err"
}

# fds NAME — "FD KIND" per descriptor of the reporter (KIND: socket, pipe, file, …).
fds() {
	awk '/ -> / { t = $NF; sub(/:.*/, "", t); if (t ~ /^\//) t = "file"; print $(NF - 2), t }' \
		"$PBS_TMP/$1.out"
}

# sigs NAME — the SigIgn and SigBlk lines the reporter printed.
sigs() { grep -E '^Sig(Ign|Blk):' "$PBS_TMP/$1.out"; }

# check_case WHAT NAME BASE — NAME (through the hook) left the login what BASE (the same
# launch without the hook) had: the same descriptors, one socket (fd 3), the same signals.
check_case() {
	local what=$1 name=$2 base=$3
	pbs_check_eq "$what: the login ran and outlived the deadline" alive "$(tail -n 1 "$PBS_TMP/$name.out")"
	pbs_check_eq "$what: the login holds only fd 3 as a socket" "3 socket" "$(fds "$name" | grep socket)"
	pbs_check_eq "$what: the login holds the descriptors it would without the hook" \
		"$(fds "$base")" "$(fds "$name")"
	pbs_check_eq "$what: ignored and blocked signals as the hook was started with" \
		"$(sigs "$base")" "$(sigs "$name")"
}

pbs_start_redis || exit 1
PBS_CONF_TIMEOUT_MS=$T pbs_write_config "$PBS_TMP/up.conf"
pbs_start_blackhole || exit 1
hole1=$BLACKHOLE_PORT
PBS_CONF_REDIS_PORT=$hole1 PBS_CONF_TIMEOUT_MS=$T pbs_write_config "$PBS_TMP/hole.conf"
pbs_start_blackhole || exit 1
hole2=$BLACKHOLE_PORT
pbs_start_blackhole || exit 1
hole3=$BLACKHOLE_PORT
pbs_start_blackhole || exit 1
hole4=$BLACKHOLE_PORT
pbs_start_stuck_listener || exit 1
# After two black-holed sentinels (2 T), the third answers after T/2 and names a master that
# never completes the TCP handshake: the deadline (3 T) fires while the hook is connecting.
pbs_start_fake_sentinel 127.0.0.1 "$STUCK_PORT" $((T / 2)) || exit 1
sentinel_conf() { # FILE NODE_PORT…
	local file=$1 p nodes=""
	shift
	for p in "$@"; do nodes="$nodes${nodes:+, }\"127.0.0.1:$p\""; done
	printf 'redis: { timeout_ms = %s; sentinel: { master = "mymaster"; nodes = [ %s ]; }; };\n' \
		"$T" "$nodes" >"$file"
}
# Each black-holed sentinel takes T: three would end with the deadline (3 T), a race; with
# four the deadline always fires while the hook waits on one of them.
sentinel_conf "$PBS_TMP/sentinels.conf" "$hole1" "$hole2" "$hole3" "$hole4"
sentinel_conf "$PBS_TMP/stuck.conf" "$hole1" "$hole2" "$FAKE_SENTINEL_PORT"

# Two starting states: a clean one, and one with inherited ignored and blocked signals
# (SIGALRM among the blocked: the deadline must fire all the same).
for state in clean:-:- inherited:HUP,USR2,PIPE:USR1,ALRM; do
	IFS=: read -r sname ign blk <<<"$state"
	launch "base-$sname" "$ign" "$blk" /bin/sh -c "$report"
	for path in up hole sentinels stuck; do
		launch "$path-$sname" "$ign" "$blk" "$hook" -c "$PBS_TMP/$path.conf" /bin/sh -c "$report"
	done
	pbs_check_match "$sname: Redis up: the lease is written" '^1\|[0-9]+\|\|alice$' \
		"$(pbs_redis_cli GET popbsmtp:lease:192.0.2.44)"
	pbs_redis_cli DEL popbsmtp:lease:192.0.2.44 >/dev/null
	check_case "$sname, Redis up" "up-$sname" "base-$sname"
	pbs_check_match "$sname, Redis black-holed: the hook says the read timed out" 'timed out' \
		"$(cat "$PBS_TMP/hole-$sname.err")"
	check_case "$sname, Redis black-holed" "hole-$sname" "base-$sname"
	for path in sentinels stuck; do
		pbs_check_match "$sname, $path: the deadline fired" "no answer within $((3 * T)) ms" \
			"$(cat "$PBS_TMP/$path-$sname.err")"
		check_case "$sname, deadline ($path)" "$path-$sname" "base-$sname"
	done
done

# lease.sender = address: a user name that is no address could never relay; the login is
# told so, gets no lease, and still runs. An address gets its lease.
PBS_CONF_LEASE_EXTRA='sender = "address";' PBS_CONF_TIMEOUT_MS=$T pbs_write_config "$PBS_TMP/sender.conf"
out=$(env -i IP=192.0.2.45 USER=alice "$hook" -c "$PBS_TMP/sender.conf" /bin/echo ran 2>&1)
pbs_check_match "lease.sender = address, user alice: the login runs" '^ran$' "$out"
pbs_check_match "... and is told why it gets no lease" \
	"no lease granted: lease.sender = address needs user names that are plain addresses \\(user 'alice'" "$out"
pbs_check_eq "... none is written" 0 "$(pbs_redis_cli EXISTS popbsmtp:lease:192.0.2.45)"
env -i IP=192.0.2.45 USER=alice@example.org "$hook" -c "$PBS_TMP/sender.conf" /bin/true 2>/dev/null
pbs_check_match "... user alice@example.org: the lease is written" '^1\|[0-9]+\|\|alice@example\.org$' \
	"$(pbs_redis_cli GET popbsmtp:lease:192.0.2.45)"

pbs_done
