#!/bin/bash
# sentinel.sh BUILD_DIR — popbsmtp on Redis Sentinel, with real servers on loopback: one
# master (node a), one replica (node b), three redis-sentinel processes (quorum 2,
# down-after 1000 ms, failover-timeout 3000 ms), Redis ACL users for the hook (writes
# leases only) and the milter (reads leases only), the real popbsmtp-milter driven by
# bench/milter-probe and the real popbsmtp-postlogin.
#
#   1. Before any failover: ACLs hold (NOPERM where they should), the hook grants, the
#      milter honours the lease and refuses an unleased client.
#   2. Under a steady stream of hook logins (fresh addresses) and relay attempts (a leased
#      address, never-leased addresses, the addresses the hook just leased), kill -9 the
#      master. Every answer is logged with a timestamp; afterwards the log must show that
#      no never-leased address was ever let through, that the milter and the hook came
#      back by themselves, and how long each was without service (failover_gap_ms=…).
#   3. The killed node is restarted as a replica (READONLY to writes): nothing changes.
#   4. A planned switchover back to it (SENTINEL FAILOVER) under the same stream: the
#      demoted master stays alive, so this is where READONLY and stale reads can show.
#
# Environment:
#   PBS_KEEP_TMP=1            keep the temp dir (answers.log, logins.log, events.log, every
#                             server's log and config)
#   PBS_HA_STALE_BOUND_MS     how long the milter may refuse fresh leases after the
#                             switchover (default 3000; see docs/ha.md)
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/milter.sh"
. "$here/../e2e/lib/sentinel.sh"

if [ $# -ne 1 ] || [ ! -d "$1" ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
PBS_BIN=$(cd "$1" && pwd)
MILTER=$PBS_BIN/milter/popbsmtp-milter
HOOK=$PBS_BIN/hook/popbsmtp-postlogin
PROBE=$PBS_BIN/bench/milter-probe
for exe in "$MILTER" "$HOOK" "$PROBE" "$PBS_BIN/ctl/popbsmtpctl"; do
	[ -x "$exe" ] || { echo "missing $exe (build first)" >&2; exit 1; }
done
for exe in redis-server redis-sentinel redis-cli; do
	command -v "$exe" >/dev/null || { echo "$exe is not installed" >&2; exit 1; }
done

TIMEOUT_MS=500              # redis.timeout_ms of every program here
RECOVERY_BOUND_MS=20000     # service must be back within this after a kill / switchover
HOOK_BOUND_MS=$((2 * TIMEOUT_MS + 2000)) # the hook's own deadline plus process start-up
RCPT='<x@remote.example>'
ANSWERS=$PBS_TMP/answers.log # T0 T1 KIND IP ANSWER, one line per relay attempt
LOGINS=$PBS_TMP/logins.log   # T0 T1 IP RESULT MESSAGE, one line per hook run
STOP=$PBS_TMP/stop-loops
: >"$ANSWERS"
: >"$LOGINS"

# ms — the wall clock in milliseconds, in MS (no fork: the loops call it a lot).
ms() {
	local t=${EPOCHREALTIME/./}
	MS=${t:0:${#t}-3}
}
ms
T_START=$MS
# rel T — T relative to the start, for the timeline.
rel() { printf '+%d ms' $(($1 - T_START)); }
# event WHAT T — print a timeline entry and keep it (with the absolute time) in events.log.
event() {
	echo "# $(rel "$2"): $1"
	echo "$2 $1" >>"$PBS_TMP/events.log"
}

# ---- one relay attempt, one login: both logged with timestamps ----

# relay IP KIND — one milter session from IP with a relay recipient. Sets ANSWER to
# continue, accept, 550, 451 or other:…, and appends "T0 T1 KIND IP ANSWER" to ANSWERS.
relay() {
	local out line t0
	ms
	t0=$MS
	out=$("$PROBE" -t 5000 "unix:$MILTER_SOCKET" "macro:connect:v=Postfix 3.7.11" "connect:$1" \
		'mail:<a@b.example>' 'macro:rcpt:{rcpt_mailer}=smtp' "rcpt:$RCPT" quit 2>&1)
	ms
	ANSWER=""
	while IFS= read -r line; do
		case $line in
		"rcpt:$RCPT continue") ANSWER="continue" ;;
		"rcpt:$RCPT accept") ANSWER="accept" ;;
		"rcpt:$RCPT replycode 550 "*) ANSWER=550 ;;
		"rcpt:$RCPT replycode 451 "*) ANSWER=451 ;;
		"rcpt:$RCPT "*) ANSWER="other:${line#"rcpt:$RCPT "}" ;;
		esac
	done <<<"$out"
	[ -n "$ANSWER" ] || ANSWER="other:$(printf '%s' "$out" | tail -n 1)"
	ANSWER=${ANSWER// /_}
	printf '%s %s %s %s %s\n' "$t0" "$MS" "$2" "$1" "$ANSWER" >>"$ANSWERS"
}

