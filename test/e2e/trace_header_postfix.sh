#!/bin/bash
# trace_header_postfix.sh BUILD_DIR — usage.trace_header end to end through a real Postfix:
# with it on, a message relayed by lease reaches the next hop (smtp-sink) with one
# X-PopBeforeSMTP header naming the user and the lease, even with two relay recipients;
# AUTH and trusted relays get none. With it off (after a restart), no message gets one.
# The same through the policy gate, asked again at DATA (smtpd_data_restrictions). With it
# on, X-PopBeforeSMTP headers the client wrote (five forms) never reach the next hop, from a
# leased, a trusted or an AUTH client: the milter deletes them; on the policy gate, the
# header_checks table and main.cf lines of docs/postfix.md do.
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

# header_of RCPT — the X-PopBeforeSMTP lines of the message the sink got for RCPT.
header_of() { pbs_trace_headers "$1"; }


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

# The client's own X-PopBeforeSMTP headers (five forms) are deleted, whoever sends them.
pbs_check_forged_trace "on, forged headers from a leased client" 127.0.0.5 fl@remote.example alice
pbs_check_forged_trace "on, forged headers from a trusted client" 127.0.0.1 ft@remote.example ""
pbs_check_forged_trace "on, forged headers from an AUTH client" 127.0.0.8 fa@remote.example "" \
	-- -a PLAIN -au alice -ap secret
# check_one_session WHAT PREFIX — three messages in one SMTP session from the leased
# 127.0.0.5 (the gates' per-message state): forged, clean, forged again; each leaves with
# popbsmtp's header alone, and the clean one loses nothing.
check_one_session() {
	local what=$1 p=$2 n H
	/usr/bin/python3 - "$POSTFIX_PORT" "$PBS_TMP/forged.eml" "$p" <<'PY' >"$PBS_TMP/session3.out" 2>&1
import smtplib, sys
forged = open(sys.argv[2]).read()
clean = "From: sender@client.example\nSubject: clean\nX-Keep: yes\n\nbody\n"
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.0.5", 0), timeout=20)
for n, body in ((1, forged), (2, clean), (3, forged)):
    rcpt = "%s%d@remote.example" % (sys.argv[3], n)
    s.sendmail("sender@client.example", [rcpt], body.replace("%TO_ADDRESS%", rcpt))
s.quit()
PY
	pbs_check_eq "$what, one session, three messages: all sent" "" "$(cat "$PBS_TMP/session3.out")"
	for n in 1 2 3; do
		H=$(header_of "$p$n@remote.example")
		pbs_check_match "$what, one session, message $n: popbsmtp's header" '^X-PopBeforeSMTP: user=alice ' "$H"
		pbs_check_eq "$what, one session, message $n: only that one" 1 "$(printf '%s\n' "$H" | grep -c .)"
	done
	pbs_check_eq "$what, one session, the clean message: its own headers kept" 1 \
		"$(grep -l -iE "^X-Rcpt-Args: <${p}2@remote\.example>" -r "$SINK_DIR" | xargs -r grep -c '^X-Keep: yes')"
}
pbs_write_forged_message "$PBS_TMP/forged.eml"
check_one_session "on" s
restart_milter off
pbs_smtp 127.0.0.5 off@remote.example >/dev/null
pbs_check_match "off: the lease relay is accepted" '^250 ' "$(pbs_rcpt_reply)"
pbs_check_eq "off: no header" "" "$(header_of off@remote.example)"
pbs_check_eq "off: the message did arrive" 1 "$(pbs_sink_count off@remote.example)"

# ---- the policy gate: OK at RCPT, PREPEND when asked again at DATA ----
# Set up as docs/postfix.md says, its blocks run as written (test paths): a secret in the
# configuration, the header_checks table popbsmtp-policy -H writes, the main.cf lines.
DOC="$here/../../docs/postfix.md"
pbs_stop_milter
pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")" \
	"usage: { trace_header = \"on\"; trace_secret = \"$(openssl rand -hex 16)\"; };"
pbs_policy_command "$PBS_CONF"
at_test_paths() {
	sed -e "s|popbsmtp-policy -H|$PBS_BIN/policy/popbsmtp-policy -H|" \
		-e "s|/etc/popbsmtp/popbsmtp.conf|$PBS_CONF|g" -e "s|/etc/postfix/|$PBS_TMP/|g"
}
step2=$(pbs_doc_block "$DOC" 'The `header_checks` table, written by the gate' | at_test_paths)
pbs_check_match "docs/postfix.md gives the command that writes the header_checks table" \
	'popbsmtp-policy -H -c ' "$step2"
