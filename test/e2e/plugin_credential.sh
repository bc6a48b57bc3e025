#!/bin/bash
# plugin_credential.sh BUILD_DIR — "no mail user can read a credential that writes leases"
# (docs/security.md, R2) on a private Dovecot with the plugin and a private Redis that needs a
# password: the configuration holding it is readable by root alone, and the plugin still
# grants (it reads the file when Dovecot loads it, before the process becomes the mail user).
# Then, as the mail user with a shell (nobody: the mail processes' uid here), every way the
# review tried: read the file; symlink it into the user's own Maildir and FETCH it over IMAP;
# read the IMAP process's environment and memory through /proc; attach a debugger to it. And
# a userdb field naming another configuration (one with a month-long ttl) changes nothing.
# The controls: as root the secret is found in that same process's memory, so the checks
# as the user would see it if it were exposed.
# Usage (as root): test/e2e/plugin_credential.sh build — TAP on stdout.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/common.sh"
. "$here/lib/dovecot.sh"

pbs_plugin_test_start "$@"
plugin_dir=$PLUGIN_DIR
TTL=60
SECRET="Lease-Writer-$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"

pbs_start_redis main --requirepass "$SECRET" || bail "cannot start redis-server"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -a "$SECRET" --no-auth-warning "$@"; }
PBS_CONF="$PBS_TMP/etc/popbsmtp.conf"
mkdir -p "$PBS_TMP/etc"
printf 'redis: { host = "127.0.0.1"; port = %s; password = "%s"; timeout_ms = 250; };\nlease: { ttl = %s; refresh = 1; };\n' \
	"$REDIS_PORT" "$SECRET" "$TTL" >"$PBS_CONF"
chmod 600 "$PBS_CONF"
# A configuration a hostile userdb entry would point the plugin at: no password needed to
# see its effect, a month-long ttl.
EVIL_CONF="$PBS_TMP/evil.conf"
PBS_CONF_TTL=2678400 pbs_write_config "$EVIL_CONF"
DOVECOT_MORE_USERS="eve:{PLAIN}$DOVECOT_PASS::::::userdb_popbsmtp_config=$EVIL_CONF"
pbs_start_dovecot_plugin "$plugin_dir" "$PBS_CONF" || bail "cannot start dovecot"

as_user() { runuser -u nobody -- "$@"; }

pbs_check_eq "the mail user cannot read the configuration" 1 \
	"$(as_user cat "$PBS_CONF" >/dev/null 2>&1; echo $?)"

# ---- the plugin grants all the same ----
pbs_idle_start s alice 127.0.0.40
pbs_check_eq "alice's IMAP session from 127.0.0.40 is open" 1 "$PBS_IDLE_OK"
pbs_check_match "its lease is written (the plugin read the root-only file)" '^1\|[0-9]+\|imap\|alice$' \
	"$(rcli GET popbsmtp:lease:127.0.0.40)"

# ---- the file through the user's own Maildir, over IMAP ----
# The user makes the Maildir (their home is theirs) and plants the link, as with a shell.
maildir="$DOVECOT_DIR/home/alice/Maildir"
as_user mkdir -p "$maildir/cur" "$maildir/new" "$maildir/tmp" || bail "cannot make $maildir"
as_user ln -s "$PBS_CONF" "$maildir/cur/1796662000.M2P2.host:2,"
pbs_check_eq "the mail user could plant the symlink" 0 $?
# fetch — FETCH 1:* BODY[] over IMAP as alice: what came back, or the error.
fetch() {
	/usr/bin/python3 - "$DOVECOT_IMAP_PORT" "$DOVECOT_PASS" <<'PY'
import imaplib, sys
m = imaplib.IMAP4("127.0.0.1", int(sys.argv[1]))
m.login("alice", sys.argv[2])
m.select("INBOX")
try:
    typ, data = m.fetch("1:*", "(BODY[])")
    print(typ, repr(data))
except imaplib.IMAP4.error as e:
    print("error", e)
m.logout()
PY
}
fetched=$(fetch)
pbs_check_nomatch "FETCH 1:* BODY[] over IMAP does not return the configuration" "$SECRET" "$fetched"
echo "# FETCH answered: ${fetched:0:160}"
# The control: a file the mail user may read, linked the same way, is returned: the path
# works, only the permission stops the configuration.
marker="Readable-$(od -An -tx1 -N4 /dev/urandom | tr -d ' \n')"
printf 'Subject: x\n\n%s\n' "$marker" >"$PBS_TMP/readable"
chmod 644 "$PBS_TMP/readable"
as_user rm "$maildir/cur/1796662000.M2P2.host:2,"
as_user ln -s "$PBS_TMP/readable" "$maildir/cur/1796662001.M3P3.host:2,"
pbs_check_match "control: a readable file linked the same way comes back over IMAP" "$marker" "$(fetch)"

