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

PBS_CONF_MILTER_EXTRA=$PBS_LOCAL_DOMAINS pbs_start_story_servers || exit 1
pbs_start_postfix "unix:$MILTER_SOCKET" "$DOVECOT_AUTH_SOCKET" || exit 1

# relay_reply SRC RCPT… — the reply to the last RCPT of one session from SRC.
relay_reply() { pbs_smtp_rcpt_reply "$@"; }

pbs_check_login_lease 127.0.0.5 $REMOTE

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

pbs_check_short_lease 127.0.0.9 $REMOTE
pbs_check_sender_routes 127.0.0.12
pbs_check_redis_outage 127.0.0.5 $REMOTE $LOCAL || exit 1

pbs_stop_milter
pbs_check_match "milter stopped: Postfix defers, never relays" '^4[0-9][0-9] 4\.' \
	"$(pbs_smtp 127.0.0.5 $REMOTE | grep -E '^(MAIL|RCPT)' | grep -E ' [45][0-9][0-9] ' | head -n 1 | cut -d' ' -f2-)"
pbs_done
