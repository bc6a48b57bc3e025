#!/bin/bash
# policy_postfix.sh BUILD_DIR — the story end to end with the policy gate: Redis, Dovecot
# running popbsmtp-postlogin, Postfix asking popbsmtp-policy (run by spawn(8), with the
# master.cf and main.cf lines of docs/postfix.md) before its own reject_unauth_destination,
# smtp-sink as the next hop, and real clients (curl, swaks) from 127.0.0.x and, through
# XCLIENT, from IPv6 addresses.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"
. "$here/lib/milter.sh"
PBS_BIN=$(cd "$1" && pwd)

REMOTE=user@remote.example
LOCAL=postmaster@local.test.example
DOC="$here/../../docs/postfix.md"
# The main.cf lines of docs/postfix.md, as written, on an instance with its own mynetworks
# (127.0.0.1/32): they must leave it alone.
mapfile -t MAIN_CF < <(pbs_doc_block "$DOC" 'In `main.cf` (these lines go beside' | pbs_main_cf_settings)
pbs_check_match "docs/postfix.md gives the policy gate's main.cf lines" \
	'^smtpd_relay_restrictions = .*check_policy_service unix:private/popbsmtp-policy' \
	"$(printf '%s\n' "${MAIN_CF[@]}")"
pbs_check_nomatch "... and none of them replaces the site's mynetworks" '^mynetworks' \
	"$(printf '%s\n' "${MAIN_CF[@]}")"
# spawn(8) kills a command after its time limit (command_time_limit, 1000 s); smtpd keeps a
# policy connection up to smtpd_policy_service_max_ttl (1000 s): the doc raises it.
TIME_LIMIT=$(printf '%s\n' "${MAIN_CF[@]}" | grep '^popbsmtp-policy_time_limit')
pbs_check_eq "the doc raises the policy service's time limit" \
	"popbsmtp-policy_time_limit = 3600" "$TIME_LIMIT"
pbs_check_match "docs/postfix.md's master.cf line is the one this test runs (user and paths aside)" \
	'^popbsmtp-policy unix - n n - 0 spawn user=popbsmtp argv=/usr/sbin/popbsmtp-policy -c /etc/popbsmtp/popbsmtp\.conf$' \
	"$(pbs_doc_block "$DOC" 'In `master.cf` (the `user`' | pbs_main_cf_settings)"

PBS_CONF_LEASE_EXTRA='never = [ "127.0.0.12/32" ];' pbs_start_story_servers policy || exit 1
pbs_start_postfix "policy:$POLICY_CMD" "$DOVECOT_AUTH_SOCKET" -- "${MAIN_CF[@]}" || exit 1
pbs_check_eq "Postfix keeps its own mynetworks" 127.0.0.1/32 "$(postconf -c "$POSTFIX_CONF" -h mynetworks)"
pbs_check_nomatch "Postfix takes the documented lines without a warning" 'warning' \
	"$(postconf -c "$POSTFIX_CONF" -n 2>&1 >/dev/null; cat "$POSTFIX_LOG")"

pbs_check_policy_story $REMOTE $LOCAL
pbs_smtp 127.0.0.7 $LOCAL other@remote.example >/dev/null
pbs_check_match "local then relay in one transaction: the local one is accepted" '^250 ' \
	"$(pbs_rcpt_reply $LOCAL)"
pbs_check_match "local then relay in one transaction: the relay one is refused" '^554 5\.7\.1' \
	"$(pbs_rcpt_reply other@remote.example)"
pbs_postfix_wait_queue
pbs_check_eq "nothing for the refused recipient reached the next hop" 0 \
	"$(pbs_sink_count other@remote.example)"

pbs_check_match "SMTP AUTH relays without a lease" '^250 ' \
	"$(pbs_smtp_auth 127.0.0.8 alice secret $REMOTE >/dev/null; pbs_rcpt_reply)"
pbs_check_match "Postfix's mynetworks (127.0.0.1) relays without a lease" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.1 $REMOTE)"

pbs_ctl grant 2001:db8:1:2::1 dave >/dev/null
pbs_check_match "IPv6 client inside a leased /64 relays (XCLIENT)" '^250 ' \
	"$(pbs_smtp_xclient IPV6:2001:db8:1:2::77 $REMOTE >/dev/null; pbs_rcpt_reply)"
pbs_check_match "IPv6 client outside the leased /64 is refused" '^554 5\.7\.1' \
	"$(pbs_smtp_xclient IPV6:2001:db8:1:3::77 $REMOTE >/dev/null; pbs_rcpt_reply)"

pbs_login_imap 127.0.0.12 alice secret
pbs_check_match "a lease.never client is refused after its login" '^554 5\.7\.1' \
	"$(pbs_smtp_rcpt_reply 127.0.0.12 $REMOTE)"
pbs_check_match "... and the log says why" 'relay denied: client=127\.0\.0\.12 .*reason=never-lease' \
	"$(cat "$POLICY_LOG")"