# login IP USER [CONF] — one run of the hook as Dovecot runs it; the "login" it execs
# prints login-continued. Sets LOGIN to granted, failed (logged "no lease granted", login
# continued) or broken (the login did not continue), LOGIN_MSG to what the hook said;
# appends "T0 T1 IP LOGIN MESSAGE" to LOGINS.
login() {
	local conf=${3:-$CONF_HOOK} out t0
	ms
	t0=$MS
	out=$(IP=$1 USER=$2 "$HOOK" -c "$conf" -s imap /bin/echo login-continued 2>&1)
	ms
	if [ "$out" = login-continued ]; then
		LOGIN=granted
	elif [[ $out == *"no lease granted"* && $out == *login-continued ]]; then
		LOGIN=failed
	else
		LOGIN=broken
	fi
	LOGIN_MSG=""
	[ "$LOGIN" = granted ] || LOGIN_MSG=$(printf '%s' "$out" | grep -v '^login-continued$' | tr '\n' ' ')
	printf '%s %s %s %s %s\n' "$t0" "$MS" "$1" "$LOGIN" "$LOGIN_MSG" >>"$LOGINS"
}

# ---- the background stream ----

loop_hook() {
	local i=0
	trap - EXIT
	while [ ! -e "$STOP" ]; do
		i=$((i + 1))
		login "127.1.$((i / 250)).$((i % 250 + 1))" "user$i"
		sleep 0.08
	done
}
loop_leased() {
	trap - EXIT
	while [ ! -e "$STOP" ]; do
		relay 127.0.0.2 leased
		sleep 0.05
	done
}
loop_unleased() {
	local i=0
	trap - EXIT
	while [ ! -e "$STOP" ]; do
		i=$((i + 1))
		relay "127.0.1.$((i % 250 + 1))" unleased
		sleep 0.05
	done
}
# The address the hook granted last (its lease may be lost if written just before a
# failover, so 550 is allowed here; accept proves fresh leases are seen).
loop_fresh() {
	local ip
	trap - EXIT
	while [ ! -e "$STOP" ]; do
		ip=$(tail -n 30 "$LOGINS" | awk '$4 == "granted" { a = $3 } END { print a }')
		[ -n "$ip" ] && relay "$ip" fresh
		sleep 0.05
	done
}
LOOP_PIDS=()
start_loops() {
	rm -f "$STOP"
	loop_hook & LOOP_PIDS+=($!)
	loop_leased & LOOP_PIDS+=($!)
	loop_unleased & LOOP_PIDS+=($!)
	loop_fresh & LOOP_PIDS+=($!)
	for p in "${LOOP_PIDS[@]}"; do pbs_track_pid "$p"; done
}
stop_loops() {
	touch "$STOP"
	wait "${LOOP_PIDS[@]}" 2>/dev/null
	LOOP_PIDS=()
}

# A good milter answer: accept for the leased address, 550 for a never-leased one (451,
# deferred, is no service). A good hook answer: granted.
# first_good_* SINCE — the earliest answer time (T1) of a good answer to a request started
# at or after SINCE; last_good_* BEFORE — the latest one answered at or before BEFORE.
first_good_milter() {
	awk -v s="$1" '$1 >= s && (($3 == "leased" && $5 == "accept") || ($3 == "unleased" && $5 == "550")) { if (t == "" || $2 < t) t = $2 } END { print t }' "$ANSWERS"
}
last_good_milter() { # BEFORE
	awk -v b="$1" '$2 <= b && (($3 == "leased" && $5 == "accept") || ($3 == "unleased" && $5 == "550")) { t = $2 } END { print t }' "$ANSWERS"
}
first_good_hook() { awk -v s="$1" '$1 >= s && $4 == "granted" { if (t == "" || $2 < t) t = $2 } END { print t }' "$LOGINS"; }
last_good_hook() { awk -v b="$1" '$2 <= b && $4 == "granted" { t = $2 } END { print t }' "$LOGINS"; }

# wait_recovery SINCE — wait until both the milter and the hook gave a good answer to a
# request started after SINCE. Sets MILTER_BACK, HOOK_BACK (empty if not within the bound).
wait_recovery() {
	local since=$1
	MILTER_BACK="" HOOK_BACK=""
	while :; do
		[ -n "$MILTER_BACK" ] || MILTER_BACK=$(first_good_milter "$since")
		[ -n "$HOOK_BACK" ] || HOOK_BACK=$(first_good_hook "$since")
		[ -n "$MILTER_BACK" ] && [ -n "$HOOK_BACK" ] && return 0
		ms
		[ $((MS - since)) -gt "$RECOVERY_BOUND_MS" ] && return 1
		sleep 0.1
	done
}

