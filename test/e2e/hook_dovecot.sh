#!/bin/bash
# hook_dovecot.sh HOOK — end-to-end test of the Dovecot post-login hook: real IMAP and POP3
# logins through a private Dovecot must leave the lease a user expects in a private Redis, and
# a Redis outage, a Redis that never answers or a broken config must never block a login or
# slow it down much (the hook logs one line and lets the login through).
# Usage (as root): test/e2e/hook_dovecot.sh build/hook/popbsmtp-postlogin — TAP on stdout.

here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"

[ $# -eq 1 ] || bail "usage: $0 PATH_TO_popbsmtp-postlogin"
# Dovecot takes a relative executable path as relative to /usr/lib/dovecot: make it absolute.
hook=$(readlink -f "$1") && [ -x "$hook" ] || bail "$1: no executable there (not built yet?)"
conf="$PBS_TMP/popbsmtp.conf"
ttl=600            # not the default, so "TTL <= configured ttl" really tests the config
max_login_ms=2000  # a bound on how long a failing Redis may delay a login, not a benchmark

pbs_start_redis || bail "cannot start redis-server"
PBS_CONF_TTL=$ttl pbs_write_config "$conf"
# The hook runs as the dovecot user: catch permission problems here, not as failed logins.
runuser -u dovecot -- test -x "$hook" || bail "$hook: not executable by user dovecot"
runuser -u dovecot -- test -r "$conf" || bail "$conf: not readable by user dovecot"
pbs_start_dovecot "$hook" -c "$conf" || bail "cannot start dovecot"

# lease IP — print the lease value stored for IP (empty if none).
lease() { pbs_redis_cli GET "popbsmtp:lease:$1"; }

# check_fresh WHAT LEASE — the lease's grant time (field 2) is within 5 s of now.
check_fresh() {
	local granted now
	granted=$(printf '%s' "$2" | cut -d'|' -f2)
	now=$(date +%s)
	[[ $granted =~ ^[0-9]+$ ]] || granted=0
	pbs_check_le "$1: granted time is now (seconds off)" 5 $((now > granted ? now - granted : granted - now))
}

# ---- docs/dovecot.md's "Checking by hand", as written: the configuration root:GROUP 0640 ----
# (the test's paths; the group "mail" stands for popbsmtp, which only the packages make)
by_hand="$PBS_TMP/by-hand"
install -d -m 0750 -o root -g mail "$by_hand"
install -m 0640 -o root -g mail "$conf" "$by_hand/popbsmtp.conf"
chmod 755 "$PBS_TMP"
steps=$(pbs_doc_block "$PBS_DOCS/dovecot.md" 'Run the hook as Dovecot would, without a command' |
	sed -e "s|/usr/sbin/popbsmtp-postlogin|$hook|" -e "s|/etc/popbsmtp/popbsmtp.conf|$by_hand/popbsmtp.conf|" \
		-e 's|-G popbsmtp|-G mail|' -e "s|^popbsmtpctl |${hook%/hook/*}/ctl/popbsmtpctl -c $by_hand/popbsmtp.conf |" |
	grep -v '^echo ')
pbs_check_match "docs/dovecot.md: the by-hand check runs the hook as dovecot with the config's group" \
	'^runuser -u dovecot -g dovecot -G mail -- env IP=192\.0\.2\.7 USER=alice' "$steps"
out=$(bash -c "$(printf '%s\n' "$steps" | sed -n '1,2p')" 2>&1)
pbs_check_eq "docs/dovecot.md: the hook run by hand writes the lease (exit 0, nothing on stderr)" "0 " \
	"$? $out"
if [ -x "${hook%/hook/*}/ctl/popbsmtpctl" ]; then
	pbs_check_match "docs/dovecot.md: popbsmtpctl check then shows it" '^192\.0\.2\.7 +alice +imap' \
		"$(bash -c "$(printf '%s\n' "$steps" | tail -n 1)")"
fi
pbs_check_match "without the group, as the page warns: cannot read" 'cannot read: Permission denied' \
	"$(runuser -u dovecot -- env IP=192.0.2.8 USER=alice "$hook" -c "$by_hand/popbsmtp.conf" -s imap 2>&1)"
# What that left, so that the logins below start from an empty store but for the clock.
pbs_redis_cli --scan --pattern 'popbsmtp:*' | grep -v '^popbsmtp:clock$' |
	xargs -r redis-cli -h 127.0.0.1 -p "$REDIS_PORT" DEL >/dev/null

# ---- logins with Redis up: the lease a user expects ----

mark=$(pbs_dovecot_log_mark)
pbs_login_imap 127.0.0.5 alice "$DOVECOT_PASS"
pbs_check_eq "IMAP login as alice from 127.0.0.5 succeeds" 0 $?
value=$(lease 127.0.0.5)
pbs_check_match "lease for 127.0.0.5 is 1|<time>|imap|alice" '^1\|[0-9]+\|imap\|alice$' "$value"
check_fresh "lease for 127.0.0.5" "$value"
lease_ttl=$(pbs_redis_cli TTL popbsmtp:lease:127.0.0.5)
pbs_check_match "lease for 127.0.0.5 expires" '^[1-9][0-9]*$' "$lease_ttl"
pbs_check_le "lease for 127.0.0.5: TTL at most the configured ttl" $ttl "$lease_ttl"
# The value is the only record of the user: there is no per-user index key.
pbs_check_eq "lease for 127.0.0.5 names the user" alice "$(printf '%s' "$value" | cut -d'|' -f4-)"
# Beside it only the grant counters of the same script (docs/usage.md), the store's clock
# and the users seen at the address (docs/abuse.md).
pbs_check_eq "the login wrote its lease key, no other lease or per-user key" \
	"popbsmtp:clock popbsmtp:lease:127.0.0.5 popbsmtp:users:127.0.0.5" \
	"$(pbs_redis_cli --scan | grep -Ev '^popbsmtp:stat:' | sort | tr '\n' ' ' | sed 's/ $//')"
pbs_check_match "the grant was counted in the same round trip" '^[^|]+\|hook\|granted\|lease 1$' \
	"$(pbs_redis_cli HGETALL popbsmtp:stat:total | paste -d' ' - -)"

pbs_login_pop3 127.0.0.6 bob "$DOVECOT_PASS"
pbs_check_eq "POP3 login as bob from 127.0.0.6 succeeds" 0 $?
value=$(lease 127.0.0.6)
pbs_check_match "lease for 127.0.0.6 is 1|<time>|pop3|bob" '^1\|[0-9]+\|pop3\|bob$' "$value"
check_fresh "lease for 127.0.0.6" "$value"
pbs_check_eq "lease for 127.0.0.6 names the user" bob "$(printf '%s' "$value" | cut -d'|' -f4-)"
pbs_check_eq "no popbsmtp:user:* key after two logins" "" "$(pbs_redis_cli --scan --pattern 'popbsmtp:user:*')"

# Dovecot logs every plain stderr line of the hook as "Error:", so a working hook must not
# write one: an admin would see an error for every good login.
pbs_check_nomatch "successful logins log no hook Error in Dovecot's log" 'Error: popbsmtp-postlogin' \
	"$(pbs_dovecot_log_since "$mark" 'pop3\(bob\).*Logged out')"

pbs_login_imap 127.0.0.7 alice wrong
pbs_check_eq "IMAP login with a wrong password is denied (curl 67)" 67 $?
pbs_check_eq "a failed login leaves no lease for 127.0.0.7" 0 \
	"$(pbs_redis_cli EXISTS popbsmtp:lease:127.0.0.7)"

# ---- failures: every login still succeeds, quickly, and the hook says why in the log ----

# login_survives WHAT PROTO SRC USER — a PROTO login from SRC succeeds within max_login_ms
# and the hook logged a line about it.
login_survives() {
	local what=$1 proto=$2 src=$3 user=$4 mark t0 rc ms
	mark=$(pbs_dovecot_log_mark)
	t0=$(pbs_now_ms)
	"pbs_login_$proto" "$src" "$user" "$DOVECOT_PASS"
	rc=$?
	ms=$(($(pbs_now_ms) - t0))
	pbs_check_eq "$what: $proto login from $src succeeds" 0 $rc
	pbs_check_le "$what: $proto login time in ms" $max_login_ms $ms
	pbs_check_match "$what: the hook logged a line for the $proto login" 'popbsmtp-postlogin' \
		"$(pbs_dovecot_log_since "$mark" popbsmtp-postlogin)"
}

pbs_stop_redis
login_survives "Redis stopped" imap 127.0.0.8 alice
login_survives "Redis stopped" pop3 127.0.0.9 bob

pbs_start_blackhole || bail "cannot start the black hole"
PBS_CONF_REDIS_PORT=$BLACKHOLE_PORT PBS_CONF_TIMEOUT_MS=250 PBS_CONF_TTL=$ttl pbs_write_config "$conf"
login_survives "Redis never answers" imap 127.0.0.10 alice
login_survives "Redis never answers" pop3 127.0.0.11 bob

printf 'redis: { host = "127.0.0.1"; port = ; };\n' >"$conf"
login_survives "config with a syntax error" imap 127.0.0.12 alice
login_survives "config with a syntax error" pop3 127.0.0.13 bob

# ---- recovery: once Redis and the config are back, the next login writes a lease again ----

pbs_restart_redis main "$REDIS_PORT" || bail "cannot restart redis-server"
PBS_CONF_TTL=$ttl pbs_write_config "$conf"
pbs_login_imap 127.0.0.14 alice "$DOVECOT_PASS"
pbs_check_eq "after recovery: IMAP login from 127.0.0.14 succeeds" 0 $?
pbs_check_match "after recovery: lease for 127.0.0.14 is written" '^1\|[0-9]+\|imap\|alice$' \
	"$(lease 127.0.0.14)"

pbs_done
