#!/bin/bash
# privsep.sh BUILD_DIR — what popbsmtp-milter does with root's privileges and its own life
# cycle, tried as an attacker and as an impatient operator would (issue 11):
#   socket   the unix socket gets milter.socket_mode and milter.socket_group when it is
#            created, and root never changes a file through the socket's path: a user who
#            owns the socket directory races a symlink to a root-owned file over the socket
#            while the milter starts and stops 20 times, and that file must never change;
#            a setgid directory that would give another group is refused; started as a
#            non-root user, the milter gives the socket one of that user's groups;
#   reload   SIGUSR1 sent in a loop from the milter's start (its start-up Redis check held
#            up by a black hole) through its SIGTERM: it serves, and exits 0;
#   pidfile  a stale pidfile never blocks a start, even when its pid names a live process;
#            a second milter on the same pidfile refuses; after SIGTERM the pidfile is gone,
#            or provably stale (nothing holds its lock) where the milter user cannot remove it.
# Needs root, redis-server, python3, setpriv and flock (util-linux). Under PBS_SANITIZE=ON
# builds, scripts/test collects the sanitizers' reports of every milter run here.
#
# Environment:
#   PBS_SLOW=N     multiply every time bound by N (slow or instrumented builds); default 1
#   PBS_KEEP_TMP=1 keep the temp dir (every log)
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
pbs_build_dir_arg "$@"
MILTER=$PBS_BIN/milter/popbsmtp-milter
PROBE=$PBS_BIN/bench/milter-probe
for exe in "$MILTER" "$PROBE"; do
	[ -x "$exe" ] || { echo "missing $exe (build first)" >&2; exit 1; }
done
for tool in redis-server python3 setpriv flock; do
	command -v "$tool" >/dev/null || { echo "$tool is not installed" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "run as root (privilege drop, socket group)" >&2; exit 1; }
SLOW=${PBS_SLOW:-1}
ROUNDS=20
NOBODY_GID=$(id -g nobody)
MAIL_GID=$(getent group mail | cut -d: -f3)
PF=("macro:connect:v=Postfix 3.7.11")
TRUSTED=(connect:127.0.0.1 'mail:<a@client.example>' 'macro:rcpt:{rcpt_mailer}=smtp'
	'rcpt:<far@far.example>')

pbs_start_redis || exit 1

# conf NAME SOCKET MILTER_EXTRA [REDIS_PORT] [TIMEOUT_MS] — $PBS_TMP/NAME.conf (mode 644,
# so a milter started as nobody can read it), trusting 127.0.0.1.
conf() {
	PBS_CONF_REDIS_PORT=${4:-$REDIS_PORT} PBS_CONF_TIMEOUT_MS=${5:-250} \
		pbs_write_config "$PBS_TMP/$1.conf" \
		"milter: { socket = \"unix:$2\"; trusted = [ \"127.0.0.1/32\" ]; $3 };"
}

# run_milter NAME [PREFIX…] — PREFIX popbsmtp-milter -f -c $PBS_TMP/NAME.conf in the
# background (not disowned: its exit status matters), its log in $PBS_TMP/NAME.log (a new
# one each run). Sets PID.
run_milter() {
	local name=$1
	shift
	: >"$PBS_TMP/$name.log"   # here, not in the child: wait_serving must not see the last run
	"$@" "$MILTER" -f -c "$PBS_TMP/$name.conf" >>"$PBS_TMP/$name.log" 2>&1 &
	PID=$!
	pbs_track_pid "$PID"
}

# wait_serving NAME PID — wait until NAME logs "serving on" (0), or PID has exited (1), at
# most 10 s (2).
wait_serving() {
	local i=0
	while ! grep -q 'serving on' "$PBS_TMP/$1.log"; do
		kill -0 "$2" 2>/dev/null || return 1
		[ $i -ge $((200 * SLOW)) ] && return 2
		sleep 0.05
		i=$((i + 1))
	done
	return 0
}

# exit_status PID — wait for PID to exit on its own (at most 10 s, then it is killed); sets
# RC to its exit status, or "still running".
exit_status() {
	local i=0
	while kill -0 "$1" 2>/dev/null && [ $i -lt $((200 * SLOW)) ]; do
		sleep 0.05
		i=$((i + 1))
	done
	if kill -0 "$1" 2>/dev/null; then
		kill -9 "$1"
		wait "$1" 2>/dev/null
		RC="still running"
	else
		wait "$1"
		RC=$?
	fi
}

# stop PID — SIGTERM, then wait for it; sets RC to its exit status.
stop() {
	kill "$1" 2>/dev/null
	wait "$1"
	RC=$?
}