# report_gap LABEL EVENT_T — check and print the time without service around EVENT_T.
# Sets GAP_MILTER, GAP_HOOK.
report_gap() {
	local label=$1 t=$2 lm lh fm fh
	lm=$(last_good_milter "$t")
	lh=$(last_good_hook "$t")
	fm=$(first_good_milter "$t")
	fh=$(first_good_hook "$t")
	if [ -n "$lm" ] && [ -n "$fm" ]; then
		GAP_MILTER=$((fm - lm))
		pbs_check_le "$label: milter back by itself within ${RECOVERY_BOUND_MS} ms (ms after the event)" \
			"$RECOVERY_BOUND_MS" $((fm - t))
		echo "# $label: milter: last good answer $(rel "$lm"), first good answer $(rel "$fm")"
	else
		GAP_MILTER=-1
		pbs_fail "$label: milter: no good answer before ($lm) or after ($fm) the event"
	fi
	if [ -n "$lh" ] && [ -n "$fh" ]; then
		GAP_HOOK=$((fh - lh))
		pbs_check_le "$label: hook granting again by itself within ${RECOVERY_BOUND_MS} ms (ms after the event)" \
			"$RECOVERY_BOUND_MS" $((fh - t))
		echo "# $label: hook: last grant $(rel "$lh"), first grant $(rel "$fh")"
	else
		GAP_HOOK=-1
		pbs_fail "$label: hook: no grant before ($lh) or after ($fh) the event"
	fi
}

# probe_all LABEL FILTER — every address the hook granted per the awk FILTER on LOGINS
# lines (e.g. '$1 >= 123'): the milter must let each relay. Prints how many were probed.
probe_all() {
	local label=$1 filter=$2 ip n=0 bad=0 list
	list=$(awk "\$4 == \"granted\" && $filter { print \$3 }" "$LOGINS")
	for ip in $list; do
		relay "$ip" check
		n=$((n + 1))
		if [ "$ANSWER" != accept ]; then
			bad=$((bad + 1))
			echo "# $label: $ip answered $ANSWER; its grant: $(grep " $ip granted" "$LOGINS" | tail -n 1)"
		fi
	done
	pbs_check_eq "$label: every one of the $n leases is honoured by the milter" 0 "$bad"
	if [ "$n" -gt 0 ]; then pbs_ok "$label: there were leases to check ($n)"; else
		pbs_fail "$label: no lease was granted in that window"; fi
}

# rcli PORT ARGS… — redis-cli as the default (administrative) user.
rcli() { local p=$1; shift; redis-cli -h 127.0.0.1 -p "$p" "$@" 2>&1; }
# ucli PORT USER PASS ARGS… — redis-cli as an ACL user.
ucli() {
	local p=$1 u=$2 pw=$3
	shift 3
	redis-cli -h 127.0.0.1 -p "$p" --user "$u" --pass "$pw" --no-auth-warning "$@" 2>&1
}

# =====================================================================================
# The servers: node a (master), node b (replica), ACL users on both, three sentinels.
# =====================================================================================
# AOF as docs/ha.md recommends (the crash below is a kill -9: whatever the AOF holds).
PBS_HA_NODE_EXTRA=$'appendonly yes\nappendfsync everysec'
pbs_ha_start_node a || { echo "cannot start node a" >&2; exit 1; }
pbs_ha_start_node b "$HA_PORT_a" || { echo "cannot start node b" >&2; exit 1; }
A=$HA_PORT_a
B=$HA_PORT_b
pbs_ha_wait_link_up "$B" 15 || exit 1

HOOK_PASS=hook-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
MILTER_PASS=milter-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')
# The hook may write leases (its grant script), nothing else; the milter may read
# leases, nothing else. ROLE: both check that the server the sentinels name is a master.
# Replication does not carry ACLs, so both nodes get them; CONFIG REWRITE keeps them in
# each node's config file, so a node restarted after a crash still has them.
# The exact lines docs/ha.md gives, as an administrator pastes them (its placeholders
# replaced by this test's passwords).
acl_line() { sed -n "s/^\(ACL SETUSER $1 .*\)\$/\1/p" "$here/../../docs/ha.md"; }
read -ra ACL_HOOK <<<"$(acl_line hook | sed "s/HOOK-PASSWORD/$HOOK_PASS/")"
read -ra ACL_MILTER <<<"$(acl_line milter | sed "s/MILTER-PASSWORD/$MILTER_PASS/")"
pbs_check_match "docs/ha.md gives the hook's and the milter's ACL lines" \
	'^ACL SETUSER hook .* ACL SETUSER milter ' "${ACL_HOOK[*]} ${ACL_MILTER[*]}"
