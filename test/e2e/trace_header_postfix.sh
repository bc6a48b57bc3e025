#!/bin/bash
# trace_header_postfix.sh BUILD_DIR — usage.trace_header end to end through a real Postfix:
# with it on, a message relayed by lease reaches the next hop (smtp-sink) with one
# X-PopBeforeSMTP header naming the user and the lease, even with two relay recipients;
# AUTH and trusted relays get none. With it off (after a restart), no message gets one.
# The same through the policy gate, asked again at DATA (smtpd_data_restrictions).
# Hostile lease values from another writer (issue 18 §3: a grant time in nanoseconds
# once crashed the milter at end of message and the policy gate with it): each is no
# lease, refused like one (550/554, never 451) and logged, and the gate stays up and
# serves the next leased session with its header. A grant time at the last second of
# year 9999, the latest that decodes, is a lease: its header shows that date.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"
. "$here/lib/milter.sh"
PBS_BIN=$(cd "$1" && pwd)

pbs_start_story_servers || exit 1
pbs_start_postfix "unix:$MILTER_SOCKET" "$DOVECOT_AUTH_SOCKET" || exit 1

# restart_milter ON_OFF — the milter again with usage.trace_header ON_OFF.
restart_milter() {
	pbs_stop_milter
	pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")" \
		"usage: { trace_header = \"$1\"; };"
	pbs_start_milter "$PBS_CONF" || exit 1
}

# header_of RCPT — the X-PopBeforeSMTP lines of the messages the sink got for RCPT.
header_of() {
	pbs_sink_wait "$1" 1 >/dev/null 2>&1
	grep -l -iE "^X-Rcpt-Args: <$(pbs_re_quote "$1")>" -r "$SINK_DIR" |
		xargs -r grep -h '^X-PopBeforeSMTP:' | tr -d '\r'
}


# hostile_round GATE REFUSAL — every value of PBS_HOSTILE_LEASES under 127.0.0.6's lease,
# one SMTP session each: refused with REFUSAL, one log line naming the key; then a leased
# session still relays with its header, and a lease granted in year 9999 shows that date.
hostile_round() {
	local gate=$1 refusal=$2 i h mark
	mark=$(wc -l <"$POSTFIX_LOG")
	for i in "${!PBS_HOSTILE_LEASES[@]}"; do
		h=${PBS_HOSTILE_LEASES[$i]}
		pbs_hostile_lease "$i" | pbs_redis_cli -x SET popbsmtp:lease:127.0.0.6 >/dev/null
		pbs_check_match "$gate, hostile lease ($h): relay refused as without a lease, not deferred" \
			"$refusal" "$(pbs_smtp_rcpt_reply 127.0.0.6 "$gate-$h@remote.example")"
		pbs_check_eq "$gate, hostile lease ($h): logged once" 1 "$(grep -c \
			'lease lookup for 127\.0\.0\.6: ignored, treated as no lease: popbsmtp:lease:127\.0\.0\.6 holds no valid lease' \
			"$GATE_LOG")"
		: >"$GATE_LOG"
	done
	printf '1|253402300799|webmail|mallory' | pbs_redis_cli -x SET popbsmtp:lease:127.0.0.6 >/dev/null
	pbs_smtp 127.0.0.6 "$gate-9999@remote.example" >/dev/null
	pbs_check_eq "$gate: a lease granted 9999-12-31T23:59:59Z relays with that date in its header" \
		"X-PopBeforeSMTP: user=mallory lease=127.0.0.6 service=webmail granted=9999-12-31T23:59:59Z" \
		"$(header_of "$gate-9999@remote.example")"
	pbs_redis_cli DEL popbsmtp:lease:127.0.0.6 >/dev/null
	pbs_smtp 127.0.0.5 "$gate-after@remote.example" >/dev/null
	pbs_check_match "$gate: after the hostile values, a leased message still relays with its header" \
		'^X-PopBeforeSMTP: user=alice lease=127\.0\.0\.5 ' "$(header_of "$gate-after@remote.example")"
	pbs_check_nomatch "$gate: Postfix logged no dead gate and no deferral meanwhile" \
		'killed by signal|warning: milter|451 4' "$(tail -n +"$((mark + 1))" "$POSTFIX_LOG")"
}

