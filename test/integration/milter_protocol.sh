#!/bin/bash
# milter_protocol.sh BUILD_DIR — the real popbsmtp-milter driven over the milter protocol
# by bench/milter-probe, against a private redis-server this test starts on loopback.
# Asserts the answers the milter gives (and its log lines) for leases, IPv6 prefixes,
# AUTH, trusted clients, both MTAs' mailer names, Redis down / restarted / black-holed,
# hostile input, reload, stop and the config check.
#
# Environment:
#   PBS_MILTER_WRAPPER  command prefix for every popbsmtp-milter run, e.g.
#                       "valgrind --error-exitcode=99 --leak-check=full"; the time bounds
#                       are then relaxed (PBS_SLOW, default 3 with a wrapper, else 1), and
#                       each instance must still exit 0 on SIGTERM (99 = valgrind errors).
#                       Valgrind's report lands in each instance's log; memory errors and
#                       definite leaks are also checked by name.
#   PBS_KEEP_TMP=1      keep the temp dir (logs of every instance, every probe output).
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/milter.sh"
pbs_build_dir_arg "$@"
MILTER=$PBS_BIN/milter/popbsmtp-milter
PROBE=$PBS_BIN/bench/milter-probe
for exe in "$MILTER" "$PROBE" "$PBS_BIN/ctl/popbsmtpctl"; do
	[ -x "$exe" ] || { echo "missing $exe (build first)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

# shellcheck disable=SC2206
WRAP=(${PBS_MILTER_WRAPPER:-})
if [ ${#WRAP[@]} -gt 0 ]; then SLOW=${PBS_SLOW:-3}; else SLOW=${PBS_SLOW:-1}; fi
PROBE_TIMEOUT=$((5000 * SLOW))
[ ${#WRAP[@]} -gt 0 ] && echo "# popbsmtp-milter runs under: ${WRAP[*]} (time bounds x$SLOW)"

PF=("macro:connect:v=Postfix 3.7.11")   # what Postfix 3.7 sends at CONNECT
SM=("macro:connect:v=8.17.1.9")         # what Sendmail sends when v is in its macros
SMTP=("macro:rcpt:{rcpt_mailer}=smtp")
LOCAL=("macro:rcpt:{rcpt_mailer}=local")
FAR='<far@far.example>'
HOME_RCPT='<me@here.example>'
SESSIONS=$PBS_TMP/sessions.txt          # every probe output, for the global checks
: >"$SESSIONS"

# deny RCPT / defer RCPT — the answers milter-probe prints for a refused / deferred relay.
deny() { printf 'replycode 550 5.7.1 %s: Relay access denied' "$1"; }
# Sendmail puts "<rcpt>... " in front of a milter's 5xx itself, so the milter leaves it out.
deny_sendmail() { printf 'replycode 550 5.7.1 Relay access denied'; }
defer() {
	printf 'replycode 451 4.3.0 %s: Relay authorization temporarily unavailable, try again later' "$1"
}

# ---- milter instances: each has its own config, socket and log ----

# milter_group SOCKET EXTRA_TRUSTED EXTRA — a milter{} group for these tests.
milter_group() {
	printf 'milter: { socket = "unix:%s"; socket_mode = "0600"; user = ""; trusted = [ "127.0.0.1/32", "::1/128"%s ]; %s };' \
		"$1" "$2" "$3"
}

# start_instance NAME CONF SOCKET — popbsmtp-milter -f (under the wrapper) in the background.
# Not pbs_start_milter: that one disowns the process, and the exit status matters here.
# Sets MILTER_PID, MILTER_SOCKET, MILTER_LOG and PID_<NAME>, SOCK_<NAME>, LOG_<NAME>.
start_instance() {
	local name=$1 conf=$2 sock=$3 log=$PBS_TMP/milter-$1.log i=0
	"${WRAP[@]}" "$MILTER" -f -c "$conf" >>"$log" 2>&1 &
	MILTER_PID=$!
	pbs_track_pid "$MILTER_PID"
	MILTER_SOCKET=$sock
	MILTER_LOG=$log
	eval "PID_$name=$MILTER_PID SOCK_$name=\$sock LOG_$name=\$log"
	# "serving on" is logged after the socket is open and the Redis check is done.
	while ! grep -q 'serving on' "$log" 2>/dev/null; do
		if ! kill -0 "$MILTER_PID" 2>/dev/null || [ $i -ge $((100 * SLOW)) ]; then
			echo "milter $name did not start:" >&2
			cat "$log" >&2
			return 1
		fi
		sleep 0.05
		i=$((i + 1))
	done
}

# use_instance NAME — point session/log helpers at instance NAME.
use_instance() {
	eval "MILTER_PID=\$PID_$1 MILTER_SOCKET=\$SOCK_$1 MILTER_LOG=\$LOG_$1"
}

# stop_instances NAME… — SIGTERM them all at once; check each exits 0 within the bound.
stop_instances() {
	local name pid t0 rc limit=$((7000 * SLOW))
	t0=$(pbs_now_ms)
	for name in "$@"; do eval "kill -TERM \$PID_$name"; done
	for name in "$@"; do
		eval "pid=\$PID_$name"
		while kill -0 "$pid" 2>/dev/null && [ $(($(pbs_now_ms) - t0)) -lt $((limit + 3000)) ]; do
			sleep 0.05
		done
		if kill -0 "$pid" 2>/dev/null; then
			pbs_fail "$name: still running $(($(pbs_now_ms) - t0)) ms after SIGTERM"
			kill -KILL "$pid" 2>/dev/null
			wait "$pid" 2>/dev/null
			continue
		fi
		wait "$pid"
		rc=$?
		pbs_check_le "$name: gone within the bound after SIGTERM" "$limit" $(($(pbs_now_ms) - t0))
		pbs_check_eq "$name: exit status after SIGTERM (99 = valgrind found errors)" 0 "$rc"
		eval "LOG=\$LOG_$name"
		if grep -q 'ERROR SUMMARY' "$LOG"; then
			pbs_check_eq "$name: valgrind saw no invalid access, uninitialised value or definite leak" 0 \
				"$(grep -cE 'Invalid (read|write|free)|uninitialised|Conditional jump|Mismatched free|(definitely|indirectly) lost: [1-9]' "$LOG")"
		fi
		if [ "$rc" != 0 ] || grep -q 'ERROR SUMMARY: [1-9]' "$LOG"; then
			echo "# --- $name log (tail) ---"
			tail -n 60 "$LOG" | sed 's/^/# /'
		fi
	done
}

# ---- sessions ----

# escape TEXT — TEXT as milter-probe echoes it (control bytes as \xNN, \ as \\), in ESC.
escape() {
	local s=$1 c i
	ESC=$s
	[[ $s == *[[:cntrl:]\\]* ]] || return 0
	ESC=""
	for ((i = 0; i < ${#s}; i++)); do
		c=${s:i:1}
		# shellcheck disable=SC1003
		case $c in
		\\) ESC+='\\' ;;
		[[:cntrl:]]) printf -v c '\\x%02x' "'$c"; ESC+=$c ;;
		*) ESC+=$c ;;
		esac
	done
}

# session STEP… — one milter session on MILTER_SOCKET. Sets OUT (the probe's stdout), RC
# (its exit status), MS (wall time) and ANS: the answer to each connect/helo/mail/rcpt step.
session() {
	local steps=() line i=0 t0 step
	for step in "$@"; do
		case $step in connect:* | helo:* | mail:* | rcpt:*) steps+=("$step") ;; esac
	done
	t0=$(pbs_now_ms)
	OUT=$("$PROBE" -t "$PROBE_TIMEOUT" "unix:$MILTER_SOCKET" "$@" 2>"$PBS_TMP/probe.err")
	RC=$?
	MS=$(($(pbs_now_ms) - t0))
	printf '%s\n' "$OUT" >>"$SESSIONS"
	ANS=()
	while IFS= read -r line; do
		case $line in "" | "negotiated "* | "symlist "*) continue ;; esac
		escape "${steps[i]:-}"
		if [[ $line == "$ESC "* ]]; then
			ANS+=("${line:${#ESC}+1}")
		else
			ANS+=("?unexpected line: $line")
		fi
		i=$((i + 1))
	done <<<"$OUT"
	[ $RC -eq 0 ] || ANS+=("?probe exit $RC: $(head -c 300 "$PBS_TMP/probe.err")")
}

# expect WHAT ANSWER… — the session's answers are exactly these, in order.
expect() {
	local what=$1
	shift
	local IFS='|'
	pbs_check_eq "$what" "$*" "${ANS[*]}"
}

# log_mark / log_new — the lines the current instance logged since the mark.
log_mark() { LOG_MARK=$(wc -l <"$MILTER_LOG"); }
log_new() { tail -n +$((LOG_MARK + 1)) "$MILTER_LOG"; }

# log_has WHAT TEXT — the instance logged TEXT (fixed string) since the mark.
log_has() {
	if log_new | grep -qF -- "$2"; then pbs_ok "$1"; else
		pbs_fail "$1: no log line with '$2' in: $(log_new | tail -n 5)"
	fi
}

# log_match WHAT ERE — the instance logged a line matching ERE since the mark. The reason
# words other than "lease" are matched in both spellings seen in the tree (e.g. "no lease"
# and "no-lease"), see R_* below.
log_match() {
	if log_new | grep -qE -- "$2"; then pbs_ok "$1"; else
		pbs_fail "$1: no log line matching /$2/ in: $(log_new | tail -n 5)"
	fi
}
R_NOLEASE='reason=no[- ]lease'
R_AUTH='reason=(SMTP AUTH|auth)'
R_NEVER='reason=(client in lease\.never|never-lease)'
R_STORE='reason=(lease store unavailable|store-error)'
FAR_RE='<far@far\.example>'

# gets — Redis GET calls since the last CONFIG RESETSTAT.
gets() {
	local n
	n=$(pbs_redis_cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p')
	echo "${n:-0}"
}
reset_stats() { pbs_redis_cli CONFIG RESETSTAT >/dev/null; }

# =====================================================================================
# Servers: one Redis; the main milter (Redis up, local.example local, lease.never nets),
# one pointed at a black hole, two at a dead port with on_store_error reject / accept.
# =====================================================================================
pbs_start_redis main || exit 1
pbs_start_blackhole || exit 1
DEAD_PORT=$(pbs_free_port)

PBS_CONF=$PBS_TMP/main.conf
MAIN_EXTRA="local_domains = [ \"local.example\" ]; pidfile = \"$PBS_TMP/decoy.pid\";"
main_conf() { # main_conf EXTRA_TRUSTED
	PBS_CONF_LEASE_EXTRA='never = [ "198.51.100.0/24", "2001:db8:dead::/48" ];' \
		pbs_write_config "$PBS_CONF" "$(milter_group "$PBS_TMP/main.sock" "$1" "$MAIN_EXTRA")"
}
main_conf ""
# The milter runs in the foreground without a pidfile: a file at milter.pidfile that names
# another process must survive its start and stop.
echo $$ >"$PBS_TMP/decoy.pid"

PBS_CONF_REDIS_PORT=$BLACKHOLE_PORT PBS_CONF_TIMEOUT_MS=200 \
	pbs_write_config "$PBS_TMP/blackhole.conf" "$(milter_group "$PBS_TMP/bh.sock" "" "")"
PBS_CONF_REDIS_PORT=$DEAD_PORT pbs_write_config "$PBS_TMP/reject.conf" \
	"$(milter_group "$PBS_TMP/reject.sock" "" 'on_store_error = "reject";')"
PBS_CONF_REDIS_PORT=$DEAD_PORT pbs_write_config "$PBS_TMP/accept.conf" \
	"$(milter_group "$PBS_TMP/accept.sock" "" 'on_store_error = "accept";')"

start_instance main "$PBS_CONF" "$PBS_TMP/main.sock" || exit 1
start_instance blackhole "$PBS_TMP/blackhole.conf" "$PBS_TMP/bh.sock" || exit 1
start_instance reject "$PBS_TMP/reject.conf" "$PBS_TMP/reject.sock" || exit 1
start_instance accept "$PBS_TMP/accept.conf" "$PBS_TMP/accept.sock" || exit 1
use_instance main
log_mark

# ---- negotiation ----
session "${PF[@]}" connect:192.0.2.10
pbs_check_match "negotiation: no reply only at CONNECT and MAIL (a REJECT at RCPT must never be dropped)" \
	'noreply=connect,mail$' "$OUT"
pbs_check_nomatch "negotiation: RCPT is not skipped" 'skipped=[^ ]*rcpt' "$OUT"
pbs_check_match "negotiation: HELO, DATA, headers, body, unknown skipped" \
	'skipped=helo,data,header,eoh,body,unknown ' "$OUT"
pbs_check_match "negotiation: no message changes asked for (usage.trace_header off)" \
	'^negotiated actions=0x0 ' "$OUT"

# ---- IPv4 without a lease ----
session "${PF[@]}" connect:192.0.2.10 helo:mx.client.example 'mail:<a@client.example>' \
	"${SMTP[@]}" "rcpt:$FAR"
expect "no lease: relay recipient refused 550 5.7.1" noreply skipped noreply "$(deny "$FAR")"
log_match "no lease: the refusal is logged" "relay denied: client=192\.0\.2\.10 rcpt=$FAR_RE $R_NOLEASE queue=-"
session "${PF[@]}" connect:192.0.2.10 'mail:<a@client.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "no lease: local recipient continues" noreply noreply continue
session "${PF[@]}" connect:192.0.2.10 'mail:<a@client.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT" \
	"${SMTP[@]}" "rcpt:$FAR" "${LOCAL[@]}" 'rcpt:<you@here.example>'
expect "local then relay in one transaction: continue, then 550 (never ACCEPT)" \
	noreply noreply continue "$(deny "$FAR")" continue

# ---- a lease granted with popbsmtpctl ----
pbs_ctl grant 192.0.2.10 alice >/dev/null
pbs_check_eq "popbsmtpctl grant 192.0.2.10 alice" 0 $?
log_mark
session "${PF[@]}" connect:192.0.2.10 'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR" \
	macro:rcpt:i=4XyZ1 "${SMTP[@]}" 'rcpt:<second@far.example>'
expect "lease: the first relay recipient accepts the message, the MTA asks no more" \
	noreply noreply accept not-sent
log_has "lease: the log names the client and the lease's user" \
	"relay allowed: client=192.0.2.10 rcpt=$FAR reason=lease user=alice"
session "${PF[@]}" connect:192.0.2.10 'mail:<a@client.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT" \
	macro:rcpt:i=4XyZ1 "${SMTP[@]}" 'rcpt:<second@far.example>' "${SMTP[@]}" 'rcpt:<third@far.example>'
expect "lease, local recipient first: continue (never ACCEPT), then the relay accepts" \
	noreply noreply continue accept not-sent
log_has "lease: the log carries the queue id once Postfix sends it" \
	"rcpt=<second@far.example> reason=lease user=alice lease=192.0.2.10 queue=4XyZ1"
session "${PF[@]}" connect:192.0.2.11 'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "lease of 192.0.2.10 does not cover 192.0.2.11" noreply noreply "$(deny "$FAR")"

# ---- IPv6 /64 leases and IPv4-mapped clients ----
pbs_ctl grant 2001:db8:1:2::1 carol >/dev/null
pbs_check_eq "lease for 2001:db8:1:2::1 stored for its /64" 1 \
	"$(pbs_redis_cli EXISTS 'popbsmtp:lease:2001:db8:1:2::/64')"
log_mark
session "${PF[@]}" connect:2001:db8:1:2::77 'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "IPv6: the /64 lease covers 2001:db8:1:2::77" noreply noreply accept
log_has "IPv6: logged with the lease's user" \
	"relay allowed: client=2001:db8:1:2::77 rcpt=$FAR reason=lease user=carol"
session "${PF[@]}" connect:2001:db8:1:3::1 'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "IPv6: 2001:db8:1:3::1 (next /64) refused" noreply noreply "$(deny "$FAR")"
log_mark
session "${PF[@]}" connect:::ffff:192.0.2.10 'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "IPv4-mapped ::ffff:192.0.2.10 uses the IPv4 lease" noreply noreply accept
log_has "IPv4-mapped client logged as IPv4" "relay allowed: client=192.0.2.10 rcpt=$FAR reason=lease user=alice"
session "${PF[@]}" connect:::ffff:192.0.2.11 'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "IPv4-mapped ::ffff:192.0.2.11 (no lease) refused" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" 'macro:connect:{client_addr}=IPv6:::ffff:192.0.2.10' connect:unix \
	'mail:<a@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "AF_UNIX with {client_addr}=IPv6:::ffff:192.0.2.10 uses the IPv4 lease" noreply noreply accept

# ---- SMTP AUTH ----
log_mark
session "${PF[@]}" connect:192.0.2.12 'macro:mail:{auth_authen}=bob' 'mail:<bob@client.example>' \
	"${SMTP[@]}" "rcpt:$FAR"
expect "{auth_authen} set: relay accepted without a lease" noreply noreply accept
log_match "AUTH relay is logged" "relay allowed: client=192\.0\.2\.12 rcpt=$FAR_RE $R_AUTH queue=-"
session "${PF[@]}" connect:192.0.2.12 'macro:mail:{auth_authen}=' 'mail:<bob@client.example>' \
	"${SMTP[@]}" "rcpt:$FAR"
expect "empty {auth_authen}: not authenticated, 550" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" connect:192.0.2.12 'macro:mail:{auth_authen}=bob' 'mail:<bob@client.example>' \
	"${LOCAL[@]}" "rcpt:$HOME_RCPT" "${SMTP[@]}" "rcpt:$FAR"
expect "AUTH, local recipient first: continue, then the relay accepts" noreply noreply continue accept
session "${PF[@]}" connect:192.0.2.12 'macro:mail:{auth_authen}=bob' 'mail:<bob@client.example>' \
	"${SMTP[@]}" "rcpt:$FAR" 'macro:mail:{auth_authen}=' 'mail:<b2@client.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "the next MAIL's macros replace {auth_authen}: an unauthenticated transaction is refused" \
	noreply noreply accept noreply "$(deny "$FAR")"

# ---- trusted networks ----
for a in 127.0.0.1 ::1 ::ffff:127.0.0.1; do
	session "${PF[@]}" "connect:$a" 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
	expect "trusted $a: accepted at the first recipient" noreply noreply accept
done
session "${PF[@]}" connect:127.0.0.1 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT" \
	'mail:<c@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "trusted: a local first recipient accepts too; so does each next transaction" \
	noreply noreply accept noreply accept
session "${PF[@]}" connect:127.0.0.2 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "127.0.0.2 (outside trusted 127.0.0.1/32) is an ordinary client" \
	noreply noreply "$(deny "$FAR")"

# ---- mailer names: Sendmail, Postfix, unknown MTA ----
for m in relay esmtp smtp smtp8 dsmtp; do
	session "${SM[@]}" connect:192.0.2.20 'mail:<a@b.example>' "macro:rcpt:{rcpt_mailer}=$m" "rcpt:$FAR"
	expect "Sendmail {rcpt_mailer}=$m is relay (550 without a lease)" noreply noreply "$(deny_sendmail)"
done
session "${SM[@]}" connect:192.0.2.20 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "Sendmail {rcpt_mailer}=local continues" noreply noreply continue
for m in relay local virtual lmtp error; do
	session "${PF[@]}" connect:192.0.2.20 'mail:<a@b.example>' "macro:rcpt:{rcpt_mailer}=$m" "rcpt:$FAR"
	expect "Postfix {rcpt_mailer}=$m is local (continue)" noreply noreply continue
done
session "${PF[@]}" connect:192.0.2.20 'mail:<a@b.example>' 'macro:rcpt:{rcpt_mailer}=smtp-out' "rcpt:$FAR"
expect "Postfix unknown mailer smtp-out counts as relay (550)" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" connect:192.0.2.20 'mail:<a@b.example>' "rcpt:$FAR"
expect "no {rcpt_mailer} macro at all: relay (550)" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" connect:192.0.2.20 'mail:<a@b.example>' 'macro:rcpt:{rcpt_mailer}=' "rcpt:$FAR"
expect "empty {rcpt_mailer}: relay (550)" noreply noreply "$(deny "$FAR")"
log_mark
session connect:192.0.2.21 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "unknown MTA (no v): smtp is relay (550)" noreply noreply "$(deny "$FAR")"
session connect:192.0.2.21 'mail:<a@b.example>' 'macro:rcpt:{rcpt_mailer}=relay' "rcpt:$FAR"
expect "unknown MTA (no v): relay is relay (550)" noreply noreply "$(deny "$FAR")"
session connect:192.0.2.21 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "unknown MTA (no v): local continues" noreply noreply continue
session 'macro:connect:v=Exim 4.96' connect:192.0.2.21 'mail:<a@b.example>' \
	'macro:rcpt:{rcpt_mailer}=virtual' "rcpt:$FAR"
expect "unknown MTA (v=Exim): a mailer other than local is relay (550)" noreply noreply "$(deny "$FAR")"
pbs_check_eq "the unknown MTA is logged once (per process)" 1 \
	"$(grep -c 'not recognised' "$MILTER_LOG")"

# ---- milter.local_domains ----
# The list applies to what the MTA resolved the recipient to ({rcpt_addr}), and only when the
# recipient as given and as resolved are the same plain address domain.
for r in '<u@local.example>' '<u@LOCAL.Example>' 'u@local.example'; do
	resolved=${r#<}
	session "${PF[@]}" connect:192.0.2.22 'mail:<a@b.example>' "${SMTP[@]}" \
		"macro:rcpt:{rcpt_addr}=${resolved%>}" "rcpt:$r"
	expect "local_domains: smtp recipient $r continues" noreply noreply continue
done
for r in '<u@local.example.evil.example>' '<u@sublocal.example>' '<"u@local.example"@far.example>'; do
	resolved=${r#<}
	session "${PF[@]}" connect:192.0.2.22 'mail:<a@b.example>' "${SMTP[@]}" \
		"macro:rcpt:{rcpt_addr}=${resolved%>}" "rcpt:$r"
	expect "local_domains: $r is not local (550)" noreply noreply "$(deny "$r")"
done
# Sender routes through a listed domain, with what Postfix resolves them to (issue 11).
while read -r r resolved; do
	session "${PF[@]}" connect:192.0.2.22 'mail:<a@b.example>' "${SMTP[@]}" \
		"macro:rcpt:{rcpt_addr}=$resolved" "rcpt:$r"
	expect "local_domains: sender route $r is not local (550)" noreply noreply "$(deny "${r//%/%%}")"
done <<'ROUTES'
<victim%far.example@local.example> victim@far.example
<victim%far.example@local.example> victim%far.example@local.example
<victim@far.example@local.example> victim@far.example
<"victim@far.example"@local.example> "victim@far.example"@local.example
<far.example!victim@local.example> victim@far.example
<@local.example:victim@far.example> victim@far.example
<u@local.example> u@far.example
<u@local.example.> u@local.example.
ROUTES
session "${PF[@]}" connect:192.0.2.22 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<u@local.example>'
expect "local_domains: without {rcpt_addr} the list cannot apply (550)" noreply noreply \
	"$(deny '<u@local.example>')"
session "${PF[@]}" connect:192.0.2.22 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<u@local.example>'
pbs_check_eq "a missing {rcpt_addr} is logged once (per process)" 1 \
	"$(grep -c 'sends no {rcpt_addr}' "$MILTER_LOG")"

# ---- lease.never ----
now=$(date +%s)
pbs_redis_cli SET popbsmtp:lease:198.51.100.7 "1|$now|imap|mallory" EX 600 >/dev/null
pbs_redis_cli SET popbsmtp:lease:192.0.2.77 "1|$now|imap|dave" EX 600 >/dev/null
session "${PF[@]}" connect:192.0.2.77 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "a lease written by hand with redis-cli is honoured (the format is right)" noreply noreply accept
log_mark
session "${PF[@]}" connect:198.51.100.7 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "lease.never: 550 although a valid lease is stored" noreply noreply "$(deny "$FAR")"
log_match "lease.never: the reason is logged" "relay denied: client=198\.51\.100\.7 rcpt=$FAR_RE $R_NEVER queue=-"
pbs_ctl grant 2001:db8:dead:1::5 mallory >/dev/null 2>&1
pbs_redis_cli SET 'popbsmtp:lease:2001:db8:dead:1::/64' "1|$now|imap|mallory" EX 600 >/dev/null
session "${PF[@]}" connect:2001:db8:dead:1::5 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "lease.never (IPv6 /48): 550 although a lease is stored" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" connect:198.51.100.7 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "lease.never: local recipient still continues" noreply noreply continue
pbs_redis_cli SET popbsmtp:lease:192.0.2.78 "garbage|x" EX 600 >/dev/null
session "${PF[@]}" connect:192.0.2.78 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
# No lease (550), as the gate takes any value it cannot use, not a store error (451).
pbs_check_match "a malformed lease value is refused as no lease" '^replycode 5' "${ANS[2]:-}"
log_match "a malformed lease value: logged, naming the key" \
	'lease lookup for 192\.0\.2\.78: ignored, treated as no lease: popbsmtp:lease:192\.0\.2\.78 holds no valid lease'
log_match "a malformed lease value: the refusal says no lease" "relay denied: client=192\.0\.2\.78 .*$R_NOLEASE"

# ---- at most one Redis lookup per message ----
reset_stats
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<r1@far.example>' \
	"${SMTP[@]}" 'rcpt:<r2@far.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT" "${SMTP[@]}" 'rcpt:<r3@far.example>'
expect "leased client, 3 relay recipients: the first accepts, the MTA sends no more" \
	noreply noreply accept not-sent not-sent not-sent
pbs_check_eq "leased client, 3 relay recipients: one Redis GET" 1 "$(gets)"
reset_stats
session "${PF[@]}" connect:192.0.2.11 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<r1@far.example>' \
	"${SMTP[@]}" 'rcpt:<r2@far.example>' "${SMTP[@]}" 'rcpt:<r3@far.example>'
expect "unleased client, 3 relay recipients: all 550" noreply noreply "$(deny '<r1@far.example>')" \
	"$(deny '<r2@far.example>')" "$(deny '<r3@far.example>')"
pbs_check_eq "unleased client, 3 relay recipients: one Redis GET" 1 "$(gets)"
reset_stats
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<r1@far.example>' \
	'mail:<b@b.example>' "${SMTP[@]}" 'rcpt:<r2@far.example>' \
	'mail:<c@b.example>' "${SMTP[@]}" 'rcpt:<r3@far.example>'
expect "three transactions in one connection: each accepted at its recipient" \
	noreply noreply accept noreply accept noreply accept
# MAIL starts each message afresh: its lease is asked again, so that a revoke or a
# suspension stops relay at the connection's next message.
pbs_check_eq "three transactions in one connection: one Redis GET each" 3 "$(gets)"
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<r1@far.example>' \
	"run:redis-cli -p $REDIS_PORT DEL popbsmtp:lease:192.0.2.10 >/dev/null" \
	'mail:<b@b.example>' "${SMTP[@]}" 'rcpt:<r2@far.example>'
expect "a lease removed between two messages of one connection: the next message is refused" \
	noreply noreply accept noreply "$(deny '<r2@far.example>')"
pbs_ctl grant 192.0.2.10 alice >/dev/null
reset_stats
session "${PF[@]}" connect:192.0.2.11 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT" \
	"${LOCAL[@]}" 'rcpt:<you@here.example>' "${SMTP[@]}" 'macro:rcpt:{rcpt_addr}=u@local.example' \
	'rcpt:<u@local.example>'
session "${PF[@]}" connect:192.0.2.11 'macro:mail:{auth_authen}=bob' 'mail:<a@b.example>' \
	"${SMTP[@]}" 'rcpt:<r1@far.example>' "${SMTP[@]}" 'rcpt:<r2@far.example>'
session "${PF[@]}" connect:127.0.0.1 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<r1@far.example>'
session "${PF[@]}" connect:198.51.100.7 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<r1@far.example>'
pbs_check_eq "local-only, authenticated, trusted and lease.never sessions: no Redis GET" 0 "$(gets)"

# =====================================================================================
# Hostile input: a defined decision, never a crash, never an unleased relay.
# =====================================================================================
log_mark
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:user@far.example' \
	"${LOCAL[@]}" 'rcpt:user@here.example'
expect "recipient without angle brackets: relay 550, local continue" noreply noreply \
	"$(deny 'user@far.example')" continue
long=$(printf 'A%.0s' $(seq 1 10240))
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:<$long@far.example>" \
	"${SMTP[@]}" "macro:rcpt:{rcpt_addr}=$long@local.example" "rcpt:<$long@local.example>" \
	"mail:<$long@b.example>"
pbs_check_eq "10 KB local part: MAIL seen, no reply" noreply "${ANS[1]:-}"
pbs_check_match "10 KB local part, relay: 550 with a bounded reply" \
	'^replycode 550 5\.7\.1 <A{150,300}: Relay access denied$' "${ANS[2]:-}"
pbs_check_le "10 KB local part: reply text stays short" 700 "${#ANS[2]}"
pbs_check_match "10 KB local part @local.example: longer than any address, not local (550)" \
	'^replycode 550 5\.7\.1 ' "${ANS[3]:-}"
pbs_check_eq "10 KB sender: MAIL seen, no reply" noreply "${ANS[4]:-}"
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:<a@$long.example>"
pbs_check_match "10 KB domain: relay 550" '^replycode 550 5\.7\.1 <a@A+: Relay access denied$' "${ANS[2]:-}"
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:<%n%s%x%%@far.example>'
expect "% and %n in the address: 550, every % doubled on the wire" noreply noreply \
	'replycode 550 5.7.1 <%%n%%s%%x%%%%@far.example>: Relay access denied'
log_has "% in the address is logged as is (no format expansion)" 'rcpt=<%n%s%x%%@far.example> reason='
ctl=$'<a\x01b\x7fc\x1b[31md\r\ne@far.example>'
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$ctl" \
	$'macro:rcpt:i=Q\x01%n' "${SMTP[@]}" 'rcpt:<q@far.example>'
expect "control bytes in the address: 550, shown as '?' in the reply" noreply noreply \
	'replycode 550 5.7.1 <a?b?c?[31md??e@far.example>: Relay access denied' "$(deny '<q@far.example>')"
log_has "control bytes in the address are escaped in the log" \
	'rcpt=<a\x01b\x7fc\x1b[31md\x0d\x0ae@far.example> reason='
log_has "control bytes in the queue id are escaped in the log" 'queue=Q\x01%n'
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" 'rcpt:' "${SMTP[@]}" 'rcpt:<>' \
	"${SMTP[@]}" 'rcpt:<@>' "${SMTP[@]}" 'rcpt:@' "${SMTP[@]}" 'rcpt:<a@>'
expect "empty and degenerate recipients: 550" noreply noreply "$(deny '')" "$(deny '<>')" \
	"$(deny '<@>')" "$(deny '@')" "$(deny '<a@>')"
big=$(printf 'M%.0s' $(seq 1 4096))
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "macro:rcpt:{rcpt_mailer}=$big" "rcpt:$FAR"
expect "4 KB {rcpt_mailer} value: unknown mailer, relay (550)" noreply noreply "$(deny "$FAR")"
session "macro:connect:v=Postfix $big" connect:192.0.2.30 'mail:<a@b.example>' \
	'macro:rcpt:{rcpt_mailer}=relay' "rcpt:$FAR"
expect "4 KB v value (Postfix…): Postfix rules apply" noreply noreply continue
session "${PF[@]}" connect:192.0.2.30 "macro:mail:{auth_authen}=$big" 'mail:<a@b.example>' \
	"${SMTP[@]}" "rcpt:$FAR"
expect "4 KB {auth_authen}: authenticated, accept" noreply noreply accept
session "${PF[@]}" "macro:connect:{client_addr}=$big" connect:unix 'mail:<a@b.example>' \
	"${SMTP[@]}" "rcpt:$FAR"
expect "4 KB {client_addr} with AF_UNIX: no address, 550" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" "macro:connect:${big:0:120}=x" connect:192.0.2.30 'mail:<a@b.example>' \
	"${SMTP[@]}" "rcpt:$FAR"
expect "120-byte macro name: ignored, 550" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' \
	$'macro:rcpt:{rcpt_mailer}=local\x01' "rcpt:$FAR"
expect "mailer 'local\\x01' is not 'local': relay (550)" noreply noreply "$(deny "$FAR")"
huge=$(printf 'H%.0s' $(seq 1 100000))
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "macro:rcpt:{rcpt_mailer}=$huge" "rcpt:$FAR"
pbs_check_nomatch "100 KB macro (beyond libmilter's packet limit): never continue/accept" \
	'^rcpt:[^ ]* (continue|accept)' "$OUT"
pbs_check_match "100 KB macro: the milter drops the connection or refuses (MTA then tempfails)" \
	'^(2|0:replycode [45])' "$RC:${ANS[2]:-}"
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "macro:rcpt:{rcpt_mailer}=${huge:0:60000}" "rcpt:$FAR"
expect "60 KB {rcpt_mailer} (inside the packet limit): relay (550)" noreply noreply "$(deny "$FAR")"
for z in 'IPv6:fe80::1%eth0' 'fe80::1%eth0' '[192.0.2.10' '192.0.2.10]' '999.1.1.1' \
	'IPv6:' '' '192.0.2.10 ' ' 192.0.2.10' '192.0.2.10/24' 'IPv6:IPv6:192.0.2.10'; do
	session "${PF[@]}" "macro:connect:{client_addr}=$z" connect:unix 'mail:<a@b.example>' \
		"${SMTP[@]}" "rcpt:$FAR" "${LOCAL[@]}" "rcpt:$HOME_RCPT"
	expect "AF_UNIX, {client_addr}='$z': no address, relay 550, local continue" noreply noreply \
		"$(deny "$FAR")" continue
done
session "${PF[@]}" connect:unix 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR" "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "AF_UNIX client without {client_addr}: relay 550, local continue" noreply noreply \
	"$(deny "$FAR")" continue
session "${PF[@]}" connect:unspec 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR" "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "unknown address family: relay 550, local continue" noreply noreply "$(deny "$FAR")" continue
log_has "a client without an IP address is logged as such" "client=(no IP address) rcpt=$FAR reason="
session "${PF[@]}" connect:0.0.0.0 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "client 0.0.0.0: 550" noreply noreply "$(deny "$FAR")"
session "${PF[@]}" connect::: 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "client :: : 550" noreply noreply "$(deny "$FAR")"
# Out of order and abrupt sessions: RCPT before MAIL, abort, quit right after CONNECT.
session "${PF[@]}" connect:192.0.2.31 "${SMTP[@]}" "rcpt:$FAR" 'mail:<a@b.example>' abort \
	'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
pbs_check_nomatch "abort and a new transaction: relay never continues" '^rcpt:[^ ]* (continue|accept)' "$OUT"
session "${PF[@]}" connect:192.0.2.31 quit
session "${PF[@]}" connect:192.0.2.31 "mail:<a@b.example>"
pbs_check_eq "session cut after MAIL (no QUIT handshake issue)" 0 "$RC"
# A client that connects, sends half a packet and vanishes; one that sends garbage.
/usr/bin/python3 - "$MILTER_SOCKET" <<'PY'
import socket, sys, struct
for payload in (b"\x00\x00\x00", struct.pack(">I", 0xffffffff) + b"O",
                struct.pack(">I", 5) + b"Zjunk", struct.pack(">I", 1) + b"C"):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(payload); s.close()
PY
session "${PF[@]}" connect:192.0.2.30 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "after garbage on the socket: still answering" noreply noreply "$(deny "$FAR")"
if kill -0 "$MILTER_PID" 2>/dev/null; then pbs_ok "hostile input: the milter is still alive"; else
	pbs_fail "hostile input: the milter died"
fi

# =====================================================================================
# Redis trouble on the main instance (timeout_ms 250): stopped, then restarted.
# =====================================================================================

# relay_after_restart ACCEPT_CHECK SOON_CHECK — start the main Redis again on its port and
# lease 192.0.2.10 to alice anew (the restarted Redis is empty), then run a relay session
# from 192.0.2.10 every 0.1 s until the milter accepts it (giving up after 5 s x SLOW).
# Checks ACCEPT_CHECK: the last answer is accept; SOON_CHECK: it came within 3 s x SLOW of
# the grant (ms). Sets TRIES to the number of sessions run.
relay_after_restart() {
	local t0
	pbs_restart_redis main "$REDIS_PORT" || pbs_fail "Redis did not restart"
	pbs_ctl grant 192.0.2.10 alice >/dev/null
	t0=$(pbs_now_ms)
	TRIES=0
	while :; do
		session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
		TRIES=$((TRIES + 1))
		[ "${ANS[2]:-}" = accept ] && break
		[ $(($(pbs_now_ms) - t0)) -gt $((5000 * SLOW)) ] && break
		sleep 0.1
	done
	expect "$1" noreply noreply accept
	pbs_check_le "$2" $((3000 * SLOW)) $(($(pbs_now_ms) - t0))
}

pbs_stop_redis main
bound=$((1000 * SLOW))
log_mark
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR" "${SMTP[@]}" 'rcpt:<r2@far.example>'
expect "Redis stopped: relay deferred 451 4.3.0" noreply noreply "$(defer "$FAR")" "$(defer '<r2@far.example>')"
pbs_check_le "Redis stopped: answered within the bound (ms)" "$bound" "$MS"
log_match "Redis stopped: the deferral is logged" "relay deferred: client=192\.0\.2\.10 rcpt=$FAR_RE $R_STORE queue=-"
log_has "Redis stopped: the Redis error is logged" "lease lookup for 192.0.2.10 failed"
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "Redis stopped, next session (backoff): 451" noreply noreply "$(defer "$FAR")"
pbs_check_le "Redis stopped, next session: answered within the bound (ms)" "$bound" "$MS"
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "Redis stopped: local recipient continues" noreply noreply continue
session "${PF[@]}" connect:127.0.0.1 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "Redis stopped: trusted client accepted" noreply noreply accept
session "${PF[@]}" connect:192.0.2.10 'macro:mail:{auth_authen}=bob' 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "Redis stopped: authenticated client accepted" noreply noreply accept
session "${PF[@]}" connect:198.51.100.7 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "Redis stopped: lease.never client still 550" noreply noreply "$(deny "$FAR")"
# Right after a failure (backoff running), bring Redis back on the same port.
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
relay_after_restart "Redis back: relay accepted again, milter not restarted" \
	"Redis back: relaying again soon (backoff 0.5 s; bound 3 s for a loaded host) (ms)"
# Restart Redis while the milter's pooled connection is idle: the stale connection must
# not keep relays deferred for long.
pbs_stop_redis main
relay_after_restart "Redis restarted while idle: relay accepted again" \
	"Redis restarted while idle: relaying again soon (bound 3 s for a loaded host) (ms)"
echo "# Redis restarted while idle: $((TRIES - 1)) session(s) deferred before the first relay"
pbs_check_eq "Redis restarted while idle: not one session deferred (a closed idle connection is replaced before use)" \
	1 "$TRIES"

# A reply that comes too late is never answered by sending the script again: Redis may
# have run it, and counted the recipient. Relay limits on (timeout_ms 250): a script of
# the test holds Redis for 3 s (under its 5 s busy threshold) while a relay recipient is
# asked. The milter defers it; once Redis is free, Redis 7 still runs the late script of
# the connection the milter closed (count 2), Redis 8 drops it (count 1); the previous
# pool sent it a second time on a fresh connection (count 3 on Redis 7).
PBS_CONF_LIMITS='user_recipients_per_hour = 1000; lease_recipients_per_hour = 0;' \
	pbs_write_config "$PBS_TMP/limits.conf" "$(milter_group "$PBS_TMP/limits.sock" "" "")"
start_instance limits "$PBS_TMP/limits.conf" "$PBS_TMP/limits.sock" || exit 1
pbs_ctl grant 192.0.2.12 carol >/dev/null
session "${PF[@]}" connect:192.0.2.12 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "limits on: a relay recipient by lease continues (counted, so no ACCEPT)" noreply noreply continue
pbs_redis_cli EVAL 'local function us() local t = redis.call("TIME") return t[1] * 1000000 + t[2] end
	local stop = us() + 3000000
	repeat until us() >= stop
	return 1' 0 >/dev/null &
busy=$!
# Until Redis stops answering: the script runs.
for i in $(seq 1 100); do
	timeout 0.1 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" PING >/dev/null 2>&1 || break
	sleep 0.02
done
session "${PF[@]}" connect:192.0.2.12 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "limits on, Redis busy beyond timeout_ms: deferred" noreply noreply "$(defer "$FAR")"
wait "$busy"
carol=$(pbs_redis_cli --scan --pattern 'popbsmtp:limit:user:*:carol' | head -n 1)
carol=$(pbs_redis_cli GET "$carol")
pbs_check_le "... carol's count: the first recipient and at most the late script, never a second send" \
	2 "$carol"
pbs_check_le "... and the first recipient is counted" "$carol" 1
stop_instances limits
use_instance main

# ---- Redis black-holed (timeout_ms 200) ----
use_instance blackhole
log_mark
for i in 1 2 3; do
	session "${PF[@]}" connect:192.0.2.40 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
	expect "black hole, session $i: 451" noreply noreply "$(defer "$FAR")"
	pbs_check_le "black hole, session $i: answered in < 1 s (ms)" $((1000 * SLOW)) "$MS"
	sleep 0.3
done
log_has "black hole: the timeout is logged" "timed out after 200 ms"
session "${PF[@]}" connect:192.0.2.40 'mail:<a@b.example>' "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "black hole: local continues" noreply noreply continue
pbs_check_le "black hole: local answered without waiting for Redis (ms)" $((200 * SLOW + 200)) "$MS"
session "${PF[@]}" connect:127.0.0.1 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "black hole: trusted accepted" noreply noreply accept
sleep 0.6 # past the backoff: the burst hits the black hole for real
t0=$(pbs_now_ms)
pids=()
for i in $(seq 1 20); do
	"$PROBE" -t "$PROBE_TIMEOUT" "unix:$MILTER_SOCKET" "${PF[@]}" "connect:192.0.2.$((100 + i))" \
		'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR" >"$PBS_TMP/burst.$i" 2>&1 &
	pids+=($!)
done
wait "${pids[@]}"
burst_ms=$(($(pbs_now_ms) - t0))
cat "$PBS_TMP"/burst.* >>"$SESSIONS"
pbs_check_eq "black hole, 20 concurrent sessions: every relay 451" 20 \
	"$(cat "$PBS_TMP"/burst.* | grep -c "^rcpt:$FAR $(defer "$FAR")\$")"
pbs_check_le "black hole, 20 concurrent sessions: all answered within 2 s (ms)" $((2000 * SLOW)) "$burst_ms"

# ---- on_store_error = reject / accept, Redis unreachable ----
use_instance reject
log_mark
session "${PF[@]}" connect:192.0.2.50 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR" "${LOCAL[@]}" "rcpt:$HOME_RCPT"
expect "on_store_error=reject, Redis down: relay 550, local continue" noreply noreply "$(deny "$FAR")" continue
log_match "on_store_error=reject: logged as store trouble" "relay denied: client=192\.0\.2\.50 rcpt=$FAR_RE $R_STORE queue=-"
use_instance accept
pbs_check_match "on_store_error=accept: the startup log warns of an open relay" \
	'on_store_error = accept.*open relay' "$(cat "$MILTER_LOG")"
pbs_check_match "Redis unreachable at start: warned, not fatal" 'Redis not reachable at start' "$(cat "$MILTER_LOG")"
log_mark
session "${PF[@]}" connect:192.0.2.50 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR" "${SMTP[@]}" 'rcpt:<r2@far.example>'
expect "on_store_error=accept, Redis down: relay continues (never ACCEPT)" noreply noreply continue continue
log_match "on_store_error=accept: the relay is logged" "relay allowed: client=192\.0\.2\.50 rcpt=$FAR_RE $R_STORE queue=-"

# =====================================================================================
# Reload (SIGUSR1), a broken config on reload, a second instance, the config check, stop.
# =====================================================================================
use_instance main
session "${PF[@]}" connect:192.0.2.99 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "before reload: 192.0.2.99 is an ordinary client" noreply noreply "$(deny "$FAR")"
main_conf ', "192.0.2.99/32"'
log_mark
kill -USR1 "$MILTER_PID"
for i in $(seq 1 $((100 * SLOW))); do log_new | grep -q 'configuration reloaded' && break; sleep 0.05; done
log_has "SIGUSR1: the reload is logged" "configuration reloaded from $PBS_CONF"
session "${PF[@]}" connect:192.0.2.99 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "after reload: 192.0.2.99 is trusted" noreply noreply accept
session "${PF[@]}" connect:192.0.2.10 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "after reload: the lease still works (new Redis pool)" noreply noreply accept
cp "$PBS_CONF" "$PBS_TMP/main.conf.good"
printf 'redis: { port = 6379;\n  bogus = 1; };\nlease: { ttl = -5; };\n' >"$PBS_CONF"
log_mark
kill -USR1 "$MILTER_PID"
for i in $(seq 1 $((100 * SLOW))); do log_new | grep -q 'keeping the previous' && break; sleep 0.05; done
log_has "broken config on SIGUSR1: refused, old one kept" "reload of $PBS_CONF failed; keeping the previous configuration"
log_has "broken config on SIGUSR1: FILE:LINE of the error logged" "$PBS_CONF:2: unknown setting 'redis.bogus'"
log_has "broken config on SIGUSR1: every error logged" "$PBS_CONF:3: lease.ttl"
session "${PF[@]}" connect:192.0.2.99 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "after a failed reload: the old config still applies (192.0.2.99 trusted)" noreply noreply accept
session "${PF[@]}" connect:192.0.2.11 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "after a failed reload: unleased relay still 550" noreply noreply "$(deny "$FAR")"
printf 'redis: { port = 6379 \n' >"$PBS_CONF"
kill -USR1 "$MILTER_PID"
session "${PF[@]}" connect:192.0.2.11 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "after a reload with a syntax error: still answering" noreply noreply "$(deny "$FAR")"
cp "$PBS_TMP/main.conf.good" "$PBS_CONF"

# The config check. "-t -c FILE" as the brief and usage write it, then "-c FILE -t" so the
# FILE:LINE reports are checked even if the option order matters.
out=$("${WRAP[@]}" "$MILTER" -t -c "$PBS_CONF" 2>&1)
pbs_check_eq "-t -c GOOD exits 0" 0 $?
pbs_check_match "-t -c GOOD says configuration OK for GOOD" "^$PBS_CONF: configuration OK" "$out"
BAD=$PBS_TMP/bad.conf
printf '%s\n' 'redis: { host = "127.0.0.1"; port = 70000; };' 'lease: { ttl = 60; };' \
	'milter: { trusted = [ "300.1.1.1/8" ]; bogus = 1;' '  on_store_error = "maybe"; };' >"$BAD"
out=$("${WRAP[@]}" "$MILTER" -t -c "$BAD" 2>&1)
pbs_check_eq "-t -c BAD exits 78" 78 $?
pbs_check_match "-t -c BAD reports BAD:LINE errors" "^$BAD:1: redis\\.port" "$out"
out=$("${WRAP[@]}" "$MILTER" -c "$PBS_CONF" -t 2>&1)
pbs_check_eq "-c GOOD -t exits 0" 0 $?
pbs_check_match "-c GOOD -t says configuration OK" "^$PBS_CONF: configuration OK" "$out"
out=$("${WRAP[@]}" "$MILTER" -c "$BAD" -t 2>&1)
pbs_check_eq "-c BAD -t exits 78" 78 $?
pbs_check_match "-c BAD -t: out-of-range port at line 1" "^$BAD:1: redis\\.port" "$out"
pbs_check_match "-c BAD -t: bad network at line 3" "$BAD:3: milter\\.trusted" "$out"
pbs_check_match "-c BAD -t: unknown key at line 3" "$BAD:3: unknown setting 'milter\\.bogus'" "$out"
pbs_check_match "-c BAD -t: bad enum at line 4" "$BAD:4: milter\\.on_store_error" "$out"
pbs_check_nomatch "-c BAD -t does not say OK" 'configuration OK' "$out"
printf 'redis: {\n  port = ;\n};\n' >"$BAD"
out=$("${WRAP[@]}" "$MILTER" -c "$BAD" -t 2>&1)
pbs_check_eq "-c SYNTAX-ERROR -t exits 78" 78 $?
pbs_check_match "-c SYNTAX-ERROR -t: FILE:LINE" "^$BAD:2: " "$out"
out=$("${WRAP[@]}" "$MILTER" -c "$PBS_TMP/missing.conf" -t 2>&1)
pbs_check_eq "-c MISSING -t exits 78" 78 $?
pbs_check_match "-c MISSING -t: the file named with its reason" "missing.conf: cannot read: No such file" "$out"
printf 'milter: { socket = "unix:%s"; user = ""; bogus = 1; };\n' "$PBS_TMP/never.sock" >"$BAD"
"${WRAP[@]}" "$MILTER" -f -c "$BAD" >"$PBS_TMP/badstart.log" 2>&1
pbs_check_eq "starting with a bad config exits 78" 78 $?
pbs_check_eq "starting with a bad config opens no socket" no "$([ -e "$PBS_TMP/never.sock" ] && echo yes || echo no)"
# Under systemd, stderr is the journal (JOURNAL_STREAM names its device and inode), which
# gets the syslog lines already: no copy on stderr, or the journal would show each twice.
: >"$PBS_TMP/journal.log"
JOURNAL_STREAM=$(stat -c '%d:%i' "$PBS_TMP/journal.log") "$MILTER" -f -c "$BAD" >>"$PBS_TMP/journal.log" 2>&1
pbs_check_eq "stderr is the journal: a bad config still exits 78" 78 $?
pbs_check_eq "stderr is the journal: the errors are not copied to it" 0 "$(grep -c 'bogus' "$PBS_TMP/journal.log")"
JOURNAL_STREAM=1:1 "$MILTER" -f -c "$BAD" >"$PBS_TMP/notjournal.log" 2>&1
pbs_check_match "JOURNAL_STREAM naming another file: the errors are on stderr" \
	"unknown setting 'milter\\.bogus'" "$(cat "$PBS_TMP/notjournal.log")"

# Nothing removed that should not be: a regular file at milter.socket is left alone …
echo precious >"$PBS_TMP/precious"
PBS_CONF_REDIS_PORT=$DEAD_PORT pbs_write_config "$PBS_TMP/precious.conf" \
	"$(milter_group "$PBS_TMP/precious" "" "")"
timeout $((10 * SLOW)) "${WRAP[@]}" "$MILTER" -f -c "$PBS_TMP/precious.conf" >"$PBS_TMP/precious.log" 2>&1
pbs_check_eq "milter.socket naming a regular file: start refused (71)" 71 $?
pbs_check_eq "milter.socket naming a regular file: the file is intact" precious "$(cat "$PBS_TMP/precious")"
# … and a second instance on the socket of a running one must not cut the running one off.
sock_inode=$(stat -c %i "$MILTER_SOCKET")
# (Run plainly and killed at once: only what it does to the socket path matters here.)
"$MILTER" -f -c "$PBS_CONF" >"$PBS_TMP/second.log" 2>&1 &
second=$!
for i in $(seq 1 100); do
	grep -q 'serving on' "$PBS_TMP/second.log" && break
	kill -0 "$second" 2>/dev/null || break
	sleep 0.05
done
second_state=$(kill -0 "$second" 2>/dev/null && echo "was serving" || echo "had exited")
disown "$second" 2>/dev/null # no "Killed" message from bash
kill -KILL "$second" 2>/dev/null
while kill -0 "$second" 2>/dev/null; do sleep 0.05; done
pbs_check_eq "second instance on a socket in use: the running milter's socket is untouched" \
	"$sock_inode" "$(stat -c %i "$MILTER_SOCKET" 2>/dev/null || echo gone)"
session "${PF[@]}" connect:192.0.2.11 'mail:<a@b.example>' "${SMTP[@]}" "rcpt:$FAR"
expect "second instance started and stopped: the running milter still answers" \
	noreply noreply "$(deny "$FAR")"
echo "# the second instance $second_state when checked"

# Global: a client that is never trusted, leased or authenticated in this test never got
# ACCEPT (it would wave the message's later recipients through), in any session above.
UNENTITLED=' 127.0.0.2 192.0.2.20 192.0.2.21 192.0.2.22 192.0.2.31 192.0.2.40 192.0.2.50 192.0.2.78
 198.51.100.7 2001:db8:dead:1::5 2001:db8:1:3::1 ::ffff:192.0.2.11 0.0.0.0 :: unspec '
for i in $(seq 101 120); do UNENTITLED+="192.0.2.$i "; done
read -r unentitled_sessions unentitled_accepts < <(awk -v list="$UNENTITLED" '
	BEGIN { n = split(list, a, " "); for (i = 1; i <= n; i++) bad[a[i]] = 1 }
	/^connect:/ { addr = substr($1, 9); watched = (addr in bad); sessions += watched }
	watched && /^rcpt:.* accept$/ { accepts++ }
	END { print sessions + 0, accepts + 0 }' "$SESSIONS")
pbs_check_eq "unentitled clients never got ACCEPT" 0 "$unentitled_accepts"
pbs_check_eq "the ACCEPT check above saw more than 50 sessions of such clients" yes \
	"$([ "$unentitled_sessions" -gt 50 ] && echo yes || echo no)"

# Every instance is alive, its log holds no raw control byte and no overlong line.
for name in main blackhole reject accept; do
	use_instance "$name"
	if kill -0 "$MILTER_PID" 2>/dev/null; then pbs_ok "$name: still running"; else pbs_fail "$name: died"; fi
	pbs_check_eq "$name: no raw control bytes in the log" 0 \
		"$(grep -c $'[\x01-\x08\x0b-\x1f\x7f]' "$MILTER_LOG")"
	pbs_check_le "$name: longest log line" 1100 "$(awk '{ if (length($0) > m) m = length($0) } END { print m + 0 }' "$MILTER_LOG")"
done

# SIGTERM: every instance exits 0 within a few seconds; nothing removed that should not be.
stop_instances main blackhole reject accept
pbs_check_eq "after stop: the file at milter.pidfile (not ours in -f mode) is intact" "$$" \
	"$(cat "$PBS_TMP/decoy.pid" 2>/dev/null)"
pbs_check_eq "after stop: the config file is intact" yes "$([ -s "$PBS_CONF" ] && echo yes || echo no)"
pbs_check_eq "after stop: the leases are intact" 1 "$(pbs_redis_cli EXISTS popbsmtp:lease:192.0.2.10)"
if [ ${#WRAP[@]} -gt 0 ]; then
	for name in main blackhole reject accept; do
		eval "LOG=\$LOG_$name"
		echo "# $name: $(grep -h 'ERROR SUMMARY' "$LOG" | tail -n 1)"
		grep -hE 'definitely lost:|indirectly lost:|possibly lost:' "$LOG" | sed "s/^/# $name: /"
	done
fi

pbs_done