for p in "$A" "$B"; do
	pbs_check_eq "ACL SETUSER hook on :$p" OK "$(rcli "$p" "${ACL_HOOK[@]}")"
	pbs_check_eq "ACL SETUSER milter on :$p" OK "$(rcli "$p" "${ACL_MILTER[@]}")"
	pbs_check_eq "CONFIG REWRITE on :$p (the ACL users persist)" OK "$(rcli "$p" CONFIG REWRITE)"
done
echo "# ACL users: $(rcli "$A" ACL LIST | grep -E '^user (hook|milter) ' | sed "s/#[0-9a-f]*/#…/g" | tr '\n' ';')"

pbs_ha_start_sentinel s1 "$A" || exit 1
pbs_ha_start_sentinel s2 "$A" || exit 1
pbs_ha_start_sentinel s3 "$A" || exit 1
S1=$HA_SENTINEL_PORT_s1
S2=$HA_SENTINEL_PORT_s2
S3=$HA_SENTINEL_PORT_s3
if pbs_ha_wait_ready 20 "$S1" "$S2" "$S3"; then
	pbs_ok "three sentinels see each other and the replica; CKQUORUM OK"
else
	pbs_fail "sentinels not ready"
	for s in s1 s2 s3; do tail -n 20 "$PBS_TMP/sentinel-$s/sentinel.log" | sed "s/^/# $s: /"; done
	pbs_done
fi
ms
echo "# servers: master a :$A, replica b :$B, sentinels :$S1 :$S2 :$S3 (ready $(rel "$MS"))"
pbs_check_eq "the sentinels name node a as the master" "$A" "$(pbs_ha_master_port "$S1")"

# ---- popbsmtp's configs: all through the sentinels ----
GROUP=$(pbs_ha_conf_group "$S1" "$S2" "$S3")
SOCK=$PBS_TMP/milter.sock
write_conf() { # FILE USER PASS [extra groups]
	local f=$1 u=$2 pw=$3
	shift 3
	{
		printf 'redis: { %s username = "%s"; password = "%s"; timeout_ms = %d; };\n' \
			"$GROUP" "$u" "$pw" "$TIMEOUT_MS"
		printf 'lease: { ttl = 600; };\n'
		# Limits off: failover is about every relay's answer, ACCEPT at once (limits on
		# is integration.policy's and e2e.limits', the same ACL line).
		printf 'limits: { user_recipients_per_hour = 0; lease_recipients_per_hour = 0; };\n'
		for g in "$@"; do printf '%s\n' "$g"; done
	} >"$f"
	chmod 600 "$f"
}
CONF_HOOK=$PBS_TMP/hook.conf
CONF_MILTER=$PBS_TMP/milter.conf
CONF_ADMIN=$PBS_TMP/admin.conf # the default user: popbsmtpctl, and the hook without ACLs
CONF_HOOK_AS_MILTER=$PBS_TMP/hook-as-milter.conf
write_conf "$CONF_HOOK" hook "$HOOK_PASS"
write_conf "$CONF_MILTER" milter "$MILTER_PASS" "$(pbs_milter_conf_group "$SOCK")"
write_conf "$CONF_ADMIN" "" ""
write_conf "$CONF_HOOK_AS_MILTER" milter "$MILTER_PASS"
PBS_CONF=$CONF_ADMIN
for f in "$CONF_HOOK" "$CONF_MILTER" "$CONF_ADMIN"; do
	out=$("$MILTER" -t -c "$f" 2>&1)
	pbs_check_eq "config check of $(basename "$f") (sentinel group, ACL user)" 0 $?
done
pbs_check_nomatch "no config check output shows a password" "$HOOK_PASS|$MILTER_PASS" \
	"$("$MILTER" -t -c "$CONF_MILTER" 2>&1; "$HOOK" -t -c "$CONF_HOOK" 2>&1)"

pbs_start_milter "$CONF_MILTER" || { pbs_fail "the milter did not start"; pbs_done; }
for i in $(seq 1 100); do grep -q 'serving on' "$MILTER_LOG" && break; sleep 0.05; done
pbs_check_match "milter serving" 'serving on' "$(cat "$MILTER_LOG")"
pbs_check_nomatch "milter reached Redis through the sentinels at start" 'not reachable at start' \
	"$(cat "$MILTER_LOG")"

# =====================================================================================
# Before any failover: ACLs and the basic decisions.
# =====================================================================================
pbs_check_match "ACL: the milter user cannot write a lease" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" milter "$MILTER_PASS" SET popbsmtp:lease:192.0.2.1 '1|1|imap|mallory')"
pbs_check_match "ACL: the milter user cannot delete a lease" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" milter "$MILTER_PASS" DEL popbsmtp:lease:127.0.0.2)"
pbs_check_match "ACL: the milter user cannot read outside popbsmtp:lease:*" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" milter "$MILTER_PASS" GET other:key)"
pbs_check_match "ACL: the milter user cannot list keys" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" milter "$MILTER_PASS" KEYS '*')"
pbs_check_eq "ACL: the milter user can read a lease" "" \
	"$(ucli "$A" milter "$MILTER_PASS" GET popbsmtp:lease:192.0.2.1)"
