#!/bin/bash
# plugin_revoke.sh BUILD_DIR — attacks on "a revoke always wins" (docs/security.md, R1) on a
# private Dovecot with the plugin and a private Redis, IMAP sessions held open in IDLE and
# refreshing every second: a revoke --user paused between its record and its removals (gdb),
# a revoke of an address with five sessions of two users behind it while Redis is paused, a
# neighbour's lease at a revoked user's address (NAT), popbsmtpctl's clock 5 s behind and
# an hour ahead, a login whose grant is held in a paused Redis while the revoke lands, a
# suspension (the session stops, logins get nothing until it is lifted), and sessions
# hibernated across a revoke whose record then expires. After each: no lease
# covers the address or names the user, and none comes back over several refreshes.
# Usage (as root): test/e2e/plugin_revoke.sh build — TAP on stdout.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"

pbs_plugin_test_start "$@"
plugin_dir=$PLUGIN_DIR
CTL="$PBS_BIN/ctl/popbsmtpctl"
command -v gdb >/dev/null || bail "gdb is not installed (scripts/install-deps)"
command -v faketime >/dev/null || bail "faketime is not installed (scripts/install-deps)"
TTL=4
REFRESH=1

pbs_start_redis || bail "cannot start redis-server"
PBS_CONF="$PBS_TMP/popbsmtp.conf"
PBS_CONF_TTL=$TTL PBS_CONF_LEASE_EXTRA="refresh = $REFRESH;" pbs_write_config "$PBS_CONF"
chmod 600 "$PBS_CONF"
DOVECOT_USERS="alice bob carol"   # carol: the third user of a shared address
pbs_start_dovecot_plugin "$plugin_dir" "$PBS_CONF" || bail "cannot start dovecot"

# The administrator's popbsmtpctl waits longer than the paused Redis below.
ADMIN_CONF="$PBS_TMP/admin.conf"
PBS_CONF_TIMEOUT_MS=5000 PBS_CONF_TTL=$TTL pbs_write_config "$ADMIN_CONF"
ctl() { "$CTL" -c "$ADMIN_CONF" "$@"; }
exists() { pbs_redis_cli EXISTS "popbsmtp:lease:$1"; }

# stays_gone WHAT IP — the lease of IP is absent now and at every check for 3 refreshes
# (and more than lease.ttl: a lease kept alive by nobody would be gone by then anyway).
stays_gone() {
	local seen="" i
	for i in $(seq 1 $((2 * (TTL + 1)))); do
		seen="$seen$(exists "$2")"
		sleep 0.5
	done
	pbs_check_eq "$1: no lease covers $2, checked every 0.5 s for $((TTL + 1)) s" \
		"$(printf '0%.0s' $(seq 1 $((2 * (TTL + 1)))))" "$seen"
}