# trusted_answer SOCKET — what the milter answers to a trusted client's relay recipient.
trusted_answer() {
	"$PROBE" -t $((5000 * SLOW)) "unix:$1" "${PF[@]}" "${TRUSTED[@]}" 2>&1 |
		sed -n 's/^rcpt:<far@far.example> //p'
}

# =====================================================================================
# Socket: mode and group at creation, and a symlink race in a directory nobody owns
# =====================================================================================
D=$PBS_TMP/sockdir           # as docs/postfix.md's chroot option: owned by the milter user
install -d -o nobody -g nogroup -m 0755 "$D"
conf sock "$D/milter.sock" 'user = "nobody"; socket_mode = "0660"; socket_group = "mail";'

run_milter sock
wait_serving sock "$PID"
pbs_check_eq "socket: the milter starts as root, socket_group mail, mode 0660" 0 $?
pbs_check_eq "socket: created with exactly milter.socket_mode and milter.socket_group" \
	"660 root mail socket" "$(stat -c '%a %U %G %F' "$D/milter.sock")"
pbs_check_eq "socket: a trusted client is served" accept "$(trusted_answer "$D/milter.sock")"
stop "$PID"
pbs_check_eq "socket: exits 0 on SIGTERM" 0 "$RC"

# The racer runs as nobody, the owner of the directory: whenever a name "milter.sock"
# appears there, it renames a symlink to the victim over it at once (inotify). Before the
# fix (chown and chmod through the path after bind) it won 16 of 20 rounds here.
VICTIM=$PBS_TMP/victim
echo precious >"$VICTIM"
chmod 0600 "$VICTIM"
before=$(stat -c '%u:%g %a' "$VICTIM")
setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 - "$D" milter.sock \
	"$VICTIM" <<'PY' &
import ctypes, os, struct, sys
d, name, victim = sys.argv[1], sys.argv[2].encode(), sys.argv[3]
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
if fd < 0 or libc.inotify_add_watch(fd, d.encode(), 0x100) < 0:  # IN_CREATE
    sys.exit("inotify: errno %d" % ctypes.get_errno())
n = 0
def arm():
    global n
    n += 1
    os.symlink(victim, "%s/link%d" % (d, n))
arm()
while True:
    buf, off = os.read(fd, 65536), 0
    while off < len(buf):
        _, _, _, ln = struct.unpack_from("iIII", buf, off)
        ev = buf[off + 16:off + 16 + ln].rstrip(b"\0")
        off += 16 + ln
        if ev == name:
            os.rename("%s/link%d" % (d, n), "%s/milter.sock" % d)
            arm()
PY
RACER=$!
pbs_track_pid "$RACER"
pbs_wait_file "$D/link1" 5   # armed
changed=0 served=0 swapped=0
for round in $(seq 1 $ROUNDS); do
	rm -f "$D/milter.sock"
	run_milter sock
	wait_serving sock "$PID" && served=$((served + 1))
	kill -9 "$PID"   # the race is at the start; SIGTERM would add seconds a round
	wait "$PID" 2>/dev/null
	[ -L "$D/milter.sock" ] && swapped=$((swapped + 1))
	if [ "$(stat -c '%u:%g %a' "$VICTIM")" != "$before" ]; then
		changed=$((changed + 1))
		chown 0:0 "$VICTIM" && chmod 0600 "$VICTIM"
	fi
done
echo "# racing a symlink over the socket: $served of $ROUNDS starts served, the symlink in place after $swapped"
pbs_check_eq "race: the racer ran as nobody throughout" "$(id -u nobody)" \
	"$(awk '/^Uid:/ { print $3 }' "/proc/$RACER/status" 2>/dev/null)"
kill "$RACER" 2>/dev/null
pbs_check_match "race: the racer got its symlink over the socket (rounds)" '^[1-9]' "$swapped"
pbs_check_eq "race: in $ROUNDS starts and stops the root-owned victim's owner, group and mode never changed (rounds changed)" \
	0 "$changed"
pbs_check_eq "race: the victim's content is untouched" precious "$(cat "$VICTIM")"
rm -f "$D/milter.sock" "$D"/link*

# A setgid directory of another group would give the socket that group: refused.
install -d -o nobody -g nogroup -m 2755 "$PBS_TMP/sgid"
conf sgid "$PBS_TMP/sgid/milter.sock" 'user = "nobody"; socket_group = "mail";'
run_milter sgid
exit_status "$PID"
pbs_check_eq "setgid directory of another group: start refused (status 71)" 71 "$RC"
pbs_check_match "setgid directory of another group: says why" \
	"is setgid to group $NOBODY_GID, which new files get instead of milter.socket_group 'mail'" \
	"$(cat "$PBS_TMP/sgid.log")"
