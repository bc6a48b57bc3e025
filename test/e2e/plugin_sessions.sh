#!/bin/bash
# plugin_sessions.sh BUILD_DIR — 200 IMAP sessions idle at once on a private Dovecot with the
# popbsmtp plugin: every one keeps its lease, the refreshes cause no error, and Redis sees
# what lease.refresh promises — one script (the refresh script, by EVALSHA; by EVAL only
# while Redis does not know it) per session per refresh, nothing else (INFO commandstats
# over a window of several refreshes).
# Usage (as root): test/e2e/plugin_sessions.sh build — TAP on stdout.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"

pbs_plugin_test_start "$@"
plugin_dir=$PLUGIN_DIR
N=200
TTL=6
REFRESH=2
WINDOW=10   # seconds of counting: 5 refreshes

pbs_start_redis || bail "cannot start redis-server"
conf="$PBS_TMP/popbsmtp.conf"
PBS_CONF_TTL=$TTL PBS_CONF_LEASE_EXTRA="refresh = $REFRESH;" pbs_write_config "$conf"
pbs_start_dovecot_plugin "$plugin_dir" "$conf" || bail "cannot start dovecot"

# calls COMMAND — how often Redis ran COMMAND so far (INFO commandstats).
calls() {
	pbs_redis_cli INFO commandstats | tr -d '\r' |
		sed -n "s/^cmdstat_$1:calls=\([0-9]*\),.*/\1/p" | grep . || echo 0
}
# scripts — how many scripts Redis ran so far, whole or by name.
scripts() {
	echo $(($(calls eval) + $(calls evalsha)))
}

sources=()
for i in $(seq 1 $N); do sources+=("127.0.1.$i"); done
mark=$(pbs_dovecot_log_mark)
pbs_idle_start many alice "${sources[@]}"
pbs_check_eq "$N IMAP sessions logged in and idling" $N "$PBS_IDLE_OK"
pbs_check_eq "every session has its lease" $N \
	"$(pbs_redis_cli --scan --pattern 'popbsmtp:lease:127.0.1.*' | wc -l)"

# Count over WINDOW seconds, once every session refreshes on its own timer.
sleep $REFRESH
eval0=$(scripts) set0=$(calls set) t0=$(pbs_now_ms)
sleep $WINDOW
evals=$(($(scripts) - eval0)) set=$(($(calls set) - set0)) ms=$(($(pbs_now_ms) - t0))
expected=$((N * ms / 1000 / REFRESH))
echo "# $evals scripts in $ms ms from $N sessions with lease.refresh = $REFRESH s (expected $expected)"
# Timers fire on each process's own clock, and a busy 2-core host delays some: a band of
# +-20 % around sessions / refresh, not an exact count.
pbs_check_le "Redis write rate: scripts at least 0.8 x sessions / refresh" $evals $((expected * 8 / 10))
pbs_check_le "Redis write rate: scripts at most 1.2 x sessions / refresh" $((expected * 12 / 10)) $evals
pbs_check_eq "no lease had to be written again (no SET during the window)" 0 "$set"
pbs_check_eq "every session still has its lease" $N \
	"$(pbs_redis_cli --scan --pattern 'popbsmtp:lease:127.0.1.*' | wc -l)"
pbs_idle_cmd many noop
pbs_check_eq "every session still answers NOOP" $N "$PBS_IDLE_OK"
pbs_check_eq "no error or warning in Dovecot's log" "" \
	"$(pbs_dovecot_log_since "$mark" | grep -E 'Error|Warning|Fatal|Panic')"
pbs_check_eq "the session helper saw no error" "" "$(pbs_idle_errors many)"
pbs_idle_cmd many logout
pbs_check_eq "$N logouts" $N "$PBS_IDLE_OK"
pbs_done