# popbsmtpctl explain --gate policy answers what this Postfix answers (its mynetworks read
# with postconf from this instance's main.cf): refused, leased, mynetworks, lease.never.
for src in 127.0.0.7 127.0.0.6 127.0.0.1 127.0.0.12; do
	reply=$(pbs_smtp_rcpt_reply $src $REMOTE)
	postfix_says=$(sed -n 's/^\(250\) .*/\1/p; s/^\(5[0-9][0-9] [0-9.]*\) .*\(Relay access denied\).*/\1 \2/p' <<<"$reply")
	[ -n "$postfix_says" ] || postfix_says="(an unexpected reply: $reply)"
	explained=$(MAIL_CONFIG=$POSTFIX_CONF pbs_ctl explain --gate policy $src remote.example | head -n 1)
	explain_says=$(sed -n 's/.*: relay allowed — .*/250/p; s/.*: relay refused (\([^)]*\)) — .*/\1/p' <<<"$explained")
	pbs_check_eq "explain --gate policy $src agrees with Postfix ($reply)" "$postfix_says" "$explain_says"
done

# 50 relay recipients of one message: one GET
pbs_check_one_get 127.0.0.5 50

pbs_check_short_lease 127.0.0.9 $REMOTE
pbs_check_redis_outage 127.0.0.5 $REMOTE $LOCAL || exit 1

# ---- where the check goes: the three blocks of docs/postfix.md, as written ----
# placement TEXT — Postfix again, with the main.cf block that follows TEXT in the doc.
placement() {
	local settings
	mapfile -t settings < <(pbs_doc_block "$DOC" "$1" | pbs_main_cf_settings)
	pbs_check_match "docs/postfix.md has the block after '$1'" '^smtpd_recipient_restrictions = ' \
		"$(printf '%s\n' "${settings[@]}" | grep recipient)"
	pbs_start_postfix "policy:$POLICY_CMD" "$DOVECOT_AUTH_SOCKET" -- "$TIME_LIMIT" "${settings[@]}"
}
pbs_ctl grant 127.0.0.5 alice >/dev/null
placement '**right**, with anti-spam checks' || exit 1
pbs_check_match "right placement: a leased client relays" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.5 $REMOTE)"
pbs_check_match "right placement: the recipient restrictions still run for it" \
	'^504 5\.5\.2 <user@remote>: .*need fully-qualified' "$(pbs_smtp_rcpt_reply 127.0.0.5 user@remote)"
pbs_check_match "right placement: an unleased client is refused" '^554 5\.7\.1' \
	"$(pbs_smtp_rcpt_reply 127.0.0.7 $REMOTE)"
placement '**Wrong: the check in `smtpd_recipient_restrictions`' || exit 1
pbs_check_match "policy in the recipient restrictions: a leased client relays" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.5 $REMOTE)"
pbs_check_match "... but its OK skips the checks after it: a non-FQDN recipient is accepted" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.5 user@remote)"
pbs_check_match "... and an unleased client is still refused" '^554 5\.7\.1' \
	"$(pbs_smtp_rcpt_reply 127.0.0.7 $REMOTE)"
placement '**Wrong: a legacy `reject_unauth_destination`' || exit 1
before=$(grep -c 'relay allowed: client=127\.0\.0\.5 ' "$POLICY_LOG")
pbs_check_match "legacy reject_unauth_destination in the recipient restrictions: a leased client gets 554" \
	'^554 5\.7\.1 <user@remote\.example>: Relay access denied' "$(pbs_smtp_rcpt_reply 127.0.0.5 $REMOTE)"
pbs_check_eq "... although the gate said OK" $((before + 1)) \
	"$(grep -c 'relay allowed: client=127\.0\.0\.5 ' "$POLICY_LOG")"

# popbsmtp-policy unable to start: Postfix defers, never relays
printf 'lease: { ttl = 0; };\n' >"$PBS_TMP/bad.conf"
chmod 644 "$PBS_TMP/bad.conf"
for cmd in "$PBS_TMP/popbsmtp-policy -c $PBS_TMP/bad.conf" "$PBS_TMP/no-such-program -c $PBS_CONF"; do
	pbs_start_postfix "policy:$cmd" "" -- "$TIME_LIMIT" || exit 1
	what=${cmd%% *}
	what=$([ -e "$what" ] && echo "a bad config" || echo "a missing binary")
	pbs_smtp 127.0.0.5 $REMOTE >/dev/null
	pbs_check_match "popbsmtp-policy with $what: Postfix defers (4xx)" '^4[0-9][0-9] 4\.' \
		"$(pbs_rcpt_reply)"
	pbs_check_nomatch "... never 250" '^(RCPT|DATA|DOT).* 250 ' "$(pbs_smtp_transcript)"
done
pbs_check_match "the bad config was logged with its line" 'bad\.conf:1: lease\.ttl' "$(cat "$POLICY_LOG")"
pbs_done