chgrp mail "$PBS_TMP/sgid" && chmod 2755 "$PBS_TMP/sgid"
run_milter sgid
wait_serving sgid "$PID"
pbs_check_eq "setgid directory of that very group: the milter starts" 0 $?
pbs_check_eq "setgid directory of that very group: socket 0660 mail" "660 mail socket" \
	"$(stat -c '%a %G %F' "$PBS_TMP/sgid/milter.sock")"
stop "$PID"

# Started as nobody with mail as a supplementary group (the systemd unit's way, with a
# group for Sendmail's RunAsUser): the socket gets mail without root.
conf plain "$D/plain.sock" 'user = ""; socket_mode = "0640"; socket_group = "mail";'
run_milter plain setpriv --reuid=nobody --regid=nogroup --groups=mail
wait_serving plain "$PID"
pbs_check_eq "as nobody, a member of mail: the milter starts" 0 $?
pbs_check_eq "as nobody, a member of mail: socket nobody:mail 0640" "640 nobody mail socket" \
	"$(stat -c '%a %U %G %F' "$D/plain.sock")"
stop "$PID"
conf plain "$D/plain.sock" 'user = ""; socket_group = "mail";'
run_milter plain setpriv --reuid=nobody --regid=nogroup --clear-groups
exit_status "$PID"
pbs_check_eq "as nobody, not a member of mail: start refused (status 71)" 71 "$RC"
pbs_check_match "as nobody, not a member of mail: says why" "cannot give .* the group 'mail'" \
	"$(cat "$PBS_TMP/plain.log")"

# =====================================================================================
# Reload at any moment: SIGUSR1 in a loop from the start, through the start-up Redis check
# (held up by a black hole) and through SIGTERM
# =====================================================================================
pbs_start_blackhole || exit 1
conf usr1 "$PBS_TMP/usr1.sock" 'user = "nobody"; socket_mode = "0666";' "$BLACKHOLE_PORT" 1000
run_milter usr1
# Signals from the moment SIGUSR1 is blocked (SigBlk bit 10), the first thing main does:
# before that the program is not yet running its own code (the dynamic loader, or bash
# before the exec). From then on a SIGUSR1 must never hurt it.
# A loaded host (a chroot pass beside other work) can take seconds to get there: wait up to
# 10 s, and never start the storm before, or the test would kill the milter itself.
blocked=no
for i in $(seq 1 $((1000 * SLOW))); do
	sigblk=$(awk '/^SigBlk:/ { print $2 }' "/proc/$PID/status" 2>/dev/null)
	[ -n "$sigblk" ] && [ $((0x$sigblk & 0x200)) != 0 ] && { blocked=yes; break; }
	sleep 0.01
done
pbs_check_eq "reload storm: the milter blocks SIGUSR1 first thing" yes "$blocked"
( while [ "$blocked" = yes ] && kill -USR1 "$PID" 2>/dev/null; do sleep 0.002; done ) &
STORM=$!
wait_serving usr1 "$PID"
pbs_check_eq "reload storm: the milter comes up through its Redis check" 0 $?
pbs_check_eq "reload storm: it logs the socket it serves on" \
	"serving on unix:$PBS_TMP/usr1.sock" "$(grep -o 'serving on .*' "$PBS_TMP/usr1.log")"
pbs_check_eq "reload storm: a trusted client is served" accept "$(trusted_answer "$PBS_TMP/usr1.sock")"
reloads=$(grep -c 'configuration reloaded' "$PBS_TMP/usr1.log")
echo "# reload storm: $reloads reloads before SIGTERM"
pbs_check_match "reload storm: reloads happened" '^[1-9]' "$reloads"
stop "$PID"
kill "$STORM" 2>/dev/null
wait "$STORM" 2>/dev/null
pbs_check_eq "reload storm: exits 0 on SIGTERM, still under SIGUSR1" 0 "$RC"
pbs_check_eq "reload storm: no error or crash logged" "" \
	"$(grep -iE 'AddressSanitizer|runtime error|failed|fatal' "$PBS_TMP/usr1.log")"

