#!/bin/bash
# limits.sh BUILD_DIR — relay limits, automatic suspension and lease.sender end to end, as a
# user of a leased client sees them, on real servers sharing one Redis: Postfix with
# popbsmtp-milter, a second Postfix with popbsmtp-policy (spawn(8)), Sendmail with
# popbsmtp-milter, smtp-sink as the next hop, Dovecot for Postfix's SMTP AUTH; leases
# written with popbsmtpctl grant, clients on 127.0.0.x (swaks, and lib/smtp_session.py for
# several messages in one connection).
#   limits (user 3, lease 5 relay recipients an hour): the 4th relay recipient of a login
#   gets 450 4.7.1, in one message and across messages, on every gate, counted once for the
#   fleet; other users, SMTP AUTH, trusted clients and local recipients are not limited;
#   the lease limit holds whoever holds the lease; the next hour of the store's clock
#   starts afresh; the 4th refusal in a day suspends the user (550 5.7.1, from the next
#   recipient on, within the same connection) until popbsmtpctl unsuspend.
#   lease.sender (address, then domain): MAIL FROM bound to the lease's user name, hostile
#   forms refused by popbsmtp or by the MTA itself, never leaving as another address; SMTP
#   AUTH and local mail not bound; with the limits off too, a lease revoked between two
#   messages of one connection stops the second.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"
. "$here/lib/sendmail.sh"
. "$here/lib/milter.sh"
pbs_build_dir_arg "$@"

LOCAL=postmaster@local.test.example
LIMIT_RE='^450 4\.7\.1 .*Relay limit reached for this login, try again later$'
SUSPENDED_RE='^550 5\.7\.1 .*Relay suspended for this login$'
ADDRESS_RE='^550 5\.7\.1 .*Sender must be the address this client logged in as$'
DOMAIN_RE='^550 5\.7\.1 .*Sender must be in the domain of the address this client logged in as$'
GATES="pm pp sm"
declare -A NAME=([pm]="Postfix+milter" [pp]="Postfix+policy" [sm]="Sendmail+milter")
# The refusal of a client without a lease: the milter's, or Postfix's own on the policy gate.
declare -A NO_LEASE_RE=([pm]='^550 5\.7\.1 .*Relay access denied' [pp]='^554 5\.7\.1 .*Relay access denied'
	[sm]='^550 5\.7\.1 .*Relay access denied')
declare -A PORT LOG

# ---- the servers: one Redis, three gates on three MTA instances ----
pbs_start_redis || bail "Redis did not start"
PBS_CONF=$PBS_TMP/popbsmtp.conf
PBS_CONF_LIMITS='user_recipients_per_hour = 3; lease_recipients_per_hour = 5; suspend_after = 4; suspend_for = 600;' \
	pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")"
# lease.sender: "address" with the limits off (the lease asked once per message), "domain"
# with them on (asked for every relay recipient).
PBS_CONF_LEASE_EXTRA='sender = "address";' \
	pbs_write_config "$PBS_TMP/address.conf" "$(pbs_milter_conf_group "$PBS_TMP/address.sock")"
PBS_CONF_LEASE_EXTRA='sender = "domain";' \
	PBS_CONF_LIMITS='user_recipients_per_hour = 100; lease_recipients_per_hour = 100;' \
	pbs_write_config "$PBS_TMP/domain.conf" "$(pbs_milter_conf_group "$PBS_TMP/domain.sock")"
pbs_start_dovecot "$PBS_BIN/hook/popbsmtp-postlogin" -c "$PBS_CONF" || bail "Dovecot did not start"
# Every milter from the start: libmilter takes up to 5 s to stop, a new one on its own
# socket is there at once.
for conf in address domain; do
	pbs_start_milter "$PBS_TMP/$conf.conf" "$PBS_TMP/milter-$conf.log" || bail "the $conf milter did not start"
done
pbs_start_milter "$PBS_CONF" "$PBS_TMP/milter.log" || bail "the milter did not start"
pbs_start_smtp_sink || bail "smtp-sink did not start"
pbs_policy_command "$PBS_CONF"

