#!/bin/bash
# usage.sh BUILD_DIR — who relayed by lease, and the decision counters (issue 15), against
# a private redis-server: two popbsmtp-milter instances standing for two SMTP hosts
# (usage.host mx1 and mx2) driven by bench/milter-probe, then popbsmtpctl usage, stats and
# metrics (parsed with the Prometheus client library's parser). Also: counts survive a
# restart, a flush refused by Redis (ACL) or lost with Redis itself is retried and counted
# once, every key carries its expiry, the Dovecot hook counts its grants in the round trip
# of the lease, and usage.trace_header changes the milter's protocol only when on.
set -u
export LC_ALL=C
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/milter.sh"
pbs_build_dir_arg "$@"
PROBE=$PBS_BIN/bench/milter-probe
HOOK=$PBS_BIN/hook/popbsmtp-postlogin
PY=/usr/bin/python3 # Debian's, with python3-prometheus-client
for exe in "$PBS_BIN/milter/popbsmtp-milter" "$PROBE" "$HOOK" "$PBS_BIN/ctl/popbsmtpctl"; do
	[ -x "$exe" ] || { echo "missing $exe (build first)" >&2; exit 1; }
done
command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
$PY -c 'import prometheus_client' 2>/dev/null ||
	{ echo "python3-prometheus-client is not installed (scripts/install-deps)" >&2; exit 1; }

pbs_start_redis main || exit 1
PBS_CONF=$PBS_TMP/mx1.conf

# conf HOST EXTRA — the config of SMTP host HOST (its own socket), flushing every second.
conf() {
	PBS_CONF_MILTER_EXTRA='local_domains = [ "here.example" ];' pbs_write_config "$PBS_TMP/$1.conf" \
		"$(pbs_milter_conf_group "$PBS_TMP/$1.sock")" \
		"usage: { host = \"$1\"; flush_interval = 1; $2 };"
}
conf mx1 ""
conf mx2 ""

# start HOST — its milter; PID_<HOST> and SOCK_<HOST>.
start() {
	pbs_start_milter "$PBS_TMP/$1.conf" "$PBS_TMP/milter-$1.log" || exit 1
	eval "PID_$1=$MILTER_PID SOCK_$1=$MILTER_SOCKET"
}
# stop HOST — SIGTERM, and wait: the last flush happens on the way out.
stop() {
	eval "MILTER_PID=\$PID_$1 MILTER_SOCKET=\$SOCK_$1"
	pbs_stop_milter
}

# relay HOST CLIENT [PROBE STEP…] — one message from CLIENT to a relay recipient; OUT is
# the probe's output. "macro:mail:" steps go before MAIL, the other steps after it.
relay() {
	local host=$1 client=$2 sock step pre=() post=()
	shift 2
	for step in "$@"; do
		case $step in macro:mail:*) pre+=("$step") ;; *) post+=("$step") ;; esac
	done
	eval "sock=\$SOCK_$host"
	OUT=$("$PROBE" -t 5000 "unix:$sock" "macro:connect:v=Postfix 3.7.11" "connect:$client" \
		"${pre[@]}" 'mail:<a@client.example>' "${post[@]}" \
		"macro:rcpt:{rcpt_mailer}=smtp" 'rcpt:<far@far.example>' 2>&1)
}
AUTH=("macro:mail:{auth_authen}=carol")
LOCAL=("macro:rcpt:{rcpt_mailer}=local" 'rcpt:<me@here.example>')

# field HOST GATE VERDICT REASON — an all-time counter straight from Redis.
field() { pbs_redis_cli HGET popbsmtp:stat:total "$1|$2|$3|$4"; }

# =====================================================================================
start mx1
start mx2
pbs_ctl grant 192.0.2.10 alice >/dev/null
pbs_ctl grant 192.0.2.20 bob >/dev/null