# ---- the IMAP process: environment, memory, debugger ----
# The imap process of the idling session (this instance's: its pid from the login line).
pid=$(pbs_dovecot_log_since 0 | sed -n 's/.*rip=127\.0\.0\.40,.*mpid=\([0-9]*\).*/\1/p' | head -n 1)
[ -n "$pid" ] && [ "$(ps -o user= -p "$pid")" = nobody ] || bail "no imap process of the mail user"
# scan PID [USER] — how often SECRET appears in PID's environment and writable memory,
# read as USER (root when empty); "unreadable" when it cannot be read at all.
scan() {
	local run=()
	[ -n "${2:-}" ] && run=(runuser -u "$2" --)
	"${run[@]}" /usr/bin/python3 - "$1" "$SECRET" <<'PY'
import sys
pid, secret = sys.argv[1], sys.argv[2].encode()
found = 0
try:
    found += open(f"/proc/{pid}/environ", "rb").read().count(secret)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb") as mem:
        for line in maps:
            addr, perms = line.split()[:2]
            if "rw" not in perms:
                continue
            start, end = (int(x, 16) for x in addr.split("-"))
            try:
                mem.seek(start)
                found += mem.read(end - start).count(secret)
            except (OSError, ValueError, OverflowError):
                pass
except OSError:
    print("unreadable")
    sys.exit()
print(found)
PY
}
control=$(scan "$pid")
pbs_check_match "control: as root, the secret is in the IMAP process's memory" '^[1-9][0-9]*$' "$control"
pbs_check_eq "as the mail user: /proc/PID/environ and /proc/PID/mem of its own IMAP process are unreadable" \
	unreadable "$(scan "$pid" nobody)"
pbs_check_eq "as the mail user: /proc/PID/cmdline names no secret" 0 \
	"$(as_user cat "/proc/$pid/cmdline" 2>/dev/null | grep -c "$SECRET")"
attach=$(as_user gdb -q -batch -p "$pid" -ex 'info proc' 2>&1)
pbs_check_match "as the mail user: a debugger cannot attach to its own IMAP process" \
	'ptrace: Operation not permitted|Could not attach|not permitted' "$attach"
pbs_check_eq "its environment holds no secret (checked as root)" 0 \
	"$(tr '\0' '\n' <"/proc/$pid/environ" | grep -c "$SECRET")"
pbs_idle_cmd s logout

# ---- a userdb field naming another configuration is not honoured ----
pbs_login_imap 127.0.0.41 eve "$DOVECOT_PASS"
pbs_check_eq "eve (userdb popbsmtp_config=evil.conf) logs in" 0 $?
ttl=$(rcli TTL popbsmtp:lease:127.0.0.41)
pbs_check_match "eve's lease has the configured ttl, not evil.conf's month" '^(5[0-9]|60)$' "$ttl"

pbs_check_eq "no plugin error in Dovecot's log" "" \
	"$(pbs_dovecot_log_since 0 | grep -E 'Error: popbsmtp|Panic|Fatal')"
pbs_done