# start_gates CONF_NAME — the three MTA instances with the gates of $PBS_TMP/CONF_NAME.conf
# ("popbsmtp" is PBS_CONF), replacing those running. Sets PORT[gate], LOG[gate], PM_DIR, PP_DIR.
start_gates() {
	local sock=$PBS_TMP/$1.sock conf=$PBS_TMP/$1.conf
	[ "$1" = popbsmtp ] && sock=$PBS_TMP/milter.sock
	PBS_POSTFIX_NAME=postfix-milter pbs_start_postfix "unix:$sock" "$DOVECOT_AUTH_SOCKET" || return 1
	PORT[pm]=$POSTFIX_PORT PM_DIR=$POSTFIX_DIR
	PBS_POSTFIX_NAME=postfix-policy pbs_start_postfix "policy:$PBS_TMP/popbsmtp-policy -c $conf" \
		"$DOVECOT_AUTH_SOCKET" || return 1
	PORT[pp]=$POSTFIX_PORT PP_DIR=$POSTFIX_DIR
	pbs_start_sendmail "local:$sock" || return 1
	PORT[sm]=$SENDMAIL_PORT
	if [ "$1" = popbsmtp ]; then LOG[pm]=$PBS_TMP/milter.log; else LOG[pm]=$PBS_TMP/milter-$1.log; fi
	LOG[sm]=${LOG[pm]} LOG[pp]=$POLICY_LOG
}
start_gates popbsmtp || bail "an MTA did not start"
pbs_sendmail_add_user alice secret    # Dovecot has alice/secret for both Postfix instances

# ---- helpers ----
# via GATE SRC RCPT… [-- SWAKS_ARGS…] — one message from SRC through GATE (pbs_smtp).
via() { local gate=$1; shift; SMTP_PORT=${PORT[$gate]} pbs_smtp "$@" >/dev/null; }
# session GATE SRC STEP… — one connection from SRC through GATE with several messages
# (lib/smtp_session.py); its transcript in $PBS_TMP/session.out.
session() {
	local gate=$1 src=$2
	shift 2
	/usr/bin/python3 "$here/lib/smtp_session.py" "${PORT[$gate]}" "$src" "$@" \
		>"$PBS_TMP/session.out" 2>>"$PBS_TMP/session.err"
}
# said RCPT — the reply to RCPT in the last session.
said() { awk -v r="RCPT:$1" '$1 == r { sub(/^[^ ]* /, ""); print; exit }' "$PBS_TMP/session.out"; }
# ctl_cmd ARGS — popbsmtpctl ARGS as one shell command, for a session's "!" step.
ctl_cmd() { printf '%q -c %q %s >/dev/null' "$PBS_BIN/ctl/popbsmtpctl" "$PBS_CONF" "$*"; }
# relayed RCPT — ok when RCPT reached the next hop.
relayed() { pbs_sink_wait "$1" 1 2>/dev/null; }
# settled — both Postfix queues empty (Sendmail delivers before it answers DATA): what has
# not reached the next hop by now never will.
settled() { POSTFIX_DIR=$PM_DIR pbs_postfix_wait_queue && POSTFIX_DIR=$PP_DIR pbs_postfix_wait_queue; }
# count KIND WHO — the relay count of a user or lease (KIND user|lease) in the hour of the
# store's clock (HOUR_N), "" when none.
count() { pbs_redis_cli GET "popbsmtp:limit:$1:$HOUR_N:$2"; }
# clock MS — the store's clock (popbsmtp:clock) at MS: Redis TIME is hours behind it.
clock() { pbs_redis_cli SET popbsmtp:clock "$1" >/dev/null; }

