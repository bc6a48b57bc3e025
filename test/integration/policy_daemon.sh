#!/bin/bash
# policy_daemon.sh BUILD_DIR — popbsmtp-policy --listen's own life, beside its decisions
# (integration.policy_listen runs integration.policy's checks through it):
#   start     as root: the socket created with policy.socket_mode and policy.socket_group,
#             then the process is policy.user (every uid and gid); a bad config exits 78,
#             an unknown user or a bad socket 71; a stale socket is replaced, a socket a
#             running daemon serves and a file that is not a socket are refused and kept;
#   clients   60 clients at once, each its own messages: every answer right, each
#             connection's message counted once, one GET per message; an inet listener;
#   bounds    policy.max_connections (one more is closed at once, then served again once
#             a slot is free), policy.idle_timeout (an idle and a trickling client closed),
#             a request over 65536 bytes;
#   signals   SIGUSR1 reloads (lease.never takes effect; a bad file is kept out), SIGTERM
#             stops at once with exit 0 and the socket removed; Redis down gives 451.
# Needs root, redis-server, python3, setpriv (util-linux).
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/milter.sh"
pbs_build_dir_arg "$@"
POLICY=$PBS_BIN/policy/popbsmtp-policy
[ -x "$POLICY" ] || { echo "missing $POLICY (build first)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 1; }
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }

pbs_start_redis || exit 1
D=$PBS_TMP/run
install -d -m 0755 "$D"
SOCK=$D/policy.sock
LOG=$PBS_TMP/daemon.log
: >"$LOG"

# conf FILE [POLICY_EXTRA] — a config whose policy group listens on SOCK as USER (nobody).
conf() {
	PBS_CONF_TIMEOUT_MS=300 pbs_write_config "$1" \
		"policy: { listen = \"unix:$SOCK\"; user = \"${USER_:-nobody}\"; socket_group = \"mail\"; ${2:-} };"
}

# start CONF [ARGS…] — the daemon as root in the background; waits for "serving on" (or its
# exit). Sets PID.
start() {
	local conf=$1
	shift
	pbs_start_policy_daemon "$LOG" -c "$conf" -L "$@"
	PID=$POLICY_DAEMON_PID
}

# stop — SIGTERM; sets RC to the exit status and MS to how long the exit took.
stop() {
	local t0
	t0=$(pbs_now_ms)
	kill -TERM "$PID"
	wait "$PID"
	RC=$?
	MS=$(($(pbs_now_ms) - t0))
}

# client — python3 helpers talking to SOCK (or $2): see the functions at the end of the
# heredoc; prints what they print.
client() {
	python3 - "$@" <<'PY'
import socket, sys, threading, time
what, where = sys.argv[1], sys.argv[2]
def conn():
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX); s.connect(where)
    else:
        h, p = where.rsplit(":", 1); s = socket.create_connection((h, int(p)))
    s.settimeout(10)
    return s
def req(client, instance, rcpt="user@remote.example", sasl=""):
    return ("request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
            f"client_address={client}\nclient_name=unknown\nrecipient={rcpt}\n"
            f"instance={instance}\nsasl_username={sasl}\nqueue_id=Q{instance}\n\n").encode()
def answer(s):
    buf = b""
    while not buf.endswith(b"\n\n"):
        try:
            d = s.recv(4096)
        except ConnectionResetError:  # closed with our bytes unread
            d = b""
        if not d:
            return "EOF"
        buf += d
    return buf.decode().split("\n")[0]
def eof_after(s):
    """seconds until the server closes S"""
    t = time.time()
    try:
        while s.recv(4096):
            pass
    except OSError:
        pass
    return time.time() - t
if what == "ask":            # ask WHERE CLIENT INSTANCE [SASL]: one request, one answer
    s = conn(); s.sendall(req(sys.argv[3], sys.argv[4], sasl=sys.argv[5] if len(sys.argv) > 5 else ""))
    print(answer(s))
