#!/bin/bash
# policy_daemon_postfix.sh BUILD_DIR — the story end to end with the policy daemon
# standalone: one popbsmtp-policy -L (started as root, socket group postfix, running as
# nobody) for every smtpd of a real Postfix that asks it with docs/postfix.md's
# "Standalone" main.cf block, as written but for the socket path; Redis, Dovecot running
# popbsmtp-postlogin, smtp-sink as the next hop, real clients. Refused, IMAP and POP3
# logins, relayed and delivered, local mail, AUTH, one GET per message, a revoke, Redis
# down (451 4.3.0, recovered without a restart), the daemon stopped (Postfix's 451 4.3.5,
# nothing relayed) and started again.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"
. "$here/lib/milter.sh"
PBS_BIN=$(cd "$1" && pwd)
POLICY=$PBS_BIN/policy/popbsmtp-policy

REMOTE=user@remote.example
LOCAL=postmaster@local.test.example
DOC="$here/../../docs/postfix.md"
SOCKDIR=$PBS_TMP/policyd
SOCK=$SOCKDIR/policy.sock
install -d -m 0755 "$SOCKDIR"
mapfile -t MAIN_CF < <(pbs_doc_block "$DOC" '(no `master.cf`' | pbs_main_cf_settings |
	sed "s|unix:/run/popbsmtp-policy/policy.sock|unix:$SOCK|")
pbs_check_match "docs/postfix.md gives the standalone main.cf block" \
	"^smtpd_relay_restrictions = .*check_policy_service unix:$SOCK, reject_unauth_destination\$" \
	"$(printf '%s\n' "${MAIN_CF[@]}")"

# The daemon's socket for Postfix's smtpd (user postfix).
pbs_start_story_daemon "$SOCK" postfix || exit 1
pbs_check_eq "the daemon's socket: group postfix, mode 0660" "660 postfix" "$(stat -c '%a %G' "$SOCK")"
pbs_start_postfix "" "$DOVECOT_AUTH_SOCKET" -- "${MAIN_CF[@]}" || exit 1
pbs_check_nomatch "Postfix takes the documented lines without a warning" 'warning' \
	"$(postconf -c "$POSTFIX_CONF" -n 2>&1 >/dev/null; cat "$POSTFIX_LOG")"

pbs_check_policy_story $REMOTE $LOCAL
pbs_check_match "SMTP AUTH relays without a lease" '^250 ' \
	"$(pbs_smtp_auth 127.0.0.8 alice secret $REMOTE >/dev/null; pbs_rcpt_reply)"

# 20 relay recipients of one message: one GET
pbs_check_one_get 127.0.0.5 20

pbs_ctl revoke 127.0.0.6 >/dev/null
pbs_check_match "a revoked lease: refused" '^554 5\.7\.1' "$(pbs_smtp_rcpt_reply 127.0.0.6 $REMOTE)"
pbs_check_short_lease 127.0.0.9 $REMOTE
pbs_check_redis_outage 127.0.0.5 $REMOTE $LOCAL || exit 1

# the daemon stopped: Postfix defers every relay recipient, never relays
kill -TERM "$DAEMON_PID"
wait "$DAEMON_PID"
pbs_check_eq "SIGTERM: the daemon exits 0" 0 $?
n0=$(pbs_sink_count late@remote.example)
pbs_smtp 127.0.0.5 late@remote.example >/dev/null
pbs_check_match "daemon stopped: Postfix defers (451 4.3.5)" '^451 4\.3\.5' "$(pbs_rcpt_reply)"
pbs_check_nomatch "... never 250" '^(RCPT|DATA|DOT).* 250 ' "$(pbs_smtp_transcript)"
pbs_check_match "daemon stopped: local mail still accepted" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.7 $LOCAL)"
pbs_story_daemon
pbs_check_match "the daemon started again: the leased client relays, Postfix untouched" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.5 $REMOTE)"
pbs_postfix_wait_queue
pbs_check_eq "nothing for the deferred recipient reached the next hop" "$n0" \
	"$(pbs_sink_count late@remote.example)"
pbs_done