pbs_check_match "ACL: the hook user cannot read a lease" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" hook "$HOOK_PASS" GET popbsmtp:lease:192.0.2.1)"
pbs_check_match "ACL: the hook user cannot delete" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" hook "$HOOK_PASS" DEL popbsmtp:lease:192.0.2.1)"
pbs_check_match "ACL: the hook user cannot write outside popbsmtp:*" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" hook "$HOOK_PASS" SET other:key x)"
pbs_check_match "ACL: the hook user cannot write outside popbsmtp:lease:*" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" hook "$HOOK_PASS" SET popbsmtp:user:mallory x)"
pbs_check_match "ACL: the hook user cannot FLUSHALL" '^(\(error\) )?NOPERM' \
	"$(ucli "$A" hook "$HOOK_PASS" FLUSHALL)"
pbs_check_match "ACL: the replica has the same users" '^user milter on .*%R~popbsmtp:lease:\*' \
	"$(rcli "$B" ACL LIST | grep '^user milter')"

login 127.0.0.2 alice
pbs_check_eq "hook (ACL user hook) grants 127.0.0.2 through the sentinels" granted "$LOGIN"
relay 127.0.0.2 leased
pbs_check_eq "milter (ACL user milter): leased 127.0.0.2 may relay" accept "$ANSWER"
relay 127.0.1.1 unleased
pbs_check_eq "milter: unleased 127.0.1.1 gets 550" 550 "$ANSWER"
login 127.0.0.3 bob "$CONF_ADMIN"
pbs_check_eq "hook without ACL user (default) grants too" granted "$LOGIN"
relay 127.0.0.3 check
pbs_check_eq "milter honours that lease" accept "$ANSWER"
login 127.0.0.4 mallory "$CONF_HOOK_AS_MILTER"
pbs_check_eq "hook run with the milter's credentials: no lease, login continues" failed "$LOGIN"
pbs_check_match "… and the hook says NOPERM" 'no lease granted: .*NOPERM' "$LOGIN_MSG"
relay 127.0.0.4 unleased
pbs_check_eq "… so 127.0.0.4 gets 550" 550 "$ANSWER"
out=$(pbs_ctl stats 2>&1)
pbs_check_eq "popbsmtpctl stats through the sentinels: exit 0" 0 $?
pbs_check_match "popbsmtpctl stats counts the leases" '^leases: +2$' "$out"
echo "$out" | sed 's/^/# stats: /'
# The lease of 127.0.0.2 is on the replica before the master dies (the asynchronous
# replication window is not under test for it: it is the "leased" reference).
pbs_check_eq "WAIT: the replica acknowledged the leases" 1 "$(rcli "$A" WAIT 1 5000)"

# =====================================================================================
# Failover: kill -9 the master under a steady stream.
# =====================================================================================
start_loops
sleep 2
# T_KILL is taken when kill(2) has returned: from then on the master is gone (taking it
# before would count answers a still gave as answers "after the kill").
pbs_ha_kill_node a
ms
T_KILL=$MS
event "kill -9 of master a" "$T_KILL"
T_SWITCHED=""
while :; do
	ms
	if [ "$(pbs_ha_master_port "$S1")" = "$B" ]; then T_SWITCHED=$MS; break; fi
	[ $((MS - T_KILL)) -gt "$RECOVERY_BOUND_MS" ] && break
	sleep 0.1
done
if [ -n "$T_SWITCHED" ]; then
	pbs_ok "the sentinels promoted b ($((T_SWITCHED - T_KILL)) ms after the kill)"
	event "sentinel s1 names b" "$T_SWITCHED"
else
	pbs_fail "no failover within ${RECOVERY_BOUND_MS} ms"
fi
wait_recovery "$T_KILL"
sleep 2 # a steady stream on the new master

# ---- the old master comes back, as a replica: READONLY to writes ----
ms
T_RESTART=$MS
pbs_ha_restart_node a --replicaof 127.0.0.1 "$B" || pbs_fail "node a did not restart"
event "node a restarted as a replica of b" "$T_RESTART"
pbs_check_match "restarted a answers READONLY to writes" '^READONLY' \
	"$(rcli "$A" SET popbsmtp:lease:192.0.2.9 '1|1|imap|x')"
pbs_check_match "restarted a kept its ACL users (config file)" '^user hook on ' \
	"$(rcli "$A" ACL LIST | grep '^user hook')"
# A hook that talks to a directly (no sentinel) is refused and says why; the login goes on.
CONF_DIRECT=$PBS_TMP/direct-a.conf
printf 'redis: { host = "127.0.0.1"; port = %s; username = "hook"; password = "%s"; timeout_ms = %d; };\nlease: { ttl = 600; };\n' \
	"$A" "$HOOK_PASS" "$TIMEOUT_MS" >"$CONF_DIRECT"
