#!/bin/bash
# milter_sendmail.sh BUILD_DIR — the story of milter_postfix.sh on a real Sendmail 8.17: Redis,
# Dovecot running popbsmtp-postlogin, a private Sendmail with popbsmtp-milter as its relay gate
# (promiscuous_relay, F=T), smtp-sink as the next hop, and real clients (curl, swaks) from
# different 127.0.0.x addresses; last, with usage.trace_header on, forged X-PopBeforeSMTP
# headers deleted. Sendmail delivers before it answers DATA, so once a message is
# accepted it is already in the sink or the local mbox.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"    # smtp-sink and the swaks helpers
. "$here/lib/sendmail.sh"
. "$here/lib/milter.sh"
PBS_BIN=$(cd "$1" && pwd)

REMOTE=user@remote.example
LOCAL=postmaster@local.test.example

PBS_CONF_MILTER_EXTRA=$PBS_LOCAL_DOMAINS pbs_start_story_servers || exit 1
# A second listener on an IPv6 socket: IPv4 clients reach it as ::ffff:127.0.0.x.
PBS_SENDMAIL_MAPPED=1 pbs_start_sendmail "local:$MILTER_SOCKET" || exit 1
pbs_sendmail_add_user alice secret
SMTP_PORT=$SENDMAIL_PORT    # the swaks helpers talk to Sendmail

# relay_reply SRC RCPT… — the reply to the last RCPT of one session from SRC.
relay_reply() { pbs_smtp_rcpt_reply "$@"; }
# local_count — how many local deliveries Sendmail made (its local mailer marks each one).
local_count() { grep -c '^X-Pbs-Local-Rcpt: ' "$SENDMAIL_MBOX"; }

pbs_check_login_lease 127.0.0.5 $REMOTE

pbs_login_pop3 127.0.0.6 bob secret
pbs_check_eq "POP3 login from 127.0.0.6" 0 $?
pbs_check_match "after the POP3 login: relay accepted" '^250 ' "$(relay_reply 127.0.0.6 $REMOTE)"
pbs_sink_wait $REMOTE 2 && pbs_ok "that message reached the next hop too" ||
	pbs_fail "the message relayed after the POP3 login never reached the next hop"
pbs_check_match "another address is still refused" '^550 5\.7\.1' "$(relay_reply 127.0.0.7 $REMOTE)"

pbs_check_match "local recipient accepted without a lease" '^250 ' \
	"$(relay_reply 127.0.0.7 $LOCAL)"
pbs_check_eq "the local message was delivered" 1 "$(local_count)"
pbs_smtp 127.0.0.7 $LOCAL other@remote.example >/dev/null
pbs_check_match "local then relay in one transaction: the local one is accepted" '^250 ' \
	"$(pbs_rcpt_reply $LOCAL)"
pbs_check_match "local then relay in one transaction: the relay one is refused" '^550 5\.7\.1' \
	"$(pbs_rcpt_reply other@remote.example)"
pbs_check_eq "local then relay: delivered locally" 2 "$(local_count)"
pbs_check_eq "nothing for the refused recipient reached the next hop" 0 \
	"$(pbs_sink_count other@remote.example)"

pbs_check_match "SMTP AUTH relays without a lease" '^250 ' \
	"$(pbs_smtp_auth 127.0.0.8 alice secret $REMOTE >/dev/null; pbs_rcpt_reply)"
pbs_check_match "the AUTH relay is logged as such" \
	'relay allowed: client=127\.0\.0\.8 rcpt=<user@remote\.example> reason=auth' "$(cat "$MILTER_LOG")"
pbs_check_match "trusted network (127.0.0.1) relays without a lease" '^250 ' \
	"$(relay_reply 127.0.0.1 $REMOTE)"

# Clients of the IPv6 listener are ::ffff:127.0.0.x to Sendmail; it hands the milter the
# plain IPv4 address (family "4" in the connect packet), which must match the IPv4 lease.
pbs_check_match "Sendmail's second listener is an IPv6 socket on ::ffff:127.0.0.1" \
	'\[::ffff:127\.0\.0\.1\]:'"$SENDMAIL_MAPPED_PORT"'$' \
	"$(ss -Hltn "sport = :$SENDMAIL_MAPPED_PORT" | awk '{ print $4 }')"
pbs_login_pop3 127.0.0.10 bob secret
pbs_check_eq "POP3 login from 127.0.0.10" 0 $?
pbs_check_match "IPv4-mapped client with the IPv4 lease relays" '^250 ' \
	"$(SMTP_PORT=$SENDMAIL_MAPPED_PORT relay_reply 127.0.0.10 $REMOTE)"
pbs_check_match "IPv4-mapped client without a lease is refused" '^550 5\.7\.1' \
	"$(SMTP_PORT=$SENDMAIL_MAPPED_PORT relay_reply 127.0.0.11 $REMOTE)"
pbs_check_match "the milter logs the mapped client as IPv4" \
	'relay allowed: client=127\.0\.0\.10 rcpt=<user@remote\.example> reason=lease user=bob' \
	"$(cat "$MILTER_LOG")"
pbs_check_nomatch "no ::ffff: address reaches the log" '::ffff:' "$(cat "$MILTER_LOG")"

pbs_check_short_lease 127.0.0.9 $REMOTE
pbs_check_sender_routes 127.0.0.12
pbs_check_redis_outage 127.0.0.5 $REMOTE $LOCAL || exit 1

# Sendmail's "relay" mailer (the smart host) means *out*; the milter knows that only because
# it recognised Sendmail from the v macro. Unrecognised, it would say so once in its log.
pbs_check_nomatch "the milter recognised Sendmail (v macro)" 'not recognised' "$(cat "$MILTER_LOG")"

relayed=$(pbs_sink_count $REMOTE)
pbs_stop_milter
# F=T: Sendmail cannot reach the filter and defers the whole session at MAIL FROM.
pbs_check_match "milter stopped: Sendmail defers relay at MAIL FROM" \
	'^MAIL 451 4\.3\.2 Please try again later$' "$(pbs_smtp 127.0.0.5 $REMOTE | grep '^MAIL ')"
pbs_check_match "milter stopped: local mail is deferred too" '^MAIL 451 4\.3\.2 ' \
	"$(pbs_smtp 127.0.0.5 $LOCAL | grep '^MAIL ')"
pbs_check_eq "milter stopped: nothing more reached the next hop" "$relayed" \
	"$(pbs_sink_count $REMOTE)"
# Sendmail connects to the filter per SMTP session, so a restarted milter is used at once.
pbs_start_milter "$PBS_CONF" || exit 1
pbs_check_match "milter back: relay accepted again, Sendmail not restarted" '^250 ' \
	"$(relay_reply 127.0.0.5 $REMOTE)"

# usage.trace_header on: the client's own X-PopBeforeSMTP headers (five forms) are deleted
# through Sendmail's header changes too, whoever sends them; a leased message gets ours.
pbs_stop_milter
pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")" \
	'usage: { trace_header = "on"; };'
pbs_start_milter "$PBS_CONF" || exit 1
pbs_ctl grant 127.0.0.5 alice >/dev/null    # Redis was restarted empty
pbs_check_forged_trace "trace header on, forged headers from a leased client" 127.0.0.5 \
	fl@remote.example alice
pbs_check_forged_trace "trace header on, forged headers from a trusted client" 127.0.0.1 \
	ft@remote.example ""
pbs_check_forged_trace "trace header on, forged headers from an AUTH client" 127.0.0.8 \
	fa@remote.example "" -- -a PLAIN -au alice -ap secret
pbs_done