relay mx1 192.0.2.10
pbs_check_match "alice's lease: relay accepted" 'rcpt:<far@far.example> accept' "$OUT"
relay mx1 192.0.2.10 "${LOCAL[@]}"
pbs_check_match "alice again, a local recipient first: relay accepted" \
	'rcpt:<far@far.example> accept' "$OUT"
relay mx2 192.0.2.10
relay mx2 192.0.2.20
pbs_check_match "bob's lease on mx2: relay accepted" 'rcpt:<far@far.example> accept' "$OUT"
relay mx1 192.0.2.30 "${AUTH[@]}"
pbs_check_match "carol by SMTP AUTH: relay accepted" 'rcpt:<far@far.example> accept' "$OUT"
relay mx1 127.0.0.1
relay mx2 192.0.2.99
pbs_check_match "no lease: relay refused" 'replycode 550' "$OUT"
relay mx2 198.18.0.1
stop mx1
stop mx2

# ---- usage ----
U=$(pbs_ctl --json usage)
users() { $PY -c 'import json,sys; d=json.load(sys.stdin); print(" ".join("%s:%d:%s" % (u["user"], u["messages"], u["last_client"]) for u in d["users"]))'; }
pbs_check_eq "usage: alice 3 messages (2 on mx1, 1 on mx2), bob 1; carol (AUTH) not there" \
	"alice:3:192.0.2.10 bob:1:192.0.2.20" "$(echo "$U" | users | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')"
pbs_check_eq "usage --user bob" "bob:1:192.0.2.20" "$(pbs_ctl --json usage --user bob | users)"
pbs_check_eq "usage --user carol: nobody" "" "$(pbs_ctl --json usage --user carol | users)"
pbs_check_match "usage (text): a row for alice with 3 messages" '^alice +3 ' "$(pbs_ctl usage)"
pbs_check_eq "usage --days 0: refused" 2 "$(pbs_ctl usage --days 0 >/dev/null 2>&1; echo $?)"

# ---- stats: per host and in total ----
S=$(pbs_ctl --json stats)
row() { # row JSON-ARRAY HOST GATE VERDICT REASON — "hour day" of that row, or "none"
	echo "$S" | $PY -c '
import json, sys
d = json.load(sys.stdin); key, host, g, v, r = sys.argv[1:]
rows = [x for x in d[key] if x.get("host", "*") == host and (x["gate"], x["verdict"], x["reason"]) == (g, v, r)]
print("%d %d" % (rows[0]["hour"], rows[0]["day"]) if rows else "none")' "$@"
}
pbs_check_eq "stats: mx1 allowed by lease" "2 2" "$(row decisions mx1 milter allowed lease)"
pbs_check_eq "stats: mx2 allowed by lease" "2 2" "$(row decisions mx2 milter allowed lease)"
pbs_check_eq "stats: mx1 allowed by auth" "1 1" "$(row decisions mx1 milter allowed auth)"
pbs_check_eq "stats: mx1 allowed, trusted" "1 1" "$(row decisions mx1 milter allowed trusted)"
pbs_check_eq "stats: mx1 allowed, local recipient" "1 1" "$(row decisions mx1 milter allowed local)"
pbs_check_eq "stats: mx2 refused, no lease" "2 2" "$(row decisions mx2 milter refused no-lease)"
pbs_check_eq "stats: total allowed by lease" "4 4" "$(row decision_totals '*' milter allowed lease)"
pbs_check_eq "stats: total refused" "2 2" "$(row decision_totals '*' milter refused no-lease)"
pbs_check_eq "stats: the existing keys stay" "True" \
	"$(echo "$S" | $PY -c 'import json,sys; d=json.load(sys.stdin); print(all(k in d for k in ("leases","rtt_us","redis_version","used_memory","lease_key_bytes")))')"
pbs_check_match "stats (text): the decisions table" 'mx1 +milter +allowed +lease +2 +2' "$(pbs_ctl stats)"