# =====================================================================================
# Pidfile: held locked by the daemon; a stale one never blocks a start
# =====================================================================================
P=$PBS_TMP/piddir            # root's directory: the milter, as nobody, cannot remove its pidfile
mkdir -p "$P"
conf pd "$PBS_TMP/pd.sock" "user = \"nobody\"; socket_mode = \"0666\"; pidfile = \"$P/milter.pid\";"
sleep 60 &
other=$!
pbs_track_pid "$other"
echo "$other" >"$P/milter.pid"
"$MILTER" -c "$PBS_TMP/pd.conf" >"$PBS_TMP/pd.start" 2>&1
pbs_check_eq "stale pidfile naming a live process: the daemon starts (exit 0)" 0 $?
dpid=$(tr -d '\n' <"$P/milter.pid")
[[ $dpid =~ ^[0-9]+$ ]] && pbs_track_pid "$dpid"
pbs_check_eq "stale pidfile: that other process is alive (nothing killed)" yes \
	"$(kill -0 "$other" 2>/dev/null && echo yes)"
pbs_check_eq "stale pidfile: the pidfile now names the milter, written before the start command exited" \
	"$MILTER -c $PBS_TMP/pd.conf" "$(tr '\0' ' ' <"/proc/$dpid/cmdline" 2>/dev/null | sed 's/ $//')"
pbs_wait_file "$PBS_TMP/pd.sock" 5
pbs_check_eq "stale pidfile: the daemon serves" accept "$(trusted_answer "$PBS_TMP/pd.sock")"
conf pd2 "$PBS_TMP/pd2.sock" "user = \"nobody\"; socket_mode = \"0666\"; pidfile = \"$P/milter.pid\";"
"$MILTER" -c "$PBS_TMP/pd2.conf" >"$PBS_TMP/pd2.start" 2>&1
pbs_check_eq "a second milter on the same pidfile: refused (status 71)" 71 $?
pbs_check_match "a second milter on the same pidfile: says why" \
	"already running as pid $dpid \\(pidfile $P/milter.pid is locked\\)" "$(cat "$PBS_TMP/pd2.start")"
pbs_check_eq "a second milter: the pidfile still names the first" "$dpid" "$(tr -d '\n' <"$P/milter.pid")"
kill "$dpid"
while kill -0 "$dpid" 2>/dev/null; do sleep 0.05; done
pbs_check_eq "after SIGTERM, in a directory the milter user cannot write: the pidfile is provably stale (unlocked)" \
	free "$(flock -n "$P/milter.pid" echo free)"
"$MILTER" -c "$PBS_TMP/pd.conf" >"$PBS_TMP/pd.start" 2>&1
pbs_check_eq "that stale pidfile: the next start succeeds" 0 $?
dpid=$(tr -d '\n' <"$P/milter.pid")
[[ $dpid =~ ^[0-9]+$ ]] && pbs_track_pid "$dpid"
pbs_wait_file "$PBS_TMP/pd.sock" 5
kill "$dpid"
while kill -0 "$dpid" 2>/dev/null; do sleep 0.05; done
# A directory the milter user owns (as /run/popbsmtp under systemd): the pidfile goes.
install -d -o nobody -g nogroup -m 0755 "$PBS_TMP/run"
conf pr "$PBS_TMP/pr.sock" "user = \"nobody\"; socket_mode = \"0666\"; pidfile = \"$PBS_TMP/run/milter.pid\";"
"$MILTER" -c "$PBS_TMP/pr.conf" >"$PBS_TMP/pr.start" 2>&1
dpid=$(tr -d '\n' <"$PBS_TMP/run/milter.pid")
[[ $dpid =~ ^[0-9]+$ ]] && pbs_track_pid "$dpid"
pbs_wait_file "$PBS_TMP/pr.sock" 5
kill "$dpid"
while kill -0 "$dpid" 2>/dev/null; do sleep 0.05; done
pbs_check_eq "after SIGTERM, in a directory the milter user owns: the pidfile is gone" no \
	"$([ -e "$PBS_TMP/run/milter.pid" ] && echo yes || echo no)"
# The milter user can plant a hard link to a file of root's there: never written to.
echo precious >"$PBS_TMP/root-file"
ln "$PBS_TMP/root-file" "$PBS_TMP/run/milter.pid"
"$MILTER" -c "$PBS_TMP/pr.conf" >"$PBS_TMP/pr.start" 2>&1
dpid=$(tr -d '\n' <"$PBS_TMP/run/milter.pid")
[[ $dpid =~ ^[0-9]+$ ]] && pbs_track_pid "$dpid"
pbs_check_eq "pidfile as a hard link to root's file: that file is not written" precious \
	"$(cat "$PBS_TMP/root-file")"
pbs_check_match "pidfile as a hard link: replaced by the milter's own pidfile" '^[0-9]+$' "$dpid"
kill "$dpid" 2>/dev/null

pbs_done
