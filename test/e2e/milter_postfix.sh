#!/bin/bash
# milter_postfix.sh BUILD_DIR — the whole story end to end on real servers: Redis, Dovecot
# running popbsmtp-postlogin, Postfix with popbsmtp-milter as its relay gate, smtp-sink as
# the next hop, and real clients (curl, swaks) from different 127.0.0.x addresses.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"
. "$here/lib/milter.sh"
PBS_BIN=$(cd "$1" && pwd)

REMOTE=user@remote.example
LOCAL=postmaster@local.test.example

pbs_start_redis || exit 1
PBS_CONF="$PBS_TMP/popbsmtp.conf"
pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")"
pbs_start_dovecot "$PBS_BIN/hook/popbsmtp-postlogin" -c "$PBS_CONF" || exit 1
pbs_start_milter "$PBS_CONF" || exit 1
pbs_start_smtp_sink || exit 1
pbs_start_postfix "unix:$MILTER_SOCKET" "$DOVECOT_AUTH_SOCKET" || exit 1

# relay_reply SRC RCPT… — the reply to the last RCPT of one session from SRC.
relay_reply() { pbs_smtp_rcpt_reply "$@"; }

pbs_check_match "no lease: relay refused" '^550 5\.7\.1 .*Relay access denied' \
	"$(relay_reply 127.0.0.5 $REMOTE)"

pbs_login_imap 127.0.0.5 alice secret
pbs_check_eq "IMAP login from 127.0.0.5" 0 $?
pbs_check_match "after the IMAP login: relay accepted" '^250 ' "$(relay_reply 127.0.0.5 $REMOTE)"
pbs_sink_wait $REMOTE 1 && pbs_ok "the relayed message reached the next hop" ||
	pbs_fail "the relayed message never reached the next hop"
pbs_check_match "the decision is logged with the lease's user" \
	'relay allowed: client=127\.0\.0\.5 rcpt=<user@remote\.example> reason=lease user=alice' \
	"$(cat "$MILTER_LOG")"
pbs_check_accepted_message 127.0.0.5

pbs_login_pop3 127.0.0.6 bob secret
pbs_check_eq "POP3 login from 127.0.0.6" 0 $?
pbs_check_match "after the POP3 login: relay accepted" '^250 ' "$(relay_reply 127.0.0.6 $REMOTE)"
pbs_check_match "another address is still refused" '^550 5\.7\.1' "$(relay_reply 127.0.0.7 $REMOTE)"

pbs_check_match "local recipient accepted without a lease" '^250 ' \
	"$(relay_reply 127.0.0.7 $LOCAL)"
pbs_smtp 127.0.0.7 $LOCAL other@remote.example >/dev/null
pbs_check_match "local then relay in one transaction: the local one is accepted" '^250 ' \
	"$(pbs_rcpt_reply $LOCAL)"
pbs_check_match "local then relay in one transaction: the relay one is refused" '^550 5\.7\.1' \
	"$(pbs_rcpt_reply other@remote.example)"
pbs_postfix_wait_queue
pbs_check_eq "nothing for the refused recipient reached the next hop" 0 \
	"$(pbs_sink_count other@remote.example)"

pbs_check_match "SMTP AUTH relays without a lease" '^250 ' \
	"$(pbs_smtp_auth 127.0.0.8 alice secret $REMOTE >/dev/null; pbs_rcpt_reply)"
pbs_check_match "trusted network (127.0.0.1) relays without a lease" '^250 ' \
	"$(relay_reply 127.0.0.1 $REMOTE)"

pbs_ctl grant 2001:db8:1:2::1 dave >/dev/null
pbs_check_match "IPv6 client inside a leased /64 relays (XCLIENT)" '^250 ' \
	"$(pbs_smtp_xclient IPV6:2001:db8:1:2::77 $REMOTE >/dev/null; pbs_rcpt_reply)"
pbs_check_match "IPv6 client outside the leased /64 is refused" '^550 5\.7\.1' \
	"$(pbs_smtp_xclient IPV6:2001:db8:1:3::77 $REMOTE >/dev/null; pbs_rcpt_reply)"

pbs_ctl grant 127.0.0.9 carol --ttl 2 >/dev/null
pbs_check_match "a short lease relays while it lives" '^250 ' "$(relay_reply 127.0.0.9 $REMOTE)"
sleep 2.5
pbs_check_match "after its TTL the lease is gone: refused" '^550 5\.7\.1' \
	"$(relay_reply 127.0.0.9 $REMOTE)"

pbs_stop_redis
pbs_check_match "Redis stopped: relay deferred" '^451 4\.3\.0' "$(relay_reply 127.0.0.5 $REMOTE)"
pbs_check_match "Redis stopped: local mail still accepted" '^250 ' \
	"$(relay_reply 127.0.0.5 $LOCAL)"
pbs_login_imap 127.0.0.5 alice secret
pbs_check_eq "Redis stopped: IMAP login still works" 0 $?

pbs_restart_redis main "$REDIS_PORT" || exit 1
# The restarted Redis is empty; the milter's backoff after the outage lasts at most 0.5 s.
sleep 0.6
pbs_login_imap 127.0.0.5 alice secret
pbs_check_match "Redis back: a new login relays again, no restart needed" '^250 ' \
	"$(relay_reply 127.0.0.5 $REMOTE)"

pbs_stop_milter
pbs_check_match "milter stopped: Postfix defers, never relays" '^4[0-9][0-9] 4\.' \
	"$(pbs_smtp 127.0.0.5 $REMOTE | grep -E '^(MAIL|RCPT)' | grep -E ' [45][0-9][0-9] ' | head -n 1 | cut -d' ' -f2-)"
pbs_done
