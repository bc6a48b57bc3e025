#!/bin/bash
# plugin_dovecot.sh BUILD_DIR — end-to-end test of the Dovecot mail plugin
# (lib90_popbsmtp_plugin.so) on a private Dovecot, Redis, milter and Postfix: an IMAP session
# held open in IDLE keeps its lease for many times lease.ttl and relays at the end; after
# logout the lease ends within lease.ttl; revoke --user and revoke ADDR win over open
# sessions, a new login gets relay back, a lease another user's login took over is not kept
# alive by the session; POP3 logins get a lease, LMTP, LDA and doveadm none; the config is
# read although the mail user cannot read it; Redis stopped during a session
# costs one log line and no session, and after Redis restarts empty the lease is back within
# one refresh; a bad config costs one line and no login; plugin and hook at once still behave.
# Usage (as root): test/e2e/plugin_dovecot.sh build — TAP on stdout.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"
. "$here/lib/postfix.sh"
. "$here/lib/milter.sh"

pbs_plugin_test_start "$@"
plugin_dir=$PLUGIN_DIR
TTL=3       # short, so that a session outliving 3 x ttl takes seconds
REFRESH=1
REMOTE=user@remote.example

PBS_CONF="$PBS_TMP/popbsmtp.conf"
# write_conf — the test's config: ttl, refresh, and the milter's group.
write_conf() {
	PBS_CONF_TTL=$TTL PBS_CONF_LEASE_EXTRA="refresh = $REFRESH;" \
		pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")"
}
pbs_start_redis || bail "cannot start redis-server"
write_conf
# The mail processes run as the user's uid (nobody here), and must not be able to read the
# config (it holds the Redis credential): the plugin reads it as root, when it is loaded.
chmod 600 "$PBS_CONF"
runuser -u nobody -- test -r "$PBS_CONF" && bail "$PBS_CONF: readable by nobody"
pbs_start_dovecot_plugin "$plugin_dir" "$PBS_CONF" || bail "cannot start dovecot"
pbs_start_milter "$PBS_CONF" || bail "cannot start the milter"
pbs_start_smtp_sink || bail "cannot start smtp-sink"
pbs_start_postfix "unix:$MILTER_SOCKET" "$DOVECOT_AUTH_SOCKET" || bail "cannot start postfix"

lease() { pbs_redis_cli GET "popbsmtp:lease:$1"; }
leases() { pbs_redis_cli --scan --pattern 'popbsmtp:lease:*' | sort | tr '\n' ' '; }