# Every lease first. Then the store's clock a minute before the end of an hour two hours
# ahead (not the last of a day: the refusals counted for suspend_after are per day), so
# that every count falls in that hour whatever the time of day, a grant's tick of the
# clock (1 ms) included; its end starts the next hour.
for lease in 127.0.0.20:carol 127.0.0.1:carol 127.0.0.21:dave 127.0.0.22:heidi \
	127.0.0.23:ivan1 127.0.0.24:ivan2 127.0.0.25:ivan3 127.0.0.26:judy1 127.0.0.27:judy2 \
	127.0.0.28:judy3 127.0.0.30:frank 127.0.0.40:erin@client.example 127.0.0.41:erin@client.example; do
	pbs_ctl grant "${lease%%:*}" "${lease#*:}" >/dev/null || bail "grant $lease failed"
done
HOUR=$((($(date +%s) / 3600 + 2) * 3600))
[ $((HOUR % 86400)) = 0 ] && HOUR=$((HOUR + 3600))
HOUR_N=$((HOUR / 3600 - 1))
clock $((HOUR * 1000 - 60000))

# ---- 1. the limit, as one user sees it (Postfix+milter) ----
via pm 127.0.0.20 c1@remote.example c2@remote.example c3@remote.example c4@remote.example $LOCAL
pbs_check_eq "limit 3: carol's first 3 relay recipients in one message are accepted" "250 250 250" \
	"$(for r in c1 c2 c3; do pbs_rcpt_reply $r@remote.example | cut -c1-3; done | xargs)"
pbs_check_match "limit 3: the 4th recipient of that message gets 450 4.7.1, the limit's text" "$LIMIT_RE" \
	"$(pbs_rcpt_reply c4@remote.example)"
pbs_check_match "limit 3: a local recipient after it is accepted" '^250 ' "$(pbs_rcpt_reply $LOCAL)"
pbs_check_match "limit 3: the message is accepted for the others" '^DOT 250 ' "$(pbs_smtp_transcript | grep '^DOT')"
relayed c1@remote.example && relayed c2@remote.example && relayed c3@remote.example &&
	pbs_ok "limit 3: the 3 accepted relay recipients reached the next hop" ||
	pbs_fail "limit 3: an accepted relay recipient never reached the next hop"
POSTFIX_DIR=$PM_DIR pbs_local_wait $LOCAL 1 && pbs_ok "limit 3: the local recipient got the message" ||
	pbs_fail "limit 3: the local recipient never got the message"
pbs_check_match "limit 3: the deferral is logged with reason=rate-limit, the user and the lease" \
	'relay deferred: client=127\.0\.0\.20 rcpt=<c4@remote\.example> reason=rate-limit user=carol lease=127\.0\.0\.20 ' \
	"$(cat "${LOG[pm]}")"
via pm 127.0.0.20 c5@remote.example
pbs_check_match "limit 3: the next message's relay recipient is deferred too" "$LIMIT_RE" "$(pbs_rcpt_reply)"
via pm 127.0.0.20 $LOCAL
pbs_check_match "limit 3: a message to a local recipient alone is accepted" '^DOT 250 ' \
	"$(pbs_smtp_transcript | grep '^DOT')"
via pm 127.0.0.21 d1@remote.example
pbs_check_match "limit 3: another user (dave) relays" '^250 ' "$(pbs_rcpt_reply)"
relayed d1@remote.example && pbs_ok "limit 3: dave's message reached the next hop" ||
	pbs_fail "limit 3: dave's message never reached the next hop"
for gate in $GATES; do
	via "$gate" 127.0.0.20 "auth-$gate@remote.example" -- -a PLAIN -au alice -ap secret
	pbs_check_match "limit 3, ${NAME[$gate]}: SMTP AUTH from carol's leased address relays" '^250 ' \
		"$(pbs_rcpt_reply)"
done
via pm 127.0.0.1 trusted@remote.example
pbs_check_match "limit 3: a trusted client (127.0.0.1, leased to carol too) relays" '^250 ' "$(pbs_rcpt_reply)"
pbs_check_eq "limit 3: carol's count is her 3 relays by lease: AUTH, trusted, local and refused not counted" \
	3 "$(count user carol)"
pbs_check_eq "limit 3: no count for the AUTH user" "" "$(count user alice)"
settled
pbs_check_eq "limit 3: nothing for the deferred recipients reached the next hop" 0 \
	"$(($(pbs_sink_count c4@remote.example) + $(pbs_sink_count c5@remote.example)))"