chmod 600 "$CONF_DIRECT"
login 127.0.0.5 carol "$CONF_DIRECT"
pbs_check_eq "hook pointed straight at the replica: no lease, login continues" failed "$LOGIN"
pbs_check_match "… and it says READONLY" 'no lease granted: .*READONLY' "$LOGIN_MSG"
if pbs_ha_wait_link_up "$A" 20; then pbs_ok "restarted a is in sync with b"; else pbs_fail "a not in sync"; fi
sleep 1

# Leases granted after the kill (on b) must all be honoured.
probe_all "leases granted after the kill" "\$1 >= $T_KILL"
ms
T_PHASE1_END=$MS

# =====================================================================================
# Switchover back to a (SENTINEL FAILOVER): the demoted master b stays up.
# =====================================================================================
# Refused with NOGOODSLAVE until the sentinels have seen a in sync (INFO every second).
T_SW=""
tries=0
while :; do
	r=$(rcli "$S1" SENTINEL FAILOVER "$PBS_HA_MASTER")
	ms
	tries=$((tries + 1))
	if [ "$r" = OK ]; then T_SW=$MS; break; fi
	[ $((MS - T_PHASE1_END)) -gt 30000 ] && break
	sleep 0.3
done
if [ -n "$T_SW" ]; then
	pbs_ok "SENTINEL FAILOVER accepted"
	event "SENTINEL FAILOVER (to a) accepted (attempt $tries)" "$T_SW"
else
	pbs_fail "SENTINEL FAILOVER refused: $r"
	T_SW=$MS
fi
T_SW_DONE=""
while :; do
	ms
	if [ "$(pbs_ha_master_port "$S1")" = "$A" ] && [ "$(pbs_ha_master_port "$S2")" = "$A" ] &&
		[ "$(pbs_ha_master_port "$S3")" = "$A" ] && [ "$(pbs_ha_role "$A")" = master ]; then
		T_SW_DONE=$MS
		break
	fi
	[ $((MS - T_SW)) -gt "$RECOVERY_BOUND_MS" ] && break
	sleep 0.1
done
if [ -n "$T_SW_DONE" ]; then
	pbs_ok "every sentinel names a again ($((T_SW_DONE - T_SW)) ms after SENTINEL FAILOVER)"
	event "all sentinels name a, a is master" "$T_SW_DONE"
else
	pbs_fail "switchover not complete within ${RECOVERY_BOUND_MS} ms"
	T_SW_DONE=$MS
fi
# The old master b is reconfigured as a replica by the sentinels (their CLIENT KILL then
# drops every connection to it).
T_B_DEMOTED=""
while :; do
	ms
	if [ "$(pbs_ha_role "$B")" = slave ]; then T_B_DEMOTED=$MS; break; fi
	[ $((MS - T_SW)) -gt "$RECOVERY_BOUND_MS" ] && break
	sleep 0.1
done
if [ -n "$T_B_DEMOTED" ]; then
	pbs_ok "b demoted to a replica ($((T_B_DEMOTED - T_SW)) ms after SENTINEL FAILOVER)"
	event "b reports role slave" "$T_B_DEMOTED"
else
	pbs_fail "b still a master ${RECOVERY_BOUND_MS} ms after the switchover"
	T_B_DEMOTED=$MS
fi
wait_recovery "$T_SW"
sleep 2
stop_loops
ms
T_END_LOOPS=$MS

# =====================================================================================
# What the answer logs show.
# =====================================================================================
total=$(wc -l <"$ANSWERS")
logins=$(wc -l <"$LOGINS")
echo "# $total relay attempts and $logins hook runs logged"
unleased_open=$(awk '$3 == "unleased" && ($5 == "continue" || $5 == "accept")' "$ANSWERS")
pbs_check_eq "never-leased addresses: not one continue or accept, at any moment" "" "$unleased_open"
[ -n "$unleased_open" ] && printf '%s\n' "$unleased_open" | head -n 20 | sed 's/^/# OPEN RELAY: /'
# An allowed relay is accepted for the whole message; CONTINUE would only come from
# on_store_error = accept, which this test does not set.
pbs_check_eq "no relay attempt ever got CONTINUE" 0 "$(awk '$5 == "continue"' "$ANSWERS" | wc -l)"
n_unleased_kill=$(awk -v a="$T_KILL" -v b="$T_RESTART" '$3 == "unleased" && $1 >= a && $1 < b' "$ANSWERS" | wc -l)
n_unleased_restart=$(awk -v a="$T_RESTART" -v b="$T_SW" '$3 == "unleased" && $1 >= a && $1 < b' "$ANSWERS" | wc -l)
n_unleased_sw=$(awk -v a="$T_SW" '$3 == "unleased" && $1 >= a' "$ANSWERS" | wc -l)
pbs_check_eq "never-leased attempts ran through the failover, the restart and the switchover" yes \
	"$([ "$n_unleased_kill" -ge 5 ] && [ "$n_unleased_restart" -ge 5 ] && [ "$n_unleased_sw" -ge 5 ] && echo yes || echo "no ($n_unleased_kill/$n_unleased_restart/$n_unleased_sw)")"