elif what == "many":         # many WHERE N: N clients at once, 5 messages of 3 recipients each
    n = int(sys.argv[3]); bad = []; start = threading.Barrier(n)
    def one(i):
        try:
            s = conn(); start.wait()
            leased = i % 2 == 0    # even clients hold leases (192.0.2.0-.99 granted below)
            want = "action=OK" if leased else "action=DUNNO"
            for m in range(5):
                for r in range(3):
                    s.sendall(req(f"192.0.2.{i if leased else 100 + i}", f"c{i}m{m}", f"r{r}@remote.example"))
                    a = answer(s)
                    if a != want:
                        bad.append(f"{i}/{m}/{r}: {a}")
            s.close()
        except Exception as e:
            bad.append(f"{i}: {e}")
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print(f"{len(bad)} wrong" + ("".join("\n" + b for b in bad[:5])))
elif what == "hold":         # hold WHERE N: N idle connections, then one more: its fate
    n = int(sys.argv[3]); held = [conn() for _ in range(n)]
    time.sleep(0.3)
    extra = conn(); extra.settimeout(3)
    print("closed" if eof_after(extra) < 2 else "open")
    held[0].close(); time.sleep(0.3)
    s = conn(); s.sendall(req("192.0.2.2", "h1")); print(answer(s))
elif what == "idle":         # idle WHERE: seconds until an idle client is closed
    print(round(eof_after(conn())))
elif what == "trickle":      # trickle WHERE: one byte every 0.5 s; seconds until closed
    s = conn(); t = time.time(); r = req("192.0.2.2", "t1")
    try:
        for b in r[:-2]:
            s.sendall(bytes([b])); time.sleep(0.5)
            if time.time() - t > 10:
                break
    except OSError:
        pass
    print(int((time.time() - t + eof_after(s)) * 10))   # tenths of a second
elif what == "prepend":      # prepend WHERE CLIENT: RCPT then DATA of one message; the DATA answer
    s = conn(); s.sendall(req(sys.argv[3], "p1")); answer(s)
    s.sendall((f"request=smtpd_access_policy\nprotocol_state=DATA\nclient_address={sys.argv[3]}\n"
               "instance=p1\nrecipient=\nsasl_username=\n\n").encode())
    buf = b""
    while not buf.endswith(b"\n\n"):
        d = s.recv(65536)
        if not d:
            break
        buf += d
    print(buf.decode().rstrip("\n"))
elif what == "oversize":     # oversize WHERE: 70000 bytes without an empty line
    s = conn()
    try:
        s.sendall(b"x=" + b"a" * 4000 + b"\n" + (b"y=" + b"b" * 1000 + b"\n") * 66)
    except OSError:
        pass
    print(answer(s))
PY
}

# ---- start and refusals ----
conf "$PBS_TMP/ok.conf"
PBS_CONF=$PBS_TMP/ok.conf
printf 'policy: { listen = "unix:%s"; };\nlease: { ttl = 0; };\n' "$SOCK" >"$PBS_TMP/bad.conf"
"$POLICY" -c "$PBS_TMP/bad.conf" -L 2>>"$LOG"
pbs_check_eq "a bad configuration: exit 78" 78 $?
printf 'policy: {\n  listen = "tcp:10040";\n  max_connections = 0;\n};\n' >"$PBS_TMP/bad-policy.conf"
out=$("$POLICY" -t -c "$PBS_TMP/bad-policy.conf" 2>&1)
pbs_check_eq "-t on a bad policy group: exit 78" 78 $?
pbs_check_match "... names FILE:LINE of policy.listen" "bad-policy\.conf:2: policy\.listen: expected" "$out"
pbs_check_match "... and of policy.max_connections" "bad-policy\.conf:3: policy\.max_connections" "$out"
pbs_check_match "-t on the good one: OK" 'configuration OK' "$("$POLICY" -t -c "$PBS_TMP/ok.conf" 2>&1)"
pbs_check_eq "... and no socket" no "$([ -e "$SOCK" ] && echo yes || echo no)"
"$POLICY" -c "$PBS_TMP/ok.conf" -l tcp:99 2>>"$LOG"
pbs_check_eq "-l with a bad socket: exit 71" 71 $?
pbs_check_match "... logged" "bad socket 'tcp:99'" "$(cat "$LOG")"
USER_=no-such-user-pbs conf "$PBS_TMP/nouser.conf"
"$POLICY" -c "$PBS_TMP/nouser.conf" -L 2>>"$LOG"
pbs_check_eq "an unknown policy.user: exit 71" 71 $?
pbs_check_match "... named" "policy.user 'no-such-user-pbs' does not exist" "$(cat "$LOG")"
echo precious >"$SOCK"
"$POLICY" -c "$PBS_TMP/ok.conf" -L 2>>"$LOG"
pbs_check_eq "a plain file where the socket goes: exit 71, the file kept" "71 precious" \
	"$? $(cat "$SOCK")"