# ---- metrics, parsed as Prometheus text ----
M=$PBS_TMP/metrics.txt
pbs_ctl metrics >"$M"
metric() { # metric NAME LABEL=VALUE… — the sample's value, "missing", or "PARSE ERROR …"
	$PY - "$M" "$@" <<'PY'
import sys
from prometheus_client.parser import text_string_to_metric_families
path, name, *want = sys.argv[1:]
want = dict(w.split("=", 1) for w in want)
try:
    fams = list(text_string_to_metric_families(open(path).read()))
except Exception as e:
    print("PARSE ERROR", e); sys.exit()
for f in fams:
    for s in f.samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in want.items()):
            print(int(s.value)); sys.exit()
print("missing")
PY
}
D=popbsmtp_relay_decisions_total
pbs_check_eq "metrics: mx1 allowed by lease" 2 "$(metric $D host=mx1 gate=milter verdict=allowed reason=lease)"
pbs_check_eq "metrics: mx2 refused, no lease" 2 "$(metric $D host=mx2 gate=milter verdict=refused reason=no-lease)"
pbs_check_eq "metrics: a deferral series exists at 0 (rate() sees the first one)" 0 \
	"$(metric $D host=mx1 gate=milter verdict=deferred reason=store-error)"
pbs_check_match "metrics: HELP and TYPE lines" "# TYPE $D counter" "$(cat "$M")"
pbs_check_match "metrics: last flush time per gate" \
	'popbsmtp_last_flush_timestamp_seconds\{host="mx1",gate="milter"\} [0-9]{10}' "$(cat "$M")"

# ---- counts survive a restart ----
start mx1
relay mx1 192.0.2.10
stop mx1
pbs_check_eq "restart: mx1's lease count goes on from 2" 3 "$(field mx1 milter allowed lease)"
pbs_check_eq "restart: alice now 4 messages" "alice:4:192.0.2.10" "$(pbs_ctl --json usage --user alice | users)"

# ---- every key expires by itself ----
bad_ttl=0
for k in $(pbs_redis_cli --scan --pattern 'popbsmtp:stat:*') $(pbs_redis_cli --scan --pattern 'popbsmtp:usage:*'); do
	t=$(pbs_redis_cli TTL "$k")
	[ "$t" -gt 0 ] || { bad_ttl=$((bad_ttl + 1)); echo "# no TTL: $k ($t)"; }
done
pbs_check_eq "retention: every stat/usage key has a TTL" 0 "$bad_ttl"
day=$(date -u +%Y%m%d)
pbs_check_eq "retention: a day's usage expires 30 days after the day ends (default)" \
	$(($(date -u -d "$day" +%s) + 31 * 86400)) "$(pbs_redis_cli EXPIRETIME "popbsmtp:usage:$day")"
conf mx1 "retention_days = 2;"
start mx1
relay mx1 192.0.2.10
stop mx1
pbs_check_eq "retention_days = 2: the day's expiry follows" \
	$(($(date -u -d "$day" +%s) + 3 * 86400)) "$(pbs_redis_cli EXPIRETIME "popbsmtp:usage:$day")"
conf mx1 ""

# ---- a flush Redis refuses (ACL) is kept and sent once, later ----
start mx1
pbs_redis_cli ACL SETUSER default -hincrby >/dev/null
relay mx1 192.0.2.10
relay mx1 192.0.2.99
i=0
until grep -q 'usage counters not written' "$PBS_TMP/milter-mx1.log" || [ $i -ge 100 ]; do sleep 0.05; i=$((i + 1)); done
sleep 1.2 # at least one more refused flush with these counts in it
pbs_check_match "refused flush: logged once" '^1$' "$(grep -c 'usage counters not written' "$PBS_TMP/milter-mx1.log")"
pbs_check_eq "refused flush: nothing written meanwhile" 4 "$(field mx1 milter allowed lease)"
pbs_redis_cli ACL SETUSER default +@all >/dev/null
i=0
until grep -q 'usage counters written again' "$PBS_TMP/milter-mx1.log" || [ $i -ge 100 ]; do sleep 0.05; i=$((i + 1)); done
pbs_check_eq "refused flush: the lease relay arrives once" 5 "$(field mx1 milter allowed lease)"
pbs_check_eq "refused flush: the refusal arrives once" 1 "$(field mx1 milter refused no-lease)"
pbs_check_eq "refused flush: alice's message arrives once" "alice:6:192.0.2.10" \
	"$(pbs_ctl --json usage --user alice | users)"