# ---- 1b. the lease limit (5), whoever holds the lease (Postfix+policy) ----
via pp 127.0.0.30 f1@remote.example f2@remote.example f3@remote.example f4@remote.example
pbs_check_eq "lease limit: frank's 3 relay recipients accepted, the 4th deferred (his user limit)" \
	"250 250 250 450" "$(for r in f1 f2 f3 f4; do pbs_rcpt_reply $r@remote.example | cut -c1-3; done | xargs)"
pbs_ctl grant 127.0.0.30 grace >/dev/null
via pp 127.0.0.30 g1@remote.example g2@remote.example g3@remote.example
pbs_check_eq "lease limit: the lease passed to grace: 2 more accepted (5 on the lease)" "250 250" \
	"$(for r in g1 g2; do pbs_rcpt_reply $r@remote.example | cut -c1-3; done | xargs)"
pbs_check_match "lease limit: the lease's 6th relay recipient gets 450 4.7.1 though grace has relayed 2" \
	"$LIMIT_RE" "$(pbs_rcpt_reply g3@remote.example)"
pbs_check_eq "lease limit: counted 5 on the lease, 2 for grace" "5 2" "$(count lease 127.0.0.30) $(count user grace)"
pbs_check_match "lease limit: logged with reason=rate-limit, grace and the lease" \
	'relay deferred: client=127\.0\.0\.30 rcpt=<g3@remote\.example> reason=rate-limit user=grace lease=127\.0\.0\.30 ' \
	"$(cat "${LOG[pp]}")"

# ---- 2. one count for the fleet: three gates on three MTAs, one Redis ----
via pm 127.0.0.22 h1@remote.example h2@remote.example
pbs_check_eq "fleet: heidi relays 2 through Postfix+milter" "250 250" \
	"$(for r in h1 h2; do pbs_rcpt_reply $r@remote.example | cut -c1-3; done | xargs)"
via pp 127.0.0.22 h3@remote.example
pbs_check_match "fleet: ... and her 3rd through Postfix+policy" '^250 ' "$(pbs_rcpt_reply)"
n=4
for gate in sm pp pm; do
	via "$gate" 127.0.0.22 "h$n@remote.example"
	pbs_check_match "fleet: one more relay recipient of hers is deferred, wherever it goes: through ${NAME[$gate]}" "$LIMIT_RE" \
		"$(pbs_rcpt_reply)"
	pbs_check_eq "fleet: ... the reply naming the recipient once" 1 \
		"$(pbs_rcpt_reply | grep -o "<h$n@remote\.example>" | wc -l)"
	pbs_check_match "fleet: ... logged by the gate of ${NAME[$gate]}" \
		"relay deferred: client=127\.0\.0\.22 rcpt=<h$n@remote\.example> reason=rate-limit user=heidi lease=127\.0\.0\.22 " \
		"$(cat "${LOG[$gate]}")"
	n=$((n + 1))
done
pbs_check_eq "fleet: heidi's count is 3" 3 "$(count user heidi)"
relayed h1@remote.example && relayed h2@remote.example && relayed h3@remote.example &&
	pbs_ok "fleet: her 3 accepted recipients reached the next hop" ||
	pbs_fail "fleet: one of heidi's accepted recipients never reached the next hop"
settled
pbs_check_eq "fleet: none of the 3 deferred did" 0 \
	"$(($(pbs_sink_count h4@remote.example) + $(pbs_sink_count h5@remote.example) + $(pbs_sink_count h6@remote.example)))"