pbs_check_eq "the leased address (replicated before the kill) never got 550" "" \
	"$(awk '$3 == "leased" && $5 == "550"' "$ANSWERS" | head -n 5)"
others=$(awk '$5 ~ /^other/' "$ANSWERS")
pbs_check_eq "every relay attempt got an answer (no hang, no dropped session)" "" "$others"
[ -n "$others" ] && printf '%s\n' "$others" | head -n 10 | sed 's/^/# /'
pbs_check_eq "every login continued (the hook never broke one)" "" \
	"$(awk '$4 == "broken"' "$LOGINS" | head -n 5)"
max_hook=$(awk '{ d = $2 - $1; if (d > m) m = d } END { print m + 0 }' "$LOGINS")
pbs_check_le "no hook run held its login longer than 2 x timeout_ms + 2 s (ms)" "$HOOK_BOUND_MS" "$max_hook"
max_milter=$(awk '{ d = $2 - $1; if (d > m) m = d } END { print m + 0 }' "$ANSWERS")
pbs_check_le "no milter session took longer than 5 s (ms)" 5000 "$max_milter"
if kill -0 "$MILTER_PID" 2>/dev/null; then pbs_ok "the milter ran throughout (same process, no restart)"
else pbs_fail "the milter died"; fi
pbs_check_eq "the milter started once" 1 "$(grep -c 'serving on' "$MILTER_LOG")"

# The failover gap: last good answer before the kill, first good answer after it.
report_gap "failover (kill -9 of the master)" "$T_KILL"
FO_MILTER=$GAP_MILTER FO_HOOK=$GAP_HOOK
report_gap "switchover (SENTINEL FAILOVER)" "$T_SW"
SW_MILTER=$GAP_MILTER SW_HOOK=$GAP_HOOK
for kind in leased unleased fresh; do
	awk -v k="$kind" -v t="$T_KILL" -v r="$T_RESTART" '$3 == k && $1 >= t && $1 < r { n[$5]++ }
		END { printf "# after the kill, %s: ", k; for (a in n) printf "%s=%d ", a, n[a]; print "" }' "$ANSWERS"
done
awk -v t="$T_KILL" -v r="$T_RESTART" '$1 >= t && $1 < r { n[$4]++ } END { printf "# after the kill, hook: "; for (a in n) printf "%s=%d ", a, n[a]; print "" }' "$LOGINS"
echo "# hook messages after the kill: $(awk -v t="$T_KILL" -v r="$T_RESTART" '$1 >= t && $1 < r && $4 != "granted" { $1 = $2 = $3 = $4 = ""; print }' "$LOGINS" |
	sed -E 's/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(:[0-9]+)?/ADDR/g; s/user[0-9]+/USER/g; s/ +/ /g' | sort | uniq -c | sort -rn | head -n 4 | tr '\n' ';')"

echo "# hook messages during the switchover: $(awk -v t="$T_SW" -v r="$T_SW_DONE" '$1 >= t && $1 < r + 1000 && $4 != "granted" { $1 = $2 = $3 = $4 = ""; print }' "$LOGINS" |
	sed -E 's/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(:[0-9]+)?/ADDR/g; s/user[0-9]+/USER/g; s/ +/ /g' | sort | uniq -c | sort -rn | head -n 4 | tr '\n' ';')"

# Leases written before the kill that the promotion lost (the asynchronous replication
# window: expected to be few or none; those users would have to log in again).
lost=0 before=0
for ip in $(awk -v t="$T_KILL" '$4 == "granted" && $2 < t && $3 ~ /^127\.1\./ { print $3 }' "$LOGINS"); do
	before=$((before + 1))
	[ "$(rcli "$A" EXISTS "popbsmtp:lease:$ip")" = 1 ] || lost=$((lost + 1))
done
echo "# leases granted before the kill: $before, lost in the failover: $lost"
LOST_FO=$lost