restart_milter on
pbs_ctl grant 127.0.0.5 alice >/dev/null
pbs_smtp 127.0.0.5 lease1@remote.example lease2@remote.example >/dev/null
pbs_check_match "on: the lease relay's second recipient is accepted too" '^250 ' \
	"$(pbs_rcpt_reply lease2@remote.example)"
H=$(header_of lease1@remote.example)
pbs_check_match "on: the leased message names user and lease" \
	'^X-PopBeforeSMTP: user=alice lease=127\.0\.0\.5 service=ctl granted=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$' "$H"
pbs_check_eq "on: one header, though two relay recipients" 1 "$(printf '%s\n' "$H" | grep -c .)"
pbs_smtp_auth 127.0.0.8 alice secret auth@remote.example >/dev/null
pbs_check_eq "on: no header on an AUTH relay" "" "$(header_of auth@remote.example)"
pbs_check_eq "on: the AUTH relay did arrive" 1 "$(pbs_sink_count auth@remote.example)"
pbs_smtp 127.0.0.1 trusted@remote.example >/dev/null
pbs_check_eq "on: no header on a trusted relay" "" "$(header_of trusted@remote.example)"
pbs_check_eq "on: the trusted relay did arrive" 1 "$(pbs_sink_count trusted@remote.example)"
pbs_check_match "on: a refused relay is still refused" '^550 5\.7\.1' \
	"$(pbs_smtp_rcpt_reply 127.0.0.7 refused@remote.example)"
GATE_LOG=$MILTER_LOG
: >"$GATE_LOG"
hostile_round milter '^550 5\.7\.1'
pid_before=$MILTER_PID
pbs_check_eq "milter: the same process throughout (alive, never restarted)" "alive $pid_before" \
	"$(kill -0 "$MILTER_PID" 2>/dev/null && echo alive) $MILTER_PID"

restart_milter off
pbs_smtp 127.0.0.5 off@remote.example >/dev/null
pbs_check_match "off: the lease relay is accepted" '^250 ' "$(pbs_rcpt_reply)"
pbs_check_eq "off: no header" "" "$(header_of off@remote.example)"
pbs_check_eq "off: the message did arrive" 1 "$(pbs_sink_count off@remote.example)"

# ---- the policy gate: OK at RCPT, PREPEND when asked again at DATA ----
pbs_stop_milter
pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")" \
	'usage: { trace_header = "on"; };'
pbs_policy_command "$PBS_CONF"
pbs_start_postfix "policy:$POLICY_CMD" "$DOVECOT_AUTH_SOCKET" -- \
	"smtpd_data_restrictions = check_policy_service unix:private/popbsmtp-policy" || exit 1
pbs_smtp 127.0.0.5 policy1@remote.example policy2@remote.example >/dev/null
pbs_check_match "policy gate, on: the lease relay's second recipient is accepted too" '^250 ' \
	"$(pbs_rcpt_reply policy2@remote.example)"
H=$(header_of policy1@remote.example)
pbs_check_match "policy gate, on: the leased message names user and lease" \
	'^X-PopBeforeSMTP: user=alice lease=127\.0\.0\.5 service=ctl granted=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$' "$H"
pbs_check_eq "policy gate, on: one header, though two relay recipients" 1 \
	"$(printf '%s\n' "$H" | grep -c .)"
pbs_smtp_auth 127.0.0.8 alice secret pauth@remote.example >/dev/null
pbs_check_eq "policy gate, on: no header on an AUTH relay" "" "$(header_of pauth@remote.example)"
pbs_check_eq "policy gate, on: the AUTH relay did arrive" 1 "$(pbs_sink_count pauth@remote.example)"
pbs_check_match "policy gate, on: an unleased relay is refused by Postfix" '^554 5\.7\.1' \
	"$(pbs_smtp_rcpt_reply 127.0.0.7 prefused@remote.example)"
: >"$GATE_LOG"
hostile_round policy '^554 5\.7\.1'
pbs_done