# ---- 4. suspension: the 4th refusal in a day suspends, within the same connection ----
n=23
for gate in $GATES; do
	user=ivan$((n - 22)) src=127.0.0.$n g=$gate
	session "$gate" "$src" 'MAIL FROM:<sender@client.example>' \
		"RCPT TO:<$g-a1@remote.example>" "RCPT TO:<$g-a2@remote.example>" "RCPT TO:<$g-a3@remote.example>" \
		"RCPT TO:<$g-a4@remote.example>" "RCPT TO:<$g-a5@remote.example>" "RCPT TO:<$g-a6@remote.example>" \
		"RCPT TO:<$g-a7@remote.example>" "RCPT TO:<$g-a8@remote.example>" DATA \
		'MAIL FROM:<sender@client.example>' "RCPT TO:<$g-b1@remote.example>" RSET
	pbs_check_eq "suspension, ${NAME[$gate]}: $user's first 3 accepted, the next 4 deferred" \
		"250 250 250 450 450 450 450" \
		"$(for r in a1 a2 a3 a4 a5 a6 a7; do said "$g-$r@remote.example" | cut -c1-3; done | xargs)"
	pbs_check_match "suspension, ${NAME[$gate]}: the 4th refusal suspended $user: the next recipient gets 550 5.7.1" \
		"$SUSPENDED_RE" "$(said "$g-a8@remote.example")"
	pbs_check_match "suspension, ${NAME[$gate]}: the message still goes to the 3 accepted" '^DOT 250 ' \
		"$(grep '^DOT' "$PBS_TMP/session.out")"
	pbs_check_match "suspension, ${NAME[$gate]}: the next message of the same connection is refused, suspended" \
		"$SUSPENDED_RE" "$(said "$g-b1@remote.example")"
	pbs_check_match "suspension, ${NAME[$gate]}: logged once as suspended: user=$user reason=rate-limit" \
		"suspended: user=$user reason=rate-limit limit=user-limit after=4 for=600 client=127\.0\.0\.$n lease=127\.0\.0\.$n" \
		"$(cat "${LOG[$gate]}")"
	pbs_check_eq "suspension, ${NAME[$gate]}: $user's suspension lasts suspend_for (600 s)" 1 \
		"$(t=$(pbs_redis_cli TTL "popbsmtp:suspended:$user"); [ "$t" -gt 590 ] && [ "$t" -le 600 ] && echo 1)"
	relayed "$g-a3@remote.example" && pbs_ok "suspension, ${NAME[$gate]}: the accepted recipients reached the next hop" ||
		pbs_fail "suspension, ${NAME[$gate]}: an accepted recipient never reached the next hop"
	n=$((n + 1))
done
pbs_check_eq "suspension: one suspended line per user, whichever gate" 3 \
	"$(cat "${LOG[pm]}" "${LOG[pp]}" | grep -c 'suspended: user=ivan')"

# popbsmtpctl suspend between two messages of one connection: the lease is revoked with
# the suspension, so the next message is refused as without a lease; unsuspended and
# granted again, the connection's third message relays.
n=26
for gate in $GATES; do
	user=judy$((n - 25)) src=127.0.0.$n g=$gate
	session "$gate" "$src" 'MAIL FROM:<sender@client.example>' "RCPT TO:<$g-j1@remote.example>" DATA \
		"!$(ctl_cmd suspend "$user")" 'MAIL FROM:<sender@client.example>' "RCPT TO:<$g-j2@remote.example>" RSET \
		"!$(ctl_cmd unsuspend "$user") && $(ctl_cmd grant "$src" "$user")" \
		'MAIL FROM:<sender@client.example>' "RCPT TO:<$g-j3@remote.example>" DATA
	pbs_check_match "popbsmtpctl suspend, ${NAME[$gate]}: $user's first message relays" '^250 ' \
		"$(said "$g-j1@remote.example")"
	pbs_check_match "popbsmtpctl suspend, ${NAME[$gate]}: the same connection's next message is refused" \
		"${NO_LEASE_RE[$gate]}" "$(said "$g-j2@remote.example")"
	pbs_check_match "popbsmtpctl unsuspend and a new grant, ${NAME[$gate]}: its third message relays" '^250 ' \
		"$(said "$g-j3@remote.example")"
	relayed "$g-j3@remote.example" && pbs_ok "popbsmtpctl unsuspend, ${NAME[$gate]}: that message reached the next hop" ||
		pbs_fail "popbsmtpctl unsuspend, ${NAME[$gate]}: that message never reached the next hop"
	n=$((n + 1))