# Stale reads after the switchover. The demoted master b stays a master (ROLE says so)
# until the sentinels reconfigure it, about 10 s later (+convert-to-slave); only then does
# their CLIENT KILL drop the milter's pooled connections to b. Until then the milter reads
# b, which never sees a lease granted on a: such a client is refused with 550 5.7.1 (fails
# closed, but a hard reject). The store re-asks a sentinel about once a second while its
# connections live (SENTINEL_RECHECK_MS), so the window must stay short.
STALE_BOUND_MS=${PBS_HA_STALE_BOUND_MS:-3000}
stale=$(awk -v d="$T_SW_DONE" 'NR == FNR { if ($4 == "granted" && $1 >= d) g[$3] = 1; next }
	$3 == "fresh" && ($4 in g) && $5 == "550" { n++; if (!f) f = $2; l = $2 }
	END { printf "%d %.0f %.0f", n, f, l }' "$LOGINS" "$ANSWERS")
read -r stale_n stale_first stale_last <<<"$stale"
fresh_ok=$(awk -v d="$T_SW_DONE" 'NR == FNR { if ($4 == "granted" && $1 >= d) g[$3] = 1; next }
	$3 == "fresh" && ($4 in g) && $5 == "accept" { n++ } END { print n + 0 }' "$LOGINS" "$ANSWERS")
if [ "$stale_n" -gt 0 ]; then
	STALE_MS=$((stale_last - T_SW_DONE))
	echo "# STALE READS: after the switchover the milter refused (550) $stale_n relay attempts of clients leased on the new master a, from $(rel "$stale_first") to $(rel "$stale_last") ($STALE_MS ms after every sentinel named a; b was demoted $((T_B_DEMOTED - T_SW_DONE)) ms after): it still read from b"
else
	STALE_MS=0
fi
echo "# after the switchover: $fresh_ok relay attempts of freshly leased clients accepted"
pbs_check_le "after the switchover: leases granted on the new master refused by the milter for at most ${STALE_BOUND_MS} ms (stale reads from the demoted master)" \
	"$STALE_BOUND_MS" "$STALE_MS"

# Leases granted after the switchover completed, and those granted between the kill and
# the switchover, are all honoured now.
# A grant in the first moments after the sentinels agree can still race the demotion of
# the old master (asynchronous replication: lost, and so refused - fail closed, counted in
# leases_lost). Once the switchover has settled for 2 s, every lease must work.
probe_all "leases granted 2 s after the switchover completed" "\$1 >= $((T_SW_DONE + 2000))"
# (Those granted in the last 500 ms before SENTINEL FAILOVER are in the replication window.)
probe_all "leases granted between the kill and the switchover" "\$1 >= $T_KILL && \$2 < $((T_SW - 500))"
# Leases granted while the switchover ran: the sentinels go on naming b for about a second
# after a was promoted (until +switch-master), so what the hook writes to b then is lost
# when b resyncs from a. Expected (those users log in again); counted, not asserted.
lost=0 during=0
for ip in $(awk -v a=$((T_SW - 500)) -v b="$T_SW_DONE" '$4 == "granted" && $2 >= a && $1 < b { print $3 }' "$LOGINS"); do
	during=$((during + 1))
	[ "$(rcli "$A" EXISTS "popbsmtp:lease:$ip")" = 1 ] || lost=$((lost + 1))
done
echo "# leases granted during the switchover: $during, lost: $lost"
LOST_SW=$lost
pbs_check_eq "the unleased and the leased reference after all that" "550 accept" \
	"$(relay 127.0.1.7 unleased; a=$ANSWER; relay 127.0.0.2 leased; echo "$a $ANSWER")"

if [ "$PBS_FAILS" -gt 0 ]; then
	echo "# --- milter log (tail) ---"
	tail -n 40 "$MILTER_LOG" | sed 's/^/# /'
	for s in s1 s2 s3; do grep -E 'sdown|odown|switch-master|failover|convert' "$PBS_TMP/sentinel-$s/sentinel.log" | tail -n 15 | sed "s/^/# $s: /"; done
fi
echo "# milter log: $(grep -c 'lease lookup for .* failed' "$MILTER_LOG") failed lookups; reasons: $(grep -o 'lease lookup for [^ ]* failed: .*' "$MILTER_LOG" |
	sed -E 's/lease lookup for [^ ]* failed: //; s/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+/ADDR/g; s/last: .*/last: …)/' | sort | uniq -c | sort -rn | head -n 4 | tr '\n' ';')"
FO_MAX=$((FO_MILTER > FO_HOOK ? FO_MILTER : FO_HOOK))
SW_MAX=$((SW_MILTER > SW_HOOK ? SW_MILTER : SW_HOOK))
echo "failover_gap_ms=$FO_MAX (milter $FO_MILTER, hook $FO_HOOK; kill -9 of the master, down-after 1000 ms)"
echo "switchover_gap_ms=$SW_MAX (milter $SW_MILTER, hook $SW_HOOK; SENTINEL FAILOVER)"
echo "stale_read_after_switchover_ms=$STALE_MS"
echo "leases_lost=$LOST_FO (failover), $LOST_SW (switchover)"
ms
echo "# run time $(((MS - T_START) / 1000)) s"
pbs_done