rm -f "$SOCK"

start "$PBS_TMP/ok.conf"
pbs_check_eq "started as root: serving" yes "$(kill -0 "$PID" 2>/dev/null && echo yes)"
pbs_check_eq "the socket: mode 0660, group mail, made by root before the drop" \
	"660 root mail socket" "$(stat -c '%a %U %G %F' "$SOCK")"
NOBODY=$(id -u nobody)
pbs_check_eq "the process is policy.user: every uid and gid, no other group" \
	"$NOBODY $NOBODY $NOBODY $NOBODY|65534 65534 65534 65534|65534" \
	"$(awk '/^Uid:/ {u=$2" "$3" "$4" "$5} /^Gid:/ {g=$2" "$3" "$4" "$5} /^Groups:/ {gr=$2} END {print u"|"g"|"gr}' "/proc/$PID/status")"
"$POLICY" -c "$PBS_TMP/ok.conf" -L 2>>"$LOG"
pbs_check_eq "a second daemon on the served socket: exit 71" 71 $?
pbs_check_match "... it says the socket is in use" "is in use by a running policy" "$(cat "$LOG")"
pbs_check_eq "... and the first still answers" "action=DUNNO" "$(client ask "$SOCK" 192.0.2.1 s1)"

# ---- many clients at once ----
for i in $(seq 0 2 58); do pbs_ctl grant "192.0.2.$i" "user$i" >/dev/null; done
gets() { pbs_redis_cli INFO commandstats | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0; }
g0=$(gets)
pbs_check_eq "60 clients at once, 900 requests: every answer right" "0 wrong" \
	"$(client many "$SOCK" 60)"
pbs_check_eq "... one Redis GET per message (300), not per recipient" 300 $(($(gets) - g0))
stop
pbs_check_eq "SIGTERM: exit 0" 0 "$RC"
pbs_check_le "... within a second (ms)" 1000 "$MS"
# 150 leased messages, 450 unleased recipients and the refusal before
pbs_check_match "... each connection's message counted once: 150 allowed, 1 + 450 refused" \
	'^150 451$' "$(pbs_redis_cli HGET popbsmtp:stat:total "$(hostname)|policy|allowed|lease") $(pbs_redis_cli HGET popbsmtp:stat:total "$(hostname)|policy|refused|no-lease")"
pbs_check_eq "... the socket stays where nobody may remove it (root's directory)" yes \
	"$([ -S "$SOCK" ] && echo yes)"

# a stale socket: replaced at the next start
start "$PBS_TMP/ok.conf"
pbs_check_eq "a stale socket is replaced" "action=DUNNO" "$(client ask "$SOCK" 192.0.2.1 s2)"
stop
chown nobody "$D"
start "$PBS_TMP/ok.conf"
stop
pbs_check_eq "SIGTERM in a directory policy.user owns: the socket is gone" no \
	"$([ -e "$SOCK" ] && echo yes || echo no)"

# ---- bounds ----
conf "$PBS_TMP/bounds.conf" 'max_connections = 4; idle_timeout = 2;'
pbs_ctl grant 192.0.2.2 bob >/dev/null
start "$PBS_TMP/bounds.conf"
pbs_check_eq "max_connections 4: a fifth client is closed at once; once one leaves, served" \
	"closed|action=OK" "$(client hold "$SOCK" 4 | paste -sd'|')"