# wait_lease IP yes|no SECONDS — wait up to SECONDS for IP's lease to exist (yes) or be gone
# (no). Returns 0 once it does.
wait_lease() {
	local want=$([ "$2" = yes ] && echo 1 || echo 0) i=0
	while [ $i -lt $(($3 * 20)) ]; do
		[ "$(pbs_redis_cli EXISTS "popbsmtp:lease:$1")" = "$want" ] && return 0
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

# plugin_errors MARK — the plugin's error lines in Dovecot's log since MARK.
plugin_errors() { pbs_dovecot_log_since "$1" | grep 'Error: popbsmtp:'; }

# ---- an IMAP session in IDLE keeps its lease far beyond lease.ttl ----

mark=$(pbs_dovecot_log_mark)
pbs_idle_start idle alice 127.0.0.5
pbs_check_eq "IMAP session from 127.0.0.5 logged in and idling" 1 "$PBS_IDLE_OK"
first=$(lease 127.0.0.5)
pbs_check_match "the login wrote the hook's lease: 1|<time>|imap|alice" '^1\|[0-9]+\|imap\|alice$' "$first"
pbs_check_le "its TTL is lease.ttl at most" $TTL "$(pbs_redis_cli TTL popbsmtp:lease:127.0.0.5)"
pbs_check_match "the grant was counted in the same round trip (source plugin)" \
	'^[^|]+\|plugin\|granted\|lease 1$' "$(pbs_redis_cli HGETALL popbsmtp:stat:total | paste -d' ' - -)"
sleep $((3 * TTL + 1))
pbs_check_eq "after more than 3 x lease.ttl in IDLE: the same lease is still there" "$first" \
	"$(lease 127.0.0.5)"
pbs_check_match "and relay from 127.0.0.5 through Postfix and the milter is accepted" '^250 ' \
	"$(pbs_smtp_rcpt_reply 127.0.0.5 $REMOTE)"
if pbs_sink_wait $REMOTE 1; then pbs_ok "the relayed message reached the next hop"
else pbs_fail "the relayed message never reached the next hop"; fi
pbs_idle_cmd idle noop
pbs_check_eq "the session still answers NOOP" 1 "$PBS_IDLE_OK"
pbs_idle_cmd idle logout
pbs_check_eq "logout" 1 "$PBS_IDLE_OK"
if wait_lease 127.0.0.5 no $((TTL + 1)); then pbs_ok "after logout the lease is gone within lease.ttl"
else pbs_fail "the lease outlived the session by more than lease.ttl"; fi
pbs_check_eq "no plugin error for a plain session" "" "$(plugin_errors "$mark")"

# ---- POP3 gets a lease; LMTP, LDA and doveadm get none ----

pbs_login_pop3 127.0.0.9 bob "$DOVECOT_PASS"
pbs_check_eq "POP3 login as bob from 127.0.0.9" 0 $?
pbs_check_match "the POP3 login left a lease: 1|<time>|pop3|bob" '^1\|[0-9]+\|pop3\|bob$' "$(lease 127.0.0.9)"

before=$(leases)
/usr/bin/python3 - "$DOVECOT_LMTP_PORT" <<'PY'
import smtplib, sys
s = smtplib.LMTP("127.0.0.1", int(sys.argv[1]), source_address=("127.0.0.10", 0))
s.sendmail("sender@remote.example", ["alice"], "Subject: lmtp\r\n\r\nhello\r\n")
s.quit()
PY
pbs_check_eq "an LMTP delivery from 127.0.0.10 to alice succeeds" 0 $?
printf 'Subject: lda\n\nhello\n' | /usr/lib/dovecot/dovecot-lda -c "$DOVECOT_CONF" -d alice \
	-f sender@remote.example
pbs_check_eq "an LDA delivery to alice succeeds" 0 $?
pbs_check_match "doveadm sees both messages in alice's INBOX" 'messages=2' \
	"$(doveadm -c "$DOVECOT_CONF" mailbox status -u alice messages INBOX 2>&1)"
pbs_check_eq "LMTP, LDA and doveadm wrote no lease" "$before" "$(leases)"
pbs_check_eq "no lease for the LMTP client 127.0.0.10" 0 "$(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.10)"

# ---- revoke wins over open sessions; a new login gets relay back ----

pbs_idle_start rv alice 127.0.0.6
pbs_idle_start bo bob 127.0.0.7
pbs_idle_start to alice 127.0.0.8
pbs_check_eq "three more sessions idling" 3 \
	"$(($(pbs_idle_answer rv 0 ready) + $(pbs_idle_answer bo 0 ready) + $(pbs_idle_answer to 0 ready)))"
mark=$(pbs_dovecot_log_mark)
pbs_ctl revoke --user alice >/dev/null
pbs_check_eq "revoke --user alice: exit 0" 0 $?
pbs_ctl revoke 127.0.0.7 >/dev/null
pbs_check_eq "revoke 127.0.0.7 (bob's session): exit 0" 0 $?
sleep $((3 * REFRESH + 1))
pbs_check_eq "3 refreshes later alice's and bob's revoked leases are still gone" "0 0 0" \
	"$(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.6) $(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.7) $(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.8)"
pbs_check_eq "each revoked session logged once that it stops refreshing" 3 \
	"$(pbs_dovecot_log_since "$mark" | grep -c 'popbsmtp: lease for 127\.0\.0\.[678] revoked; no longer refreshed')"
pbs_idle_cmd rv noop
pbs_check_eq "the revoked sessions go on (NOOP answered)" 1 "$PBS_IDLE_OK"
pbs_login_imap 127.0.0.6 alice "$DOVECOT_PASS"
pbs_check_match "a new login from 127.0.0.6 gets a lease again" '^1\|[0-9]+\|imap\|alice$' "$(lease 127.0.0.6)"
pbs_check_match "and relays again" '^250 ' "$(pbs_smtp_rcpt_reply 127.0.0.6 $REMOTE)"

# Another login takes the address of an open session over: bob's POP3 login at 127.0.0.11,
# where alice idles, ends at once. Alice's session does not keep bob's lease alive (it is
# not hers: a session of hers revoked later must keep nothing alive); once bob's lease has
# expired, her session writes her own back.
pbs_idle_start ov alice 127.0.0.11
pbs_login_pop3 127.0.0.11 bob "$DOVECOT_PASS"
taken=$(lease 127.0.0.11)
pbs_check_match "bob's POP3 login took 127.0.0.11 over" '^1\|[0-9]+\|pop3\|bob$' "$taken"
# After 1.5 refreshes bob's lease has less than TTL - 1.3 s left: no refresh touched it.
sleep 1.5
pbs_check_le "alice's open session leaves bob's lease's TTL alone (PTTL, ms)" $((TTL * 1000 - 1300)) \
	"$(pbs_redis_cli PTTL popbsmtp:lease:127.0.0.11)"
sleep $((TTL + REFRESH))
pbs_check_match "after bob's lease expired, alice's session wrote hers back" '^1\|[0-9]+\|imap\|alice$' \
	"$(lease 127.0.0.11)"
for g in rv bo to ov; do pbs_idle_cmd "$g" logout; done

# ---- Redis stopped during a session, then back empty ----

pbs_idle_start out alice 127.0.0.12
kept=$(lease 127.0.0.12)
mark=$(pbs_dovecot_log_mark)
pbs_stop_redis
sleep $((4 * REFRESH + 1))
pbs_idle_cmd out noop
pbs_check_eq "Redis stopped for 4 refreshes: the session keeps working" 1 "$PBS_IDLE_OK"
pbs_check_eq "one plugin error line for the outage, not one per refresh" 1 \
	"$(plugin_errors "$mark" | grep -c '127\.0\.0\.12')"
pbs_restart_redis main "$REDIS_PORT" || bail "cannot restart redis-server"
if wait_lease 127.0.0.12 yes $((REFRESH + 2)); then pbs_ok "Redis back empty: the lease is back within one refresh"
else pbs_fail "Redis back empty: the lease did not come back"; fi
pbs_check_eq "the lease back is the session's own" "$kept" "$(lease 127.0.0.12)"
sleep $((2 * REFRESH))
pbs_check_eq "still one error line in all after the recovery" 1 "$(plugin_errors "$mark" | wc -l)"
pbs_idle_cmd out logout

# ---- a login while Redis is down: no lease then, counted as a failed grant once back ----

pbs_stop_redis
pbs_idle_start late alice 127.0.0.16
pbs_check_eq "Redis down: the IMAP login from 127.0.0.16 still succeeds" 1 "$PBS_IDLE_OK"
pbs_restart_redis main "$REDIS_PORT" || bail "cannot restart redis-server"
if wait_lease 127.0.0.16 yes $((REFRESH + 2)); then pbs_ok "Redis back: the first refresh writes that login's lease"
else pbs_fail "Redis back: the lease of the login made during the outage never came"; fi
# failed_grants — the plugin's failed-grant counter lines (FIELD COUNT).
failed_grants() { pbs_redis_cli HGETALL popbsmtp:stat:total | paste -d' ' - - | grep '|failed|'; }
i=0
while [ -z "$(failed_grants)" ] && [ $i -lt 40 ]; do sleep 0.05; i=$((i + 1)); done
pbs_check_match "the failed grant is counted once Redis answers (source plugin)" \
	'^[^|]+\|plugin\|failed\|store-error 1$' "$(failed_grants)"
sleep $((2 * REFRESH))
pbs_check_match "... and only once" '^[^|]+\|plugin\|failed\|store-error 1$' "$(failed_grants)"
pbs_idle_cmd late logout

# ---- the plugin's Redis user, as docs/ha.md gives it ----

acl=$(sed -n 's/^\(ACL SETUSER plugin .*\)$/\1/p' "$here/../../docs/ha.md")
pbs_check_match "docs/ha.md gives the plugin's ACL line" '^ACL SETUSER plugin ' "$acl"
# shellcheck disable=SC2086 # the line's words, as an administrator pastes them
pbs_redis_cli ${acl/PLUGIN-PASSWORD/plugin-secret} >/dev/null
printf 'redis: { host = "127.0.0.1"; port = %s; username = "plugin"; password = "plugin-secret"; timeout_ms = 250; };\nlease: { ttl = %s; refresh = %s; };\n' \
	"$REDIS_PORT" "$TTL" "$REFRESH" >"$PBS_CONF"
mark=$(pbs_dovecot_log_mark)
# grants — how many grants the plugin has counted so far.
grants() { pbs_redis_cli HGETALL popbsmtp:stat:total | paste -d' ' - - | sed -n 's/^[^|]*|plugin|granted|lease //p'; }
before=$(grants)
pbs_idle_start acl alice 127.0.0.17
pbs_check_match "ACL user: the login's lease is written" '^1\|[0-9]+\|imap\|alice$' "$(lease 127.0.0.17)"
pbs_check_eq "ACL user: and its grant counted" $((${before:-0} + 1)) "$(grants)"
pbs_redis_cli DEL popbsmtp:lease:127.0.0.17 >/dev/null
if wait_lease 127.0.0.17 yes $((REFRESH + 2)); then pbs_ok "ACL user: a lost lease is restored by the refresh"
else pbs_fail "ACL user: the refresh did not restore the lease"; fi
sleep $((TTL + 1))
pbs_check_match "ACL user: the refresh keeps it beyond lease.ttl" '^1\|' "$(lease 127.0.0.17)"
# The administrator's popbsmtpctl uses Redis' default user, not the plugin's.
pbs_write_config "$PBS_TMP/admin.conf"
"$PBS_BIN/ctl/popbsmtpctl" -c "$PBS_TMP/admin.conf" revoke --user alice >/dev/null
sleep $((2 * REFRESH + 1))
pbs_check_eq "ACL user: after revoke --user the refresh reads the record and stops" 0 \
	"$(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.17)"
pbs_check_eq "ACL user: no NOPERM, no error" "" "$(plugin_errors "$mark")"
pbs_idle_cmd acl logout
write_conf

# ---- a bad config: one line, the login goes on, no lease ----

mark=$(pbs_dovecot_log_mark)
printf 'lease: { ttl = ; };\n' >"$PBS_CONF"
pbs_login_imap 127.0.0.13 alice "$DOVECOT_PASS"
pbs_check_eq "bad config: the IMAP login still succeeds" 0 $?
pbs_check_eq "bad config: no lease" 0 "$(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.13)"
pbs_check_match "bad config: one line says why" 'popbsmtp: no lease granted: bad configuration: .*popbsmtp\.conf:1' \
	"$(pbs_dovecot_log_since "$mark" 'bad configuration')"
write_conf

# ---- plugin and hook at once: the same lease, no errors ----

pbs_start_dovecot_plugin "$plugin_dir" "$PBS_CONF" "$PBS_BIN/hook/popbsmtp-postlogin" -c "$PBS_CONF" ||
	bail "cannot start dovecot with plugin and hook"
mark=$(pbs_dovecot_log_mark)
pbs_login_imap 127.0.0.14 alice "$DOVECOT_PASS"
pbs_check_eq "plugin and hook: IMAP login succeeds" 0 $?
pbs_check_match "plugin and hook: the lease is the same one, 1|<time>|imap|alice" \
	'^1\|[0-9]+\|imap\|alice$' "$(lease 127.0.0.14)"
pbs_login_pop3 127.0.0.15 bob "$DOVECOT_PASS"
pbs_check_match "plugin and hook: POP3 too, 1|<time>|pop3|bob" '^1\|[0-9]+\|pop3\|bob$' "$(lease 127.0.0.15)"
pbs_check_nomatch "plugin and hook: no error in Dovecot's log" 'Error|Warning' \
	"$(pbs_dovecot_log_since "$mark" 'pop3\(bob\).*Logged out')"

pbs_done