done

# ---- 3. the next hour of the store's clock: every count starts again ----
clock $((HOUR * 1000))
HOUR_N=$((HOUR / 3600))
via pm 127.0.0.20 n-carol@remote.example
pbs_check_match "next hour: carol relays again (Postfix+milter)" '^250 ' "$(pbs_rcpt_reply)"
relayed n-carol@remote.example && pbs_ok "next hour: carol's message reached the next hop" ||
	pbs_fail "next hour: carol's message never reached the next hop"
pbs_check_eq "next hour: counted in the new hour's key" 1 "$(count user carol)"
for gate in sm pp; do
	via "$gate" 127.0.0.22 "n-heidi-$gate@remote.example"
	pbs_check_match "next hour: heidi relays again through ${NAME[$gate]}" '^250 ' "$(pbs_rcpt_reply)"
done
via pp 127.0.0.30 n-grace@remote.example
pbs_check_match "next hour: the lease over its limit relays again" '^250 ' "$(pbs_rcpt_reply)"
n=23
for gate in $GATES; do
	user=ivan$((n - 22)) src=127.0.0.$n g=$gate
	session "$gate" "$src" 'MAIL FROM:<sender@client.example>' "RCPT TO:<$g-x1@remote.example>" RSET \
		"!$(ctl_cmd unsuspend "$user")" 'MAIL FROM:<sender@client.example>' "RCPT TO:<$g-x2@remote.example>" DATA
	pbs_check_match "next hour, ${NAME[$gate]}: $user is still suspended (a new hour lifts no suspension)" \
		"$SUSPENDED_RE" "$(said "$g-x1@remote.example")"
	pbs_check_match "popbsmtpctl unsuspend, ${NAME[$gate]}: $user's lease relays again, same connection" '^250 ' \
		"$(said "$g-x2@remote.example")"
	relayed "$g-x2@remote.example" && pbs_ok "popbsmtpctl unsuspend, ${NAME[$gate]}: reached the next hop" ||
		pbs_fail "popbsmtpctl unsuspend, ${NAME[$gate]}: never reached the next hop"
	n=$((n + 1))
done

# ---- 5. lease.sender: MAIL FROM bound to the lease's user, erin@client.example ----
# sender_round GATE RE OUTCOME:FORM… — one connection from 127.0.0.40 through GATE, one
# message per FORM (MAIL FROM:<FORM>): OUTCOME "ok" relayed and leaving with a sender that
# matches LEAVES_RE (lower case), "gate" refused at RCPT with RE, "mta" refused at MAIL by
# the MTA itself. MODE names the round.
sender_round() {
	local gate=$1 re=$2 steps=() item i=0 rcpt what
	shift 2
	for item in "$@"; do
		i=$((i + 1))
		steps+=("MAIL FROM:<${item#*:}>" "RCPT TO:<$gate-$MODE-s$i@remote.example>" DATA RSET)
	done
	session "$gate" 127.0.0.40 "${steps[@]}"
	i=0
	for item in "$@"; do
		i=$((i + 1))
		rcpt=$gate-$MODE-s$i@remote.example
		what="lease.sender = $MODE, ${NAME[$gate]}: MAIL FROM:<${item#*:}>"
		case ${item%%:*} in
		ok)
			pbs_check_match "$what relays" '^250 ' "$(said "$rcpt")"
			relayed "$rcpt" && pbs_check_match "$what leaves as $LEAVES" "^x-mail-args: $LEAVES_RE" \
				"$(grep -l -iE "^X-Rcpt-Args: <$(pbs_re_quote "$rcpt")>" -r "$SINK_DIR" |
					xargs -r grep -h '^X-Mail-Args:' | tr 'A-Z' 'a-z')" ||
				pbs_fail "$what: accepted but never reached the next hop"
			;;
		gate) pbs_check_match "$what is refused by popbsmtp, 550 5.7.1 naming the rule" "$re" "$(said "$rcpt")" ;;
		mta)
			pbs_check_match "$what is refused by the MTA itself at MAIL" '^5[0-9][0-9] ' \
				"$(awk -v n="$i" '$1 == "MAIL" && ++m == n { sub(/^[^ ]* /, ""); print }' "$PBS_TMP/session.out")"
			;;
		esac
	done
}