# stopped MARK N IP — N sessions at IP logged that they stopped refreshing, revoked.
stopped() {
	pbs_dovecot_log_since "$1" "lease for ${3//./\\.} revoked" 3 >/dev/null
	sleep $((2 * REFRESH))
	pbs_check_eq "$2 session(s) at $3 logged once that they stop refreshing" "$2" \
		"$(pbs_dovecot_log_since "$1" | grep -c "popbsmtp: lease for ${3//./\\.} revoked; no longer refreshed")"
}

# ---- a revoke --user paused between its record and its removal ----
# The review's reproduction, against the old code: popbsmtpctl stopped in gdb while the
# sessions refresh, then let go. Now the record stops every session at its next refresh, and
# the removal that follows takes the lease.

pbs_idle_start a alice 127.0.0.30 127.0.0.30 127.0.0.30
pbs_check_eq "three IMAP sessions of alice at 127.0.0.30" 3 "$PBS_IDLE_OK"
mark=$(pbs_dovecot_log_mark)
out=$(gdb -q -batch -ex 'set breakpoint pending on' -ex 'break pbs_store_remove_if_user' \
	-ex run -ex 'shell sleep 2.5' -ex delete -ex continue \
	--args "$CTL" -c "$ADMIN_CONF" revoke --user alice 2>/dev/null)
pbs_check_match "paused revoke --user alice: reports the lease it removed" \
	'1 lease of alice revoked' "$out"
stays_gone "paused revoke --user" 127.0.0.30
stopped "$mark" 3 127.0.0.30
pbs_idle_cmd a noop
pbs_check_eq "the revoked sessions go on (NOOP answered)" 3 "$PBS_IDLE_OK"
pbs_idle_cmd a logout

# ---- five sessions of two users behind one address, Redis paused during the revoke ----

pbs_idle_start b1 alice 127.0.0.31 127.0.0.31 127.0.0.31
pbs_idle_start b2 bob 127.0.0.31 127.0.0.31
pbs_check_match "five sessions (alice, then bob) at 127.0.0.31; bob's login holds the lease" \
	'^1\|[0-9]+\|imap\|bob$' "$(pbs_redis_cli GET popbsmtp:lease:127.0.0.31)"
mark=$(pbs_dovecot_log_mark)
# Every client stalls for 2.5 s: the revoke and the sessions' refreshes queue up together.
pbs_redis_cli CLIENT PAUSE 2500 ALL >/dev/null
out=$(ctl revoke 127.0.0.31)
pbs_check_eq "revoke 127.0.0.31 through a paused Redis: exit 0, removed" \
	"0 revoked 127.0.0.31" "$? $out"
stays_gone "revoke of an address with five sessions" 127.0.0.31
stopped "$mark" 5 127.0.0.31
for g in b1 b2; do pbs_idle_cmd "$g" logout; done
pbs_login_imap 127.0.0.31 alice "$DOVECOT_PASS"
pbs_check_eq "a login after the revoke is a new login: it gets a lease" 1 "$(exists 127.0.0.31)"
pbs_redis_cli DEL popbsmtp:lease:127.0.0.31 >/dev/null

# ---- a neighbour behind the same NAT: bob's lease at alice's address ----
# revoke --user alice must leave bob's lease (it is his), and alice's revoked session must
# not keep it alive for him after he left.

pbs_idle_start c alice 127.0.0.32
pbs_login_pop3 127.0.0.32 bob "$DOVECOT_PASS"
pbs_check_match "bob's POP3 login from alice's address took it over" \
	'^1\|[0-9]+\|pop3\|bob$' "$(pbs_redis_cli GET popbsmtp:lease:127.0.0.32)"
out=$(ctl revoke --user alice)
pbs_check_eq "revoke --user alice: exit 1, none of hers there (bob's stays)" \
	"1 0 leases of alice revoked" "$? $out"
sleep $((TTL + 1))
stays_gone "bob left; alice's revoked session keeps his lease alive" 127.0.0.32
pbs_idle_cmd c logout

# ---- popbsmtpctl's clock 5 s behind, and an hour ahead ----
# Records carry the store's clock (Redis TIME), not the host's: a skewed ctl host changes
# nothing.

for skew in -5s +3600s; do
	pbs_idle_start d alice 127.0.0.33
	pbs_check_eq "a session of alice at 127.0.0.33 (ctl clock $skew)" 1 "$(exists 127.0.0.33)"
	out=$(faketime -f "$skew" "$CTL" -c "$ADMIN_CONF" revoke --user alice)
	pbs_check_eq "revoke --user alice with the ctl clock $skew: exit 0" \
		"0 1 lease of alice revoked" "$? $(printf '%s\n' "$out" | tail -n 1)"
	stays_gone "ctl clock $skew" 127.0.0.33
	pbs_idle_cmd d logout
	# A login after the revoke, however the ctl's clock was set, is a new login.
	pbs_login_imap 127.0.0.33 alice "$DOVECOT_PASS"
	pbs_check_eq "ctl clock $skew: a login after the revoke gets a lease" 1 "$(exists 127.0.0.33)"
	pbs_redis_cli DEL popbsmtp:lease:127.0.0.33 >/dev/null
done

# ---- a login whose grant is held in Redis while the revoke lands ----
# Redis stalls every writer for 1.5 s; alice logs in (her grant waits, and the plugin gives
# up on it after redis.timeout_ms) and the revoke is queued too. Whatever Redis then runs
# first, no lease of hers may exist afterwards, and her session must not write one back.

pbs_redis_cli CLIENT PAUSE 1500 WRITE >/dev/null
pbs_idle_start e alice 127.0.0.34
ctl revoke --user alice >/dev/null
stays_gone "a login's grant held back by Redis across a revoke" 127.0.0.34
pbs_idle_cmd e logout

# ---- suspension: the session stops, new logins get nothing, until it is lifted ----

pbs_idle_start h alice 127.0.0.37
pbs_check_eq "alice's session at 127.0.0.37 holds a lease" 1 "$(exists 127.0.0.37)"
mark=$(pbs_dovecot_log_mark)
out=$(ctl suspend alice --for 1h --reason "test")
pbs_check_match "suspend alice: her lease is revoked" '1 lease of alice revoked' "$out"
stays_gone "alice suspended, her session open" 127.0.0.37
pbs_check_match "her session says it keeps nothing" \
	'popbsmtp: lease for 127\.0\.0\.37 not kept: the user is suspended; no longer refreshed' \
	"$(pbs_dovecot_log_since "$mark" 'the user is suspended')"
pbs_login_imap 127.0.0.38 alice "$DOVECOT_PASS"
pbs_check_eq "a new login of alice succeeds (IMAP)" 0 $?
pbs_check_eq "... but gets no lease while she is suspended" 0 "$(exists 127.0.0.38)"
pbs_login_pop3 127.0.0.38 bob "$DOVECOT_PASS"
pbs_check_eq "bob is not affected" 1 "$(exists 127.0.0.38)"
pbs_redis_cli DEL popbsmtp:lease:127.0.0.38 >/dev/null
ctl unsuspend alice >/dev/null
pbs_login_imap 127.0.0.38 alice "$DOVECOT_PASS"
pbs_check_match "unsuspended: her next login gets a lease" '^1\|[0-9]+\|imap\|alice$' \
	"$(pbs_redis_cli GET popbsmtp:lease:127.0.0.38)"
pbs_check_eq "... and the session that was stopped stays stopped" 0 "$(exists 127.0.0.37)"
pbs_idle_cmd h logout

# ---- a shared address: lease.max_users_per_address = 2, three users from one address ----
# Each login is a new imap process, which reads the configuration anew.

PBS_CONF_TTL=$TTL PBS_CONF_LEASE_EXTRA="refresh = $REFRESH; max_users_per_address = 2;" \
	pbs_write_config "$PBS_CONF"
chmod 600 "$PBS_CONF"
mark=$(pbs_dovecot_log_mark)
pbs_idle_start s1 alice 127.0.0.39
pbs_login_pop3 127.0.0.39 bob "$DOVECOT_PASS"
pbs_check_match "two users at 127.0.0.39: bob's lease" '^1\|[0-9]+\|pop3\|bob$' \
	"$(pbs_redis_cli GET popbsmtp:lease:127.0.0.39)"
pbs_idle_start s3 carol 127.0.0.39 2>/dev/null
pbs_check_eq "the third user's IMAP login still succeeds" 1 "$PBS_IDLE_OK"
pbs_check_match "... but writes no lease: bob's stands" '^1\|[0-9]+\|pop3\|bob$' \
	"$(pbs_redis_cli GET popbsmtp:lease:127.0.0.39)"
pbs_check_match "... and says why" \
	'popbsmtp: lease for 127\.0\.0\.39 not granted: other users logged in from this address already \(lease\.max_users_per_address\)' \
	"$(pbs_dovecot_log_since "$mark" 'max_users_per_address')"
pbs_check_match "... counted (refused, shared)" '\|plugin\|refused\|shared 1$' \
	"$(pbs_redis_cli HGETALL popbsmtp:stat:total | paste -d' ' - - | grep '|refused|shared')"
out=$(ctl check 127.0.0.39)
pbs_check_match "popbsmtpctl check names the two users seen there" \
	'users seen at 127\.0\.0\.39: (alice|bob) \(.*\), (alice|bob) \(' "$out"
pbs_login_imap 127.0.0.39 alice "$DOVECOT_PASS"
pbs_check_match "a user already counted there logs in again and gets the lease" \
	'^1\|[0-9]+\|imap\|alice$' "$(pbs_redis_cli GET popbsmtp:lease:127.0.0.39)"
for g in s1 s3; do pbs_idle_cmd "$g" logout; done
PBS_CONF_TTL=$TTL PBS_CONF_LEASE_EXTRA="refresh = $REFRESH;" pbs_write_config "$PBS_CONF"
chmod 600 "$PBS_CONF"

# ---- hibernation: a revoked session that wakes after its record expired ----
# IMAP sessions idle for 2 s now go to imap-hibernate (their imap process ends); a command
# wakes them in a new process, as a restored session.

DOVECOT_EXTRA_CONF="imap_hibernate_timeout = 2s
service imap {
  unix_listener imap-master {
    user = $DOVECOT_INTERNAL_USER
  }
}"
pbs_start_dovecot_plugin "$plugin_dir" "$PBS_CONF" || bail "cannot start dovecot with hibernation"

# hibernated IP — wait (up to 10 s) until the imap process of the session from IP (logged in
# after $mark) has ended while its client stays connected: the session sleeps.
hibernated() {
	local pid i=0
	pid=$(pbs_dovecot_log_since "$mark" "rip=${1//./\\.},.*mpid=" 5 |
		sed -n "s/.*rip=${1//./\\.},.*mpid=\([0-9]*\).*/\1/p" | tail -n 1)
	[ -n "$pid" ] || return 1
	while [ $i -lt 100 ]; do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

mark=$(pbs_dovecot_log_mark)
pbs_idle_start f alice 127.0.0.35
if hibernated 127.0.0.35; then pbs_ok "alice's IDLE session at 127.0.0.35 hibernated"
else pbs_fail "alice's IDLE session at 127.0.0.35 did not hibernate"; fi
ctl revoke --user alice >/dev/null
# A day passes (the record's life), standing in: the record expires.
pbs_redis_cli EXPIRE popbsmtp:revoked-user:alice 1 >/dev/null
sleep 1.5
pbs_check_eq "the record has expired" 0 "$(pbs_redis_cli EXISTS popbsmtp:revoked-user:alice)"
mark=$(pbs_dovecot_log_mark)
pbs_idle_cmd f noop
pbs_check_eq "the hibernated session wakes (NOOP answered)" 1 "$PBS_IDLE_OK"
stays_gone "a revoked session woken after its record expired" 127.0.0.35
pbs_check_match "it says its lease was gone while it slept" \
	'popbsmtp: lease for 127\.0\.0\.35 gone while the session slept; no longer refreshed' \
	"$(pbs_dovecot_log_since "$mark" 'gone while the session slept')"
pbs_idle_cmd f logout

# The same with the record still there: the woken session is stopped by it.
mark=$(pbs_dovecot_log_mark)
pbs_idle_start g bob 127.0.0.36
if hibernated 127.0.0.36; then pbs_ok "bob's IDLE session at 127.0.0.36 hibernated"
else pbs_fail "bob's IDLE session at 127.0.0.36 did not hibernate"; fi
ctl revoke 127.0.0.36 >/dev/null
mark=$(pbs_dovecot_log_mark)
pbs_idle_cmd g noop
stays_gone "a revoked session woken while its record lives" 127.0.0.36
pbs_check_match "it says it was revoked" 'popbsmtp: lease for 127\.0\.0\.36 revoked; no longer refreshed' \
	"$(pbs_dovecot_log_since "$mark" 'revoked; no longer')"
pbs_idle_cmd g logout

pbs_check_eq "no plugin error in Dovecot's log" "" \
	"$(pbs_dovecot_log_since 0 | grep -E 'Error: popbsmtp|Panic|Fatal' | grep -v 'timed out')"
pbs_done