eval "$step2"
pbs_check_eq "... which writes two lines, readable by root alone" "2 600" \
	"$(grep -vc '^#' "$PBS_TMP/popbsmtp_header_checks") $(stat -c %a "$PBS_TMP/popbsmtp_header_checks")"
mapfile -t step3 < <(pbs_doc_block "$DOC" 'In `main.cf`, with the trace header on' | at_test_paths)
pbs_check_eq "docs/postfix.md gives two main.cf lines for the trace header" \
	"smtpd_data_restrictions header_checks" "$(printf '%s\n' "${step3[@]}" | cut -d' ' -f1 | paste -sd' ')"
pbs_start_postfix "policy:$POLICY_CMD" "$DOVECOT_AUTH_SOCKET" -- "${step3[@]}" || exit 1
pbs_smtp 127.0.0.5 policy1@remote.example policy2@remote.example >/dev/null
pbs_check_match "policy gate, on: the lease relay's second recipient is accepted too" '^250 ' \
	"$(pbs_rcpt_reply policy2@remote.example)"
H=$(header_of policy1@remote.example)
pbs_check_match "policy gate, on: the leased message names user and lease, without the secret" \
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
pbs_check_forged_trace "policy gate, forged headers from a leased client" 127.0.0.5 \
	pfl@remote.example alice
pbs_check_forged_trace "policy gate, forged headers from a trusted client" 127.0.0.1 \
	pft@remote.example ""
pbs_check_forged_trace "policy gate, forged headers from an AUTH client" 127.0.0.8 \
	pfa@remote.example "" -- -a PLAIN -au alice -ap secret
check_one_session "policy gate" ps
pbs_check_nomatch "policy gate: no warning about a missing secret" 'trace_secret' "$(cat "$POLICY_LOG")"

# ---- smtpd_policy_service_request_limit = 1: a new process for every request ----
gets() { pbs_redis_cli INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p'; }
WARNING='closed the policy connection right after its first request'
pbs_start_postfix "policy:$POLICY_CMD" "$DOVECOT_AUTH_SOCKET" -- "${step3[@]}" \
	"smtpd_policy_service_request_limit = 1" || exit 1
g0=$(gets)
pbs_smtp 127.0.0.5 limit1@remote.example limit2@remote.example >/dev/null
pbs_check_match "request_limit = 1: the leased message is relayed" '^DOT 250 ' \
	"$(pbs_smtp_transcript | grep '^DOT ')"
pbs_check_eq "request_limit = 1: one GET per recipient, no trace header (the state is lost)" \
	"2 " "$(($(gets) - g0)) $(header_of limit1@remote.example)"
pbs_check_match "request_limit = 1: the gate says why" "$WARNING.*request_limit=0" "$(cat "$POLICY_LOG")"
warned=$(grep -c "$WARNING" "$POLICY_LOG")
# The same limit, lifted for popbsmtp-policy as docs/postfix.md writes it.
mapfile -t lifted < <(pbs_doc_block "$DOC" 'lift it for this one' | pbs_main_cf_settings)
pbs_check_match "docs/postfix.md lifts the limit for this service" 'request_limit=0 \}' \
	"$(printf '%s\n' "${lifted[@]}" | grep '^smtpd_data_restrictions')"
mapfile -t checks < <(printf '%s\n' "${step3[@]}" | grep '^header_checks ')
pbs_start_postfix "policy:$POLICY_CMD" "$DOVECOT_AUTH_SOCKET" -- "${checks[@]}" "${lifted[@]}" || exit 1
g0=$(gets)
pbs_smtp 127.0.0.5 lifted1@remote.example lifted2@remote.example >/dev/null
H=$(header_of lifted1@remote.example)
pbs_check_eq "limit lifted for the gate: one GET for the two recipients" 1 "$(($(gets) - g0))"
pbs_check_match "limit lifted for the gate: the trace header is back" '^X-PopBeforeSMTP: user=alice ' "$H"
pbs_check_eq "limit lifted for the gate: once" 1 "$(printf '%s\n' "$H" | grep -c .)"
pbs_check_eq "limit lifted for the gate: no new warning" "$warned" "$(grep -c "$WARNING" "$POLICY_LOG")"
pbs_done