start_gates address || bail "an MTA did not start with lease.sender = address"
MODE=address LEAVES="the lease's user" LEAVES_RE='<erin@client\.example>'
# The forms every gate refuses, then the ones an MTA reads differently (see below).
REFUSED=(gate:frank@client.example gate: gate:erin%evil.example@client.example
	'gate:evil.example!erin@client.example' 'gate:"erin@client.example"@evil.example'
	gate:erin@client.example.evil.example)
# Postfix hands its milter the sender as the client wrote it, but its policy service the
# address it parsed: the quotes of "erin" and a source route gone, the address erin's own
# (it relays as that). Sendmail refuses a second @ and an address literal itself.
sender_round pm "$ADDRESS_RE" ok:erin@client.example ok:ERIN@Client.Example "${REFUSED[@]}" \
	'gate:"erin"@client.example' gate:@evil.example:erin@client.example \
	gate:erin@client.example@evil.example 'gate:erin@[127.0.0.1]'
sender_round pp "$ADDRESS_RE" ok:erin@client.example ok:ERIN@Client.Example "${REFUSED[@]}" \
	'ok:"erin"@client.example' ok:@evil.example:erin@client.example \
	gate:erin@client.example@evil.example 'gate:erin@[127.0.0.1]'
sender_round sm "$ADDRESS_RE" ok:erin@client.example ok:ERIN@Client.Example "${REFUSED[@]}" \
	'gate:"erin"@client.example' gate:@evil.example:erin@client.example \
	mta:erin@client.example@evil.example 'mta:erin@[127.0.0.1]'
for gate in $GATES; do
	via "$gate" 127.0.0.40 "auth-s-$gate@remote.example" -- --from other@elsewhere.example -a PLAIN -au alice -ap secret
	pbs_check_match "lease.sender, ${NAME[$gate]}: SMTP AUTH is not bound" '^250 ' "$(pbs_rcpt_reply)"
	via "$gate" 127.0.0.40 $LOCAL -- --from other@elsewhere.example
	pbs_check_match "lease.sender, ${NAME[$gate]}: local mail is not bound" '^250 ' "$(pbs_rcpt_reply)"
	# Limits off: the lease is asked once per message, so a revoke stops the next one.
	session "$gate" 127.0.0.41 'MAIL FROM:<erin@client.example>' "RCPT TO:<rv1-$gate@remote.example>" DATA \
		"!$(ctl_cmd revoke 127.0.0.41)" 'MAIL FROM:<erin@client.example>' "RCPT TO:<rv2-$gate@remote.example>" RSET \
		"!$(ctl_cmd grant 127.0.0.41 erin@client.example)"
	pbs_check_match "lease.sender, limits off, ${NAME[$gate]}: a message relays" '^250 ' "$(said "rv1-$gate@remote.example")"
	pbs_check_match "... and after popbsmtpctl revoke, the same connection's next message is refused" \
		"${NO_LEASE_RE[$gate]}" "$(said "rv2-$gate@remote.example")"
done
pbs_check_match "lease.sender: the refusal is logged with reason=sender-address and the lease" \
	'relay denied: client=127\.0\.0\.40 rcpt=<pm-address-s3@remote\.example> reason=sender-address user=erin@client\.example lease=127\.0\.0\.40 ' \
	"$(cat "${LOG[pm]}")"

start_gates domain || bail "an MTA did not start with lease.sender = domain"
MODE=domain LEAVES="an address of its domain" LEAVES_RE='<[a-z]+@client\.example>'
for gate in $GATES; do
	sender_round "$gate" "$DOMAIN_RE" ok:frank@client.example ok:Frank@CLIENT.example ok:erin@client.example \
		gate:frank@sub.client.example gate:frank@evilclient.example gate:frank@client.example.evil.example \
		gate: gate:frank%evil.example@client.example
done
pbs_done
