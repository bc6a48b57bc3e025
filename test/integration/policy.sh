#!/bin/bash
# policy.sh BUILD_DIR — the real popbsmtp-policy driven over stdin/stdout the way Postfix's
# spawn(8) drives it, against a private redis-server this test starts on loopback: leases,
# IPv6 prefixes, AUTH, lease.never, requests it must not decide, malformed and oversized
# input, EOF in a request, one GET per message (Redis INFO commandstats), Redis down,
# black-holed and back, and the options.
# With PBS_POLICY_MODE=listen (ctest integration.policy_listen) every request goes instead
# through popbsmtp-policy --listen, the daemon, on a unix socket, one connection where
# spawn(8) has one process: the same decisions, log lines and counts, tested by the same
# checks (the daemon's own life: policy_daemon.sh). The daemon runs as nobody.
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/milter.sh"
pbs_build_dir_arg "$@"
POLICY=$PBS_BIN/policy/popbsmtp-policy
for exe in "$POLICY" "$PBS_BIN/ctl/popbsmtpctl"; do
	[ -x "$exe" ] || { echo "missing $exe (build first)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

pbs_start_redis || exit 1
PBS_CONF=$PBS_TMP/popbsmtp.conf
pbs_write_config "$PBS_CONF" 'milter: { trusted = [ "127.0.0.0/8", "192.0.2.0/24" ]; };'
NEVER_CONF=$PBS_TMP/never.conf
PBS_CONF_LEASE_EXTRA='never = [ "198.51.100.0/24" ];' pbs_write_config "$NEVER_CONF"
LOG=$PBS_TMP/policy.log
: >"$LOG"

# ---- talking to one popbsmtp-policy process ----
MODE=${PBS_POLICY_MODE:-spawn}
SOCKDIR=$PBS_TMP/sock
install -d -m 0777 "$SOCKDIR"

# connect — in listen mode, a new connection to the running daemon as the coprocess.
connect() {
	coproc POL { exec python3 "$here/policy_connect.py" "$SOCKDIR/policy.sock"; }
	CONN_PID=$POL_PID
	exec {TO}>&"${POL[1]}" {FROM}<&"${POL[0]}"
	exec {POL[1]}>&- {POL[0]}<&-
}

# start_policy CONF — run popbsmtp-policy -c CONF as a coprocess, its log in LOG; TO and FROM
# are our ends of its stdin and stdout (copies: bash hides the coprocess' own fds from
# subshells and pipelines). In listen mode: the daemon with CONF, and a connection to it.
start_policy() {
	if [ "$MODE" = listen ]; then
		PBS_POLICY_DAEMON_AS=nobody pbs_start_policy_daemon "$LOG" -c "$1" \
			-l "unix:$SOCKDIR/policy.sock"
		POLICY_PID=$POLICY_DAEMON_PID
		connect
		return
	fi
	coproc POL { exec "$POLICY" -c "$1" 2>>"$LOG"; }
	POLICY_PID=$POL_PID
	exec {TO}>&"${POL[1]}" {FROM}<&"${POL[0]}"
	exec {POL[1]}>&- {POL[0]}<&-
	pbs_track_pid "$POLICY_PID"
}

# stop_policy — close its stdin (EOF, as when Postfix closes); sets STOPPED to its exit status.
# In listen mode: close the connection, then stop the daemon (SIGTERM), which writes its counts.
stop_policy() {
	exec {TO}>&- {FROM}<&-
	if [ "$MODE" = listen ]; then
		wait "$CONN_PID"
		kill -TERM "$POLICY_PID"
	fi
	wait "$POLICY_PID"
	STOPPED=$?
}

# ask NAME=VALUE… — send one request (the attributes, then the empty line) and print the
# reply's action line, or "no reply" after 5 s.
ask() {
	local a line reply="no reply"
	{ for a in "$@"; do printf '%s\n' "$a"; done; printf '\n'; } >&"$TO"
	while IFS= read -r -t 5 -u "$FROM" line; do
		[ -z "$line" ] && break
		reply=$line
	done
	echo "$reply"
}

# rcpt CLIENT INSTANCE [NAME=VALUE…] — a RCPT-stage request as Postfix sends it; NAME=VALUE
# replace the attributes of the same name.
rcpt() {
	local client=$1 instance=$2 a d out=()
	shift 2
	for d in request=smtpd_access_policy protocol_state=RCPT protocol_name=ESMTP \
		client_address="$client" client_name=unknown helo_name=client.example \
		sender=sender@client.example recipient=user@remote.example queue_id=4ABC123 \
		"instance=$instance" sasl_method= sasl_username=; do
		for a in "$@"; do [ "${a%%=*}" = "${d%%=*}" ] && continue 2; done
		out+=("$d")
	done
	ask "${out[@]}" "$@"
}

# gets — how many GET commands Redis has run since the test started.
gets() {
	pbs_redis_cli INFO commandstats | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' |
		grep . || echo 0
}

# ---- options ----
pbs_check_match "-V prints the version" '^popbsmtp-policy [0-9]' "$("$POLICY" -V)"
pbs_check_match "-h prints the usage" 'spawn\(8\)' "$("$POLICY" -h 2>&1)"
pbs_check_match "-t accepts a good file" 'configuration OK' "$("$POLICY" -t -c "$PBS_CONF" 2>&1)"
printf 'policy: { x = 1; };\nlease: { ttl = 0; };\n' >"$PBS_TMP/bad.conf"
out=$("$POLICY" -t -c "$PBS_TMP/bad.conf" 2>&1)
pbs_check_eq "-t on a bad file exits 78" 78 $?
pbs_check_match "-t names FILE:LINE of each problem" "bad.conf:2: lease.ttl" "$out"
echo 'request=smtpd_access_policy' | "$POLICY" -c "$PBS_TMP/bad.conf" >"$PBS_TMP/out" 2>>"$LOG"
pbs_check_eq "a bad config: exits 78 without answering" "78 0" "$? $(wc -c <"$PBS_TMP/out")"
out=$("$POLICY" -H -c "$PBS_CONF" 2>&1 >"$PBS_TMP/out")
pbs_check_eq "-H without usage.trace_secret: exits 78, prints nothing, says why" \
	"78 0 yes" "$? $(wc -c <"$PBS_TMP/out") $(grep -q 'trace_secret is not set' <<<"$out" && echo yes)"
SECRET=0123456789abcdefABCDEF0123456789
pbs_write_config "$PBS_TMP/secret.conf" "usage: { trace_header = \"on\"; trace_secret = \"$SECRET\"; };"
out=$("$POLICY" -H -c "$PBS_TMP/secret.conf")
pbs_check_eq "-H: a regexp table of two lines (and comments), exit 0" "0 2" \
	"$? $(grep -vc '^#' <<<"$out")"
pbs_check_eq "-H: its first line keeps the gate's header without the secret, the second deletes the rest" \
	"/^X-PopBeforeSMTP: $SECRET (.*)\$/ REPLACE X-PopBeforeSMTP: \$1|/^X-PopBeforeSMTP[[:space:]]*:/ IGNORE" \
	"$(grep -v '^#' <<<"$out" | paste -sd'|')"

# ---- decisions ----
start_policy "$PBS_CONF"
pbs_ctl grant 192.0.2.7 alice >/dev/null
pbs_check_eq "a leased client may relay" "action=OK" "$(rcpt 192.0.2.7 m1)"
pbs_check_match "the decision is logged in the milter's words, with the lease's user" \
	'relay allowed: client=192\.0\.2\.7 rcpt=<user@remote\.example> reason=lease user=alice lease=192\.0\.2\.7 queue=4ABC123' \
	"$(cat "$LOG")"
pbs_check_eq "an unleased client: DUNNO (Postfix's reject_unauth_destination refuses)" \
	"action=DUNNO" "$(rcpt 192.0.2.8 m2)"
pbs_check_match "the refusal is logged" 'relay denied: client=192\.0\.2\.8 .* reason=no-lease' \
	"$(cat "$LOG")"
pbs_check_eq "milter.trusted is not a relay permit here (Postfix's mynetworks is)" \
	"action=DUNNO" "$(rcpt 127.0.0.5 m3)"

before=$(gets)
pbs_check_eq "SMTP AUTH relays" "action=OK" "$(rcpt 192.0.2.9 m4 sasl_username=bob)"
pbs_check_match "AUTH is logged as such" 'relay allowed: client=192\.0\.2\.9 .*reason=auth' \
	"$(cat "$LOG")"
pbs_check_eq "not a RCPT-stage request: DUNNO" "action=DUNNO" \
	"$(ask request=smtpd_access_policy protocol_state=DATA client_address=192.0.2.7)"
pbs_check_eq "not an smtpd_access_policy request: DUNNO" "action=DUNNO" \
	"$(ask request=junk protocol_state=RCPT client_address=192.0.2.7)"
pbs_check_eq "no client_address: DUNNO" "action=DUNNO" \
	"$(ask request=smtpd_access_policy protocol_state=RCPT recipient=x@remote.example)"
pbs_check_match "no client_address: logged" 'bad policy request: no client_address' "$(cat "$LOG")"
pbs_check_eq "a client_address that is not IP: DUNNO" "action=DUNNO" "$(rcpt unknown m5)"
pbs_check_eq "none of these asked Redis" "$before" "$(gets)"

# one GET per message, however many recipients
before=$(gets)
ok=0
for i in $(seq 1 50); do
	[ "$(rcpt 192.0.2.7 msg50 recipient="r$i@remote.example")" = action=OK ] && ok=$((ok + 1))
done
pbs_check_eq "50 relay recipients of one message all allowed" 50 "$ok"
pbs_check_eq "... with one GET" $((before + 1)) "$(gets)"
pbs_check_eq "a new message (instance) looks up again" "action=OK" "$(rcpt 192.0.2.7 msg51)"
pbs_check_eq "... one GET more" $((before + 2)) "$(gets)"
pbs_check_eq "another client with the same instance is looked up too" "action=DUNNO" \
	"$(rcpt 192.0.2.10 msg51)"
pbs_check_eq "... one GET more" $((before + 3)) "$(gets)"

# IPv6: leases cover the client's /64
pbs_ctl grant 2001:db8:1:2::1 dave >/dev/null
pbs_check_eq "IPv6 client inside a leased /64 relays" "action=OK" "$(rcpt 2001:db8:1:2::77 v1)"
pbs_check_eq "IPv6 client outside it does not" "action=DUNNO" "$(rcpt 2001:db8:1:3::77 v2)"

# malformed input: logged, DUNNO, and the next request is read in step
pbs_check_eq "a line without '=': DUNNO" "action=DUNNO" \
	"$(ask request=smtpd_access_policy protocol_state=RCPT client_address=192.0.2.7 garbage)"
pbs_check_match "... logged" "bad policy request: a line without '=': 'garbage'" "$(cat "$LOG")"
pbs_check_eq "a repeated attribute: DUNNO, never OK" "action=DUNNO" \
	"$(rcpt 192.0.2.7 m6 sasl_username=bob sasl_username=bob)"
long=$(head -c 5000 /dev/zero | tr '\0' a)
pbs_check_eq "a line over 4096 bytes: DUNNO" "action=DUNNO" "$(rcpt 192.0.2.7 m7 "x=$long")"
pbs_check_match "... logged" 'a line longer than 4096 bytes' "$(cat "$LOG")"
many=()
for i in $(seq 1 40); do many+=("x$i=${long:0:2000}"); done
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$POLICY_PID/status"; }
if [ "$MODE" = listen ]; then
	# The daemon does not read on: the connection goes, the daemon stays.
	before=$(hwm)
	pbs_check_eq "a request over 65536 bytes: no answer, the connection is closed" "no reply" \
		"$(rcpt 192.0.2.7 m8 "${many[@]}")"
	pbs_check_match "... logged" 'bad policy request: longer than 65536 bytes; connection closed' \
		"$(cat "$LOG")"
	exec {TO}>&- {FROM}<&-
	wait "$CONN_PID"
	connect
	pbs_check_eq "... the daemon still answers a new connection" "action=DUNNO" \
		"$(rcpt 192.0.2.8 m8b)"
	{ head -c 8000000 /dev/zero | tr '\0' b >&"$TO"; } 2>/dev/null
	exec {TO}>&- {FROM}<&-
	wait "$CONN_PID"
	connect
	rss=$(hwm)
	pbs_check_le "an 8 MB line: the daemon's peak memory grew by less than 1 MB (VmHWM $before -> $rss kB)" \
		1024 "$((rss - before))"
else
	pbs_check_eq "a request over 65536 bytes: DUNNO" "action=DUNNO" "$(rcpt 192.0.2.7 m8 "${many[@]}")"
	pbs_check_match "... logged" 'a request longer than 65536 bytes' "$(cat "$LOG")"
	# 8 MB without a newline: memory stays bounded (fixed buffers), the request still ends.
	# Judged by the peak's growth, which does not depend on how the program was built (an
	# instrumented build starts bigger).
	before=$(hwm)
	head -c 8000000 /dev/zero | tr '\0' b >&"$TO"
	pbs_check_eq "an 8 MB line: DUNNO" "action=DUNNO" "$(rcpt 192.0.2.7 m9)"
	rss=$(hwm)
	pbs_check_le "... and the process' peak memory grew by less than 1 MB (VmHWM $before -> $rss kB)" \
		1024 "$((rss - before))"
fi
pbs_check_eq "after all that, a good request is still answered right" "action=OK" \
	"$(rcpt 192.0.2.7 m10)"

# Redis down: 451, the process stays, and recovers by itself
pbs_stop_redis
pbs_check_match "Redis down: a relay is deferred" '^action=451 4\.3\.0 ' "$(rcpt 192.0.2.7 d1)"
pbs_check_match "... logged" 'relay deferred: client=192\.0\.2\.7 .*reason=store-error' "$(cat "$LOG")"
pbs_check_eq "Redis down: AUTH still relays" "action=OK" "$(rcpt 192.0.2.9 d2 sasl_username=bob)"
pbs_restart_redis main "$REDIS_PORT" || exit 1
pbs_ctl grant 192.0.2.7 alice >/dev/null
pbs_check_eq "Redis back: the same process relays again" "action=OK" "$(rcpt 192.0.2.7 d3)"
if [ "$MODE" = listen ]; then
	# EOF in the middle of a request: no answer, a log line, the daemon serves on
	printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n' >&"$TO"
	exec {TO}>&-
	out=$(cat <&"$FROM")
	exec {FROM}<&-
	wait "$CONN_PID"
	pbs_check_eq "EOF without the empty line: no answer" "" "$out"
	pbs_check_match "... logged" 'cut short when the client closed' "$(cat "$LOG")"
	connect
	pbs_check_eq "... and the daemon answers the next connection" "action=OK" "$(rcpt 192.0.2.7 d4)"
fi
stop_policy
pbs_check_eq "EOF between requests (listen: SIGTERM): exit 0" 0 "$STOPPED"

if [ "$MODE" = spawn ]; then
	# EOF in the middle of a request: no answer, a log line, exit 0
	out=$(printf 'request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n' |
		"$POLICY" -c "$PBS_CONF" 2>>"$LOG")
	pbs_check_eq "EOF without the empty line: no answer, exit 0" "0:" "$?:$out"
	pbs_check_match "... logged" 'cut short at end of input' "$(cat "$LOG")"
fi

# counted as the milter counts (an allowed relay once per message, each refusal), written
# at EOF; with usage.trace_header on, the leased message gets its header at DATA
pbs_write_config "$PBS_TMP/usage.conf" \
	'usage: { host = "mx-policy"; flush_interval = 3600; trace_header = "on"; };'
pbs_ctl grant 192.0.2.50 frank >/dev/null
start_policy "$PBS_TMP/usage.conf"
pbs_check_eq "usage: leased message, first recipient OK" "action=OK" "$(rcpt 192.0.2.50 u1)"
pbs_check_eq "usage: ... second recipient OK" "action=OK" \
	"$(rcpt 192.0.2.50 u1 recipient=b@remote.example)"
data() { ask request=smtpd_access_policy protocol_state=DATA client_address="$1" "instance=$2" \
	recipient= recipient_count=2 sasl_username=; }
pbs_check_match "trace header: PREPEND at DATA for the leased message" \
	'^action=PREPEND X-PopBeforeSMTP: user=frank lease=192\.0\.2\.50 service=[^ ]+ granted=' \
	"$(data 192.0.2.50 u1)"
pbs_check_eq "usage: unleased message, two recipients refused" "action=DUNNO action=DUNNO" \
	"$(rcpt 192.0.2.51 u2) $(rcpt 192.0.2.51 u2 recipient=b@remote.example)"
pbs_check_eq "trace header: nothing at DATA for a message not let through on a lease" \
	"action=DUNNO" "$(data 192.0.2.51 u2)"
pbs_check_eq "usage: nothing written before the flush interval" "" \
	"$(pbs_redis_cli HGET popbsmtp:stat:total 'mx-policy|policy|allowed|lease')"
stop_policy
total() { pbs_redis_cli HGET popbsmtp:stat:total "mx-policy|policy|$1"; }
pbs_check_eq "usage: at EOF the counts are written: one allowed message, two refusals" "1 2" \
	"$(total allowed\|lease) $(total refused\|no-lease)"
pbs_check_match "usage: popbsmtpctl usage names frank with one message" '^frank +1 ' \
	"$(pbs_ctl usage --user frank | tail -n 1)"
start_policy "$PBS_CONF"
pbs_check_eq "trace header off (the default): DATA is not answered with a header" \
	"action=DUNNO" "$(data 192.0.2.50 u3)"
stop_policy
pbs_check_match "trace header without usage.trace_secret: a warning (header_checks cannot tell)" \
	'usage\.trace_secret is not set: Postfix cannot tell' "$(cat "$LOG")"
start_policy "$PBS_TMP/secret.conf"
rcpt 192.0.2.50 u4 >/dev/null
pbs_check_match "trace header with usage.trace_secret: the secret comes first in the value" \
	"^action=PREPEND X-PopBeforeSMTP: $SECRET user=frank lease=192\.0\.2\.50 " "$(data 192.0.2.50 u4)"
stop_policy

# smtpd_policy_service_request_limit = 1: Postfix closes the connection right after the
# first request; a connection that carries more, or stays open a while, is normal (spawn(8)
# only: the daemon outlives its connections)
if [ "$MODE" = spawn ]; then
WARNING='closed the policy connection right after its first request'
n0=$(grep -c "$WARNING" "$LOG")
start_policy "$PBS_CONF"
rcpt 192.0.2.60 l1 >/dev/null
stop_policy
pbs_check_eq "one request, then EOF at once: the request_limit warning" $((n0 + 1)) \
	"$(grep -c "$WARNING" "$LOG")"
start_policy "$PBS_CONF"
rcpt 192.0.2.60 l2 >/dev/null
rcpt 192.0.2.60 l2 recipient=b@remote.example >/dev/null
stop_policy
start_policy "$PBS_CONF"
rcpt 192.0.2.60 l3 >/dev/null
sleep 1.2
stop_policy
pbs_check_eq "two requests, or one and EOF more than a second later: no warning" $((n0 + 1)) \
	"$(grep -c "$WARNING" "$LOG")"
fi

# under the Redis user docs/ha.md gives the policy gate (the milter's line): decides and
# writes its counts, no NOPERM
acl=$(sed -n 's/^\(ACL SETUSER milter .*\)$/\1/p' "$here/../../docs/ha.md")
pbs_check_match "docs/ha.md gives the gates' ACL line" '^ACL SETUSER milter ' "$acl"
# shellcheck disable=SC2086 # the line's words, as an administrator pastes them
pbs_redis_cli ${acl/MILTER-PASSWORD/gate-secret} >/dev/null
printf 'redis: { host = "127.0.0.1"; port = %s; username = "milter"; password = "gate-secret"; };\nusage: { host = "mx-acl"; };\n' \
	"$REDIS_PORT" >"$PBS_TMP/acl.conf"
start_policy "$PBS_TMP/acl.conf"
pbs_check_eq "ACL user: a leased client gets OK" "action=OK" "$(rcpt 192.0.2.50 a1)"
pbs_check_eq "ACL user: an unleased one DUNNO" "action=DUNNO" "$(rcpt 192.0.2.52 a2)"
stop_policy
pbs_check_eq "ACL user: its counts are written at EOF" "1 1" \
	"$(pbs_redis_cli HGET popbsmtp:stat:total 'mx-acl|policy|allowed|lease') $(pbs_redis_cli HGET popbsmtp:stat:total 'mx-acl|policy|refused|no-lease')"
pbs_check_nomatch "ACL user: no NOPERM" 'NOPERM' "$(cat "$LOG")"

# ---- relay limits (limits.*): counted in Redis per hour of the store's clock ----
# docs/abuse.md's configuration blocks, as written: each one, beside a redis group, is a
# file the gates take.
for intro in 'In popbsmtp.conf (these are the defaults):' '### Automatic suspension' \
	'## Sender binding' 'To bound it, in popbsmtp.conf:'; do
	block=$(pbs_doc_block "$PBS_DOCS/abuse.md" "$intro")
	printf 'redis: { port = %s; };\n%s\n' "$REDIS_PORT" "$block" >"$PBS_TMP/doc.conf"
	pbs_check_match "docs/abuse.md's block after '$intro' (${block:0:40}…) is taken" 'configuration OK' \
		"$("$POLICY" -t -c "$PBS_TMP/doc.conf" 2>&1)"
done
# The store's clock set to the last ms of an hour two hours from now: every count below
# falls in that hour (Redis TIME is behind it), and its next ms starts the next hour.
HOUR=$((($(date +%s) / 3600 + 2) * 3600))
stat() { pbs_redis_cli HGETALL popbsmtp:stat:total | paste - - | awk -F'\t' -v f="$1" 'index($1, f) { n += $2 } END { print n + 0 }'; }
PBS_CONF_LIMITS='user_recipients_per_hour = 3; lease_recipients_per_hour = 5; suspend_after = 2; suspend_for = 600;' \
	pbs_write_config "$PBS_TMP/limits.conf"
pbs_ctl grant 192.0.2.90 carol >/dev/null
pbs_ctl grant 192.0.2.91 carol >/dev/null
pbs_ctl grant 192.0.2.92 dave >/dev/null
pbs_redis_cli SET popbsmtp:clock "$((HOUR * 1000 - 1))" >/dev/null
start_policy "$PBS_TMP/limits.conf"
out="$(rcpt 192.0.2.90 L1) $(rcpt 192.0.2.90 L1 recipient=two@remote.example) $(rcpt 192.0.2.91 L2)"
pbs_check_eq "limits: carol's 3 relay recipients in an hour, over two leases and two messages: OK each" \
	"action=OK action=OK action=OK" "$out"
pbs_check_match "limits: popbsmtpctl check shows what this hour counted" \
	'^relayed by lease this hour: carol 3 of 3, this lease 2 of 5$' "$(PBS_CONF=$PBS_TMP/limits.conf pbs_ctl check 192.0.2.90)"
pbs_check_match "limits: ... in JSON too" '"relayed_this_hour":\{"user":3,"user_limit":3,"lease":2,"lease_limit":5\}' \
	"$(PBS_CONF=$PBS_TMP/limits.conf pbs_ctl --json check 192.0.2.90)"
pbs_check_eq "limits: the 4th is deferred, 450 4.7.1 (temporary: delayed, not lost)" \
	"action=450 4.7.1 Relay limit reached for this login, try again later" "$(rcpt 192.0.2.90 L3)"
pbs_check_match "limits: logged with the reason, the user and the lease" \
	'relay deferred: client=192\.0\.2\.90 rcpt=<user@remote\.example> reason=rate-limit user=carol lease=192\.0\.2\.90 ' \
	"$(cat "$LOG")"
pbs_check_eq "limits: another user is not affected" "action=OK" "$(rcpt 192.0.2.92 L4)"
pbs_check_eq "limits: SMTP AUTH is never limited (nor counted)" "action=OK 3" \
	"$(rcpt 192.0.2.90 L5 sasl_username=carol) $(pbs_redis_cli GET "popbsmtp:limit:user:$((HOUR / 3600 - 1)):carol")"
pbs_check_eq "limits: the 2nd refusal in a day (suspend_after = 2) is refused too" \
	"action=450 4.7.1 Relay limit reached for this login, try again later" "$(rcpt 192.0.2.91 L6)"
pbs_check_match "limits: ... and suspends carol, in one line an alert can match" \
	'suspended: user=carol reason=rate-limit limit=user-limit after=2 for=600 client=192\.0\.2\.91' \
	"$(cat "$LOG")"
pbs_check_eq "limits: carol's suspension has its ttl" 1 \
	"$(t=$(pbs_redis_cli TTL popbsmtp:suspended:carol); [ "$t" -gt 590 ] && [ "$t" -le 600 ] && echo 1)"
pbs_redis_cli SET popbsmtp:clock "$((HOUR * 1000))" >/dev/null
pbs_check_eq "limits: the next hour, carol's leases still relay nothing: suspended (550 5.7.1)" \
	"action=550 5.7.1 Relay suspended for this login" "$(rcpt 192.0.2.90 L7)"
pbs_check_match "limits: ... logged as such" 'relay denied: client=192\.0\.2\.90 .*reason=user-suspended user=carol' \
	"$(cat "$LOG")"
pbs_ctl unsuspend carol >/dev/null
pbs_check_eq "limits: unsuspended, in the next hour carol relays again" "action=OK" "$(rcpt 192.0.2.90 L8)"
stop_policy
pbs_check_eq "limits: counted: 2 deferred for rate-limit, 1 automatic suspension, 1 refused suspended" \
	"2 1 1" "$(stat '|deferred|rate-limit') $(stat '|suspended|rate-limit') $(stat '|refused|user-suspended')"
out=$(pbs_ctl metrics)
pbs_check_match "limits: metrics has the deferrals by a limit" \
	'popbsmtp_relay_decisions_total\{host="[^"]*",gate="policy",verdict="deferred",reason="rate-limit"\} 2' "$out"
pbs_check_match "limits: ... and the automatic suspension" \
	'popbsmtp_suspensions_total\{host="[^"]*",gate="policy",verdict="suspended",reason="rate-limit"\} 1' "$out"

# ---- lease.sender: MAIL FROM bound to the lease's user name ----
pbs_ctl grant 192.0.2.95 erin@client.example >/dev/null
# The lease group's setting of docs/abuse.md's block, as written.
PBS_CONF_LEASE_EXTRA=$(pbs_doc_block "$PBS_DOCS/abuse.md" '## Sender binding' | sed -n 's/^lease: { \(.*\) };$/\1/p')
pbs_check_eq "docs/abuse.md's sender binding block" 'sender = "address";' "$PBS_CONF_LEASE_EXTRA"
PBS_CONF_LEASE_EXTRA=$PBS_CONF_LEASE_EXTRA pbs_write_config "$PBS_TMP/sender.conf"
start_policy "$PBS_TMP/sender.conf"
pbs_check_eq "sender = address: MAIL FROM the user name: OK" "action=OK" \
	"$(rcpt 192.0.2.95 S1 sender=Erin@Client.Example)"
for from in other@client.example "" 'erin%evil.example@client.example' '@evil.example:erin@client.example' \
	'"erin"@client.example' 'erin@client.example@evil.example'; do
	pbs_check_eq "sender = address: MAIL FROM '$from' refused, 550 5.7.1 naming the rule" \
		"action=550 5.7.1 Sender must be the address this client logged in as" \
		"$(rcpt 192.0.2.95 S2 sender="$from")"
done
pbs_check_eq "sender = address: SMTP AUTH is not bound" "action=OK" \
	"$(rcpt 192.0.2.95 S3 sender=x@elsewhere.example sasl_username=erin)"
stop_policy
# With the limits on too: a neighbour refused for the sender uses up none of erin's hour,
# and cannot get her suspended.
PBS_CONF_LEASE_EXTRA=$PBS_CONF_LEASE_EXTRA \
	PBS_CONF_LIMITS='user_recipients_per_hour = 2; suspend_after = 1; suspend_for = 600;' \
	pbs_write_config "$PBS_TMP/sender-limits.conf"
start_policy "$PBS_TMP/sender-limits.conf"
out=""
for i in 1 2 3 4; do out="$out$(rcpt 192.0.2.95 SL$i sender=mallory@client.example | cut -c1-16) "; done
pbs_check_eq "sender = address, limits on: a wrong sender refused 550 each time, never 450" \
	"action=550 5.7.1 action=550 5.7.1 action=550 5.7.1 action=550 5.7.1 " "$out"
pbs_check_eq "... and erin's two recipients this hour are still hers" "action=OK action=OK" \
	"$(rcpt 192.0.2.95 SL5 sender=erin@client.example) $(rcpt 192.0.2.95 SL6 sender=erin@client.example)"
pbs_check_eq "... nobody suspended" 0 "$(pbs_redis_cli EXISTS popbsmtp:suspended:erin@client.example)"
stop_policy
PBS_CONF_LEASE_EXTRA='sender = "domain";' pbs_write_config "$PBS_TMP/sender.conf"
start_policy "$PBS_TMP/sender.conf"
pbs_check_eq "sender = domain: another address of the domain: OK" "action=OK" \
	"$(rcpt 192.0.2.95 D1 sender=frank@client.example)"
pbs_check_eq "sender = domain: a sub-domain is another domain" \
	"action=550 5.7.1 Sender must be in the domain of the address this client logged in as" \
	"$(rcpt 192.0.2.95 D2 sender=frank@sub.client.example)"
stop_policy

# lease.never: refused without asking Redis, even with a lease
pbs_ctl grant 198.51.100.7 eve >/dev/null 2>&1
start_policy "$NEVER_CONF"
before=$(gets)
pbs_check_eq "a lease.never client: DUNNO" "action=DUNNO" "$(rcpt 198.51.100.7 n1)"
pbs_check_match "... logged" 'relay denied: client=198\.51\.100\.7 .*reason=never-lease' "$(cat "$LOG")"
pbs_check_eq "... without asking Redis" "$before" "$(gets)"
stop_policy

# a black-holed Redis: every answer is a 451 within the timeout, one wait per message
pbs_start_blackhole || exit 1
PBS_CONF_REDIS_PORT=$BLACKHOLE_PORT PBS_CONF_TIMEOUT_MS=200 pbs_write_config "$PBS_TMP/hole.conf"
start_policy "$PBS_TMP/hole.conf"
pbs_check_match "black-holed Redis: deferred" '^action=451 ' "$(rcpt 192.0.2.7 h1)"
pbs_check_match "... the next recipient of that message at once, from the cache" '^action=451 ' \
	"$(rcpt 192.0.2.7 h1 recipient=second@remote.example)"
pbs_check_match "... and the next message too" '^action=451 ' "$(rcpt 192.0.2.7 h2)"
stop_policy
pbs_check_eq "the process stayed up, and exits 0 at EOF" 0 "$STOPPED"
# Counting is asking Redis: with the limits on, a black-holed Redis defers the same way,
# for every relay recipient (none is relayed uncounted).
PBS_CONF_LIMITS='user_recipients_per_hour = 5;' PBS_CONF_REDIS_PORT=$BLACKHOLE_PORT \
	PBS_CONF_TIMEOUT_MS=200 pbs_write_config "$PBS_TMP/hole-limits.conf"
start_policy "$PBS_TMP/hole-limits.conf"
pbs_check_match "limits on, black-holed Redis: deferred" '^action=451 ' "$(rcpt 192.0.2.7 hl1)"
pbs_check_match "... the next recipient of that message too" '^action=451 ' \
	"$(rcpt 192.0.2.7 hl1 recipient=second@remote.example)"
stop_policy

# on_store_error = reject: DUNNO (Postfix refuses); never OK
pbs_stop_redis
pbs_write_config "$PBS_TMP/reject.conf" 'milter: { on_store_error = "reject"; };'
start_policy "$PBS_TMP/reject.conf"
pbs_check_eq "on_store_error = reject, Redis down: DUNNO" "action=DUNNO" "$(rcpt 192.0.2.7 r1)"
stop_policy
pbs_check_nomatch "nothing was ever written to stderr but log lines" '^action=' "$(cat "$LOG")"
pbs_done