# ---- Redis gone during flushes, then back (empty): the counts of the outage arrive once ----
pbs_stop_redis main
relay mx1 192.0.2.10
pbs_check_match "Redis down: relay deferred" 'replycode 451' "$OUT"
relay mx1 192.0.2.30 "${AUTH[@]}"
relay mx1 192.0.2.10
sleep 1.5 # flushes fail meanwhile
pbs_restart_redis main "$REDIS_PORT" || pbs_fail "Redis did not restart"
i=0
until [ "$(grep -c 'usage counters written again' "$PBS_TMP/milter-mx1.log")" -ge 2 ] || [ $i -ge 100 ]; do
	sleep 0.05; i=$((i + 1))
done
stop mx1
pbs_check_eq "Redis back: the outage's deferrals arrive once" 2 "$(field mx1 milter deferred store-error)"
pbs_check_eq "Redis back: the outage's AUTH relay arrives once" 1 "$(field mx1 milter allowed auth)"

# ---- usage.trace_header on: the milter's protocol for leased messages ----
conf mx1 'trace_header = "on";'
start mx1
pbs_ctl grant 192.0.2.10 alice >/dev/null # the restarted Redis is empty
relay mx1 192.0.2.30
pbs_check_match "trace header on: the rights to add and delete headers are negotiated" \
	'^negotiated actions=0x11 ' "$OUT"
pbs_check_match "trace header on: the headers are seen (forged ones are deleted), without a reply" \
	'skipped=helo,data,eoh,body,unknown noreply=connect,mail,header$' "$OUT"
relay mx1 192.0.2.10 "${LOCAL[@]}" "macro:rcpt:{rcpt_mailer}=smtp" 'rcpt:<far2@far.example>'
pbs_check_eq "trace header on: a leased message gets CONTINUE (its end must come), and so do its later recipients" \
	"continue|continue|continue" "$(echo "$OUT" | sed -n 's/^rcpt:[^ ]* //p' | paste -sd'|')"
relay mx1 192.0.2.30 "${AUTH[@]}"
pbs_check_match "trace header on: an AUTH relay gets CONTINUE too (its forged headers are deleted at the end)" \
	'rcpt:<far@far.example> continue' "$OUT"
stop mx1
pbs_check_eq "trace header on: the leased message counted once, not per recipient" 1 \
	"$(field mx1 milter allowed lease)"
conf mx1 ""

# ---- the hook counts its grants in the lease's round trip ----
pbs_write_config "$PBS_CONF" "usage: { host = \"imap1\"; };"
IP=192.0.2.40 USER=dave "$HOOK" -c "$PBS_CONF" -s imap /bin/true
IP=192.0.2.41 USER=dave "$HOOK" -c "$PBS_CONF" -s imap /bin/true
pbs_check_eq "hook: two grants counted" 2 "$(field imap1 hook granted lease)"
pbs_check_match "hook: the grant's bucket carries an expiry" '^[0-9]+$' \
	"$(pbs_redis_cli TTL "$(pbs_redis_cli --scan --pattern 'popbsmtp:stat:2*' | head -n 1)")"
pbs_ctl metrics >"$M"
pbs_check_eq "metrics: the hook's grants" 2 \
	"$(metric popbsmtp_lease_grants_total host=imap1 source=hook result=granted reason=lease)"

pbs_done