pbs_check_match "... logged" 'clients connected \(policy.max_connections\): a new one was closed' \
	"$(cat "$LOG")"
pbs_check_eq "idle_timeout 2: an idle client is closed after 2 s" 2 "$(client idle "$SOCK")"
pbs_check_match "... logged" 'policy client idle for 2 s: closed' "$(cat "$LOG")"
# (the client notices at its next byte: up to half a second later)
t=$(client trickle "$SOCK")
pbs_check_eq "a client trickling a byte every 0.5 s is closed after 2 s too (2.0-2.9 s)" 2 "${t%?}"
pbs_check_eq "a request over 65536 bytes: closed, not answered" EOF "$(client oversize "$SOCK")"
pbs_check_match "... logged" 'longer than 65536 bytes; connection closed' "$(cat "$LOG")"
pbs_check_eq "the daemon serves on" "action=OK" "$(client ask "$SOCK" 192.0.2.2 b1)"

# ---- reload ----
PBS_CONF_LEASE_EXTRA='never = [ "192.0.2.2/32" ];' conf "$PBS_TMP/bounds.conf" \
	'max_connections = 4; idle_timeout = 2;'
kill -USR1 "$PID"
sleep 0.3
pbs_check_eq "SIGUSR1: the new lease.never applies" "action=DUNNO" "$(client ask "$SOCK" 192.0.2.2 b2)"
pbs_check_match "... logged" 'configuration reloaded' "$(cat "$LOG")"
echo 'lease: { ttl = 0; };' >>"$PBS_TMP/bounds.conf"
kill -USR1 "$PID"
sleep 0.3
pbs_check_match "SIGUSR1 with a bad file: logged, the old configuration kept" \
	'reload of .* failed; keeping the previous configuration' "$(cat "$LOG")"
pbs_check_eq "... and it still serves" "action=DUNNO" "$(client ask "$SOCK" 192.0.2.2 b3)"

# ---- the longest reply: a trace header naming a 255-byte user ----
stop
LONG=$(printf 'u%.0s' $(seq 1 255))
pbs_ctl grant 192.0.2.3 "$LONG" >/dev/null
conf "$PBS_TMP/trace.conf"
printf 'usage: { trace_header = "on"; trace_secret = "0123456789abcdef0123"; };\n' >>"$PBS_TMP/trace.conf"
start "$PBS_TMP/trace.conf"
out=$(client prepend "$SOCK" 192.0.2.3)
pbs_check_match "a PREPEND naming a 255-byte user is sent whole" \
	"^action=PREPEND X-PopBeforeSMTP: 0123456789abcdef0123 user=$LONG lease=192\.0\.2\.3 " "$out"
pbs_check_eq "... and the daemon serves on" "action=DUNNO" "$(client ask "$SOCK" 192.0.2.1 t2)"

# ---- Redis down ----
pbs_stop_redis
pbs_check_match "Redis down: 451" '^action=451 4\.3\.0 ' "$(client ask "$SOCK" 192.0.2.4 r1)"
pbs_check_eq "Redis down: AUTH still OK" "action=OK" "$(client ask "$SOCK" 192.0.2.4 r2 bob)"
stop
pbs_check_eq "exit 0 after all that" 0 "$RC"
pbs_restart_redis main "$REDIS_PORT" || exit 1

# ---- inet ----
PORT=$(pbs_free_port)
start "$PBS_TMP/ok.conf" -l "inet:$PORT@127.0.0.1"
pbs_ctl grant 192.0.2.9 carol >/dev/null
pbs_check_eq "-l inet:PORT@127.0.0.1: served over TCP" "action=OK" \
	"$(client ask "127.0.0.1:$PORT" 192.0.2.9 i1)"
stop
pbs_check_nomatch "no line of the log is a reply" '^action=' "$(cat "$LOG")"
pbs_done
