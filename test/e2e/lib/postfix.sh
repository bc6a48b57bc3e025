# postfix.sh — a private Postfix instance, an smtp-sink next hop and swaks helpers for
# popbsmtp's end-to-end tests and the demo (bash, sourced after common.sh).
#
# Postfix is set up with one of popbsmtp's two gates. The milter gate, as FACTS §1 says a site
# delegates relay to the milter: only 127.0.0.1 is trusted by Postfix, every other client is let
# through by the cidr table, and the milter (milter_default_action = tempfail) is the only relay
# barrier. The policy gate, as docs/postfix.md documents it: Postfix keeps
# reject_unauth_destination and asks popbsmtp-policy (spawn(8)) first. All relay mail goes to
# the sink, so a test can tell whether a relay really went out; local mail lands in
# $POSTFIX_DIR/local.

# ---- smtp-sink: the next hop that records what was relayed ----

# pbs_start_smtp_sink — start smtp-sink on 127.0.0.1:<free port>, one dump file per message in
# SINK_DIR (-d). Sets SINK_PORT, SINK_DIR. Stopped on exit.
pbs_start_smtp_sink() {
	SINK_DIR="$PBS_TMP/sink"
	SINK_PORT=$(pbs_free_port)
	mkdir -p "$SINK_DIR"
	chown nobody "$SINK_DIR"    # smtp-sink writes the dumps after dropping to nobody
	# smtp-sink prints nothing useful on success; its stderr goes to a log for post-mortems.
	smtp-sink -u nobody -d "$SINK_DIR/%Y%m%d%H%M%S." "127.0.0.1:$SINK_PORT" 64 \
		>"$PBS_TMP/sink.log" 2>&1 &
	pbs_track_pid $!
	pbs_wait_port "$SINK_PORT" 5
}

# pbs_sink_count RCPT — print how many messages for RCPT reached the sink.
pbs_sink_count() { pbs_count_files_with "$SINK_DIR" "^X-Rcpt-Args: <$(pbs_re_quote "$1")>"; }

# pbs_sink_wait RCPT N [SECONDS] — wait until N messages for RCPT reached the sink (delivery
# is asynchronous: the SMTP "250 queued" comes before Postfix relays the message).
pbs_sink_wait() { pbs_wait_count pbs_sink_count "$@"; }

# ---- configuration as the documentation gives it (pbs_doc_block: common.sh) ----

# pbs_main_cf_settings — main.cf text on stdin, one "name = value" per line on stdout:
# continuation lines (starting with white space) joined to their setting, as Postfix reads
# them, for postconf -e.
pbs_main_cf_settings() {
	awk '/^[ \t]/ { sub(/^[ \t]+/, " "); line = line $0; next }
		{ if (line != "") print line; line = $0 }
		END { if (line != "") print line }'
}

# ---- the private Postfix instance ----

# pbs_start_postfix GATE [SASL_SOCKET] [-- NAME=VALUE…] — start a private Postfix on
# 127.0.0.1:<free port>. GATE is a Postfix milter address (unix:/path, inet:host:port) for the
# milter gate, "" for no gate, or "policy:COMMAND ARGS…" for a policy gate: the command
# spawn(8) runs as the service popbsmtp-policy (arguments without spaces); SASL_SOCKET is a
# Dovecot auth socket path or "" (no AUTH); NAME=VALUE pairs go into main.cf last (e.g. milter_connect_macros=…). Needs pbs_start_smtp_sink first.
# Sets POSTFIX_PORT, POSTFIX_DIR (instance root), POSTFIX_CONF (the -c dir), POSTFIX_LOG.
# With PBS_POSTFIX_NAME=NAME the instance lives in $PBS_TMP/NAME (default "postfix"): instances
# of other names keep running beside it (two MTAs sharing one Redis); keep their variables.
pbs_start_postfix() {
	local milter=${1-} sasl=${2-}
	shift $(($# < 2 ? $# : 2))
	[ "${1-}" = -- ] && shift
	[ -n "${SINK_PORT-}" ] || { echo "pbs_start_postfix: start the sink first" >&2; return 1; }
	POSTFIX_DIR="$PBS_TMP/${PBS_POSTFIX_NAME:-postfix}"
	POSTFIX_CONF="$POSTFIX_DIR/etc"
	POSTFIX_LOG="$POSTFIX_DIR/maillog"
	POSTFIX_PORT=$(pbs_free_port)
	pbs_stop_postfix "$POSTFIX_CONF"    # a second start replaces the first instance
	rm -rf "$POSTFIX_DIR"
	mkdir -p "$POSTFIX_CONF"
	pbs_postfix_make_dirs
	printf '0.0.0.0/0 OK\n::/0 OK\n' >"$POSTFIX_CONF/popbsmtp-clients.cidr"
	pbs_postfix_master_cf "$milter" >"$POSTFIX_CONF/master.cf"
	pbs_postfix_main_cf "$milter" "$sasl" >"$POSTFIX_CONF/main.cf"
	if [ $# -gt 0 ]; then postconf -c "$POSTFIX_CONF" -e "$@" || return 1; fi
	# Postfix re-reads main.cf every 0.3 s until its mtime is 2 s in the past (a guard against
	# editors): backdating saves up to 2 s per start.
	touch -d '-1 minute' "$POSTFIX_CONF"/*
	pbs_on_cleanup "pbs_stop_postfix '$POSTFIX_CONF'"
	# "master -w" returns once the master listens; check without connecting (a probe
	# connection would reach the milter).
	if ! pbs_postfix_cmd start || ! ss -Hltn "sport = :$POSTFIX_PORT" | grep -q .; then
		pbs_postfix_why
		return 1
	fi
}

# pbs_postfix_make_dirs — create the queue and data directories the way "postfix
# set-permissions" (post-install create-missing, from /etc/postfix/postfix-files) would, and
# ask for a quick start: the checks "postfix start" runs otherwise cost 0.5–4 s on this host.
pbs_postfix_make_dirs() {
	local q="$POSTFIX_DIR/queue"
	install -d -o root -g root -m 755 "$q" "$q/pid"
	install -d -o postfix -g root -m 700 "$POSTFIX_DIR/data" "$q/active" "$q/bounce" \
		"$q/corrupt" "$q/defer" "$q/deferred" "$q/flush" "$q/hold" "$q/incoming" \
		"$q/private" "$q/saved" "$q/trace"
	install -d -o postfix -g postdrop -m 730 "$q/maildrop"
	install -d -o postfix -g postdrop -m 710 "$q/public"
	install -d -o nobody -m 755 "$POSTFIX_DIR/local"    # the local transport runs as nobody
	touch "$q/quick-start"
}

# pbs_postfix_main_cf GATE SASL_SOCKET — print main.cf for the instance.
pbs_postfix_main_cf() {
	local milter=$1 relay
	# The relay delegation of FACTS §1: Postfix trusts only 127.0.0.1 (and SASL users) itself
	# and lets every other client through to the milter, which then decides.
	relay="check_client_access cidr:$POSTFIX_CONF/popbsmtp-clients.cidr"
	case $milter in
	policy:*)
		# The policy gate (docs/postfix.md): Postfix asks popbsmtp-policy only about relay
		# recipients of clients it does not trust, and refuses itself when it says DUNNO.
		relay="permit_auth_destination, check_policy_service unix:private/popbsmtp-policy"
		milter=""
		;;
	esac
	cat <<EOF
compatibility_level = 3.6
queue_directory = $POSTFIX_DIR/queue
data_directory = $POSTFIX_DIR/data
maillog_file_prefixes = $PBS_TMP
maillog_file = $POSTFIX_LOG
myhostname = mx.test.example
mydomain = test.example
myorigin = \$myhostname
mydestination = local.test.example
inet_interfaces = loopback-only
inet_protocols = all
relayhost = [127.0.0.1]:$SINK_PORT
mynetworks = 127.0.0.1/32
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
    $relay, reject_unauth_destination
smtpd_milters = $milter
non_smtpd_milters =
milter_default_action = tempfail
milter_command_timeout = 10s
milter_connect_timeout = 5s
smtpd_authorized_xclient_hosts = 127.0.0.1
# Any local.test.example name is accepted and handed to the "local" transport (so the milter
# sees {rcpt_mailer} = local); master.cf makes that transport write a file.
local_recipient_maps =
alias_maps =
alias_database =
local_destination_recipient_limit = 1
# No DNS anywhere, no reverse lookups, no error delays, no mail to postmaster.
smtp_host_lookup = native
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
notify_classes =
biff = no
EOF
	[ -z "$2" ] ||
		printf 'smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = %s\n' "$2"
}

# pbs_postfix_master_cf [GATE] — print master.cf: smtpd on 127.0.0.1:$POSTFIX_PORT, nothing
# chrooted, postlogd for maillog_file, a "local" transport that stores each delivery as a
# file, and for a policy GATE the spawn(8) service of docs/postfix.md.
pbs_postfix_master_cf() {
	case ${1-} in
	policy:*)
		# user= must not be root for spawn(8); the test's files are world-readable.
		printf 'popbsmtp-policy unix - n n - 0 spawn user=nobody argv=%s\n' "${1#policy:}"
		;;
	esac
	cat <<EOF
127.0.0.1:$POSTFIX_PORT inet n - n - - smtpd
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
proxywrite unix - - n -  1 proxymap
smtp      unix  - - n -  - smtp
relay     unix  - - n -  - smtp
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
local     unix  - n n -  - pipe flags=DOR user=nobody
  argv=/bin/dd status=none of=$POSTFIX_DIR/local/\${queue_id}-\${recipient}
EOF
}

# pbs_postfix_cmd ARGS… — run "postfix -c CONF ARGS…" under script(1): postfix prints its
# errors only to a terminal. The terminal output is kept in $POSTFIX_DIR/postfix.out.
pbs_postfix_cmd() {
	local cmd
	printf -v cmd '%q ' postfix -c "$POSTFIX_CONF" "$@"
	script -qec "$cmd" "$POSTFIX_DIR/postfix.out" >/dev/null </dev/null
}

# pbs_postfix_why — show on stderr why Postfix failed: its terminal output and log tail.
pbs_postfix_why() {
	echo "# postfix failed; postfix output and $POSTFIX_LOG:" >&2
	tail -n 20 "$POSTFIX_DIR/postfix.out" "$POSTFIX_LOG" 2>/dev/null | sed 's/^/#   /' >&2
}

# pbs_stop_postfix [CONF] — stop the instance (default: the current one) and wait until the
# master and all its children are gone. "postfix stop" polls in 1 s steps, so kill the master
# (the same as "postfix abort") and poll its process group instead. Dead children stay zombies
# until init reaps them (up to ~1 s here), so only live states count.
pbs_stop_postfix() {
	local conf=${1:-$POSTFIX_CONF} pid i=0
	[ -f "$conf/main.cf" ] || return 0
	pid=$(sed 1q "$(postconf -c "$conf" -h queue_directory)/pid/master.pid" 2>/dev/null | tr -d ' ')
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
	kill "$pid"
	while pbs_pgrp_alive "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	pbs_pgrp_alive "$pid" && kill -9 -- "-$pid" 2>/dev/null
	return 0
}

# pbs_pgrp_alive PGID — true while a non-zombie process of process group PGID exists.
pbs_pgrp_alive() { pgrep -g "$1" -r D,R,S,T,t >/dev/null; }

# pbs_postfix_wait_queue [SECONDS] — wait until no message is waiting in the incoming or
# active queue (so "nothing reached the sink" is final, not just early).
pbs_postfix_wait_queue() {
	local limit=${1:-10} i=0 q="$POSTFIX_DIR/queue"
	while [ -n "$(find "$q/maildrop" "$q/incoming" "$q/active" -type f 2>/dev/null)" ]; do
		[ $i -ge $((limit * 20)) ] && { echo "Postfix queue not empty after ${limit}s" >&2; return 1; }
		sleep 0.05
		i=$((i + 1))
	done
}

# pbs_local_count RCPT — print how many messages for RCPT were delivered locally.
pbs_local_count() {
	pbs_count_files_with "$POSTFIX_DIR/local" "^Delivered-To: $(pbs_re_quote "$1")\$"
}

# pbs_local_wait RCPT N [SECONDS] — wait until N messages for RCPT were delivered locally.
pbs_local_wait() { pbs_wait_count pbs_local_count "$@"; }

# ---- shared by the counters ----

# pbs_count_files_with DIR REGEX — print how many files under DIR have a line matching REGEX
# (case-insensitive; addresses are compared as written).
pbs_count_files_with() {
	find "$1" -type f -exec grep -liE -- "$2" {} + 2>/dev/null | wc -l
}

# pbs_re_quote TEXT — print TEXT with extended-regex metacharacters escaped.
pbs_re_quote() { printf '%s' "$1" | sed 's/[][\\.*^$+?(){}|]/\\&/g'; }

# pbs_wait_count COUNTER RCPT N [SECONDS] — wait until "COUNTER RCPT" prints N or more.
pbs_wait_count() {
	local counter=$1 rcpt=$2 want=$3 limit=${4:-10} i=0
	while [ "$($counter "$rcpt")" -lt "$want" ]; do
		[ $i -ge $((limit * 20)) ] && { echo "$counter $rcpt: not $want after ${limit}s" >&2; return 1; }
		sleep 0.05
		i=$((i + 1))
	done
}

# ---- swaks: one SMTP session, with a compact transcript ----
# Every session's raw swaks output is kept in $PBS_TMP/smtp/last.raw and its exit status in
# last.rc, so pbs_rcpt_reply / pbs_smtp_rc also work after $(…) subshells. swaks exit codes:
# 0 ok, 2 connect error, 23 MAIL refused, 24 no RCPT accepted, 25 DATA refused, 28 AUTH failed.

# pbs_smtp SRC RCPT… [-- SWAKS_ARGS…] — send one message from source address SRC to the
# recipients via 127.0.0.1:$POSTFIX_PORT (or $SMTP_PORT if set, e.g. by the Sendmail harness).
# Prints one line per server reply, "CMD CODE TEXT", with CMD = CONNECT, EHLO, XCLIENT, AUTH,
# MAIL, RCPT:<addr>, DATA, DOT or QUIT, e.g.
#   RCPT:user@remote.example 554 5.7.1 <user@remote.example>: Relay access denied
# Returns swaks' exit status.
pbs_smtp() {
	local src=$1 to="" args=() sep=0 a d="$PBS_TMP/smtp" rc tmp
	shift
	# Recipients up to the first "--", swaks arguments after it; a later "--" (the wrappers
	# below add one) is dropped.
	for a in "$@"; do
		if [ "$a" = -- ]; then sep=1
		elif [ $sep = 0 ]; then to="$to${to:+,}$a"
		else args+=("$a"); fi
	done
	[ -n "$to" ] || { echo "pbs_smtp: no recipient" >&2; return 2; }    # swaks would prompt
	mkdir -p "$d"
	tmp="$d/$BASHPID.raw"    # a private file first: sessions may run in parallel
	swaks --server "127.0.0.1:${SMTP_PORT:-$POSTFIX_PORT}" --local-interface "$src" \
		--timeout 20 --helo client.example --from sender@client.example --to "$to" "${args[@]}" \
		>"$tmp" 2>&1
	rc=$?
	mv -f "$tmp" "$d/last.raw"
	echo "$rc" >"$d/last.rc"
	pbs_smtp_transcript
	return "$rc"
}

# pbs_smtp_auth SRC USER PASS RCPT… [-- SWAKS_ARGS…] — pbs_smtp with AUTH PLAIN as USER.
pbs_smtp_auth() {
	local src=$1 user=$2 pass=$3
	shift 3
	pbs_smtp "$src" "$@" -- -a PLAIN -au "$user" -ap "$pass"
}

# pbs_smtp_xclient ADDR RCPT… [-- SWAKS_ARGS…] — pbs_smtp from 127.0.0.1, then XCLIENT
# ADDR=ADDR (e.g. IPV6:2001:db8:1:2::77 or 192.0.2.7): Postfix and the milter see ADDR.
pbs_smtp_xclient() {
	local addr=$1
	shift
	pbs_smtp 127.0.0.1 "$@" -- --xclient-addr "$addr"
}

# pbs_smtp_rcpt_reply SRC RCPT… [-- SWAKS_ARGS…] — pbs_smtp, printing only the reply to the
# last RCPT ("250 2.1.5 Ok"). Returns swaks' exit status.
pbs_smtp_rcpt_reply() {
	local rc
	pbs_smtp "$@" >/dev/null
	rc=$?
	pbs_rcpt_reply
	return "$rc"
}

# pbs_smtp_transcript — print the compact transcript of the last session (see pbs_smtp).
# swaks marks lines "->" we sent, "<-" replies, "<**" error replies; multi-line replies are
# reduced to their last line. A reply belongs to the last command sent before it.
pbs_smtp_transcript() {
	awk '
	/^ *-> / { sub(/^ *-> /, ""); cmd = toupper($1)
		if (cmd == "RCPT") { a = $0; sub(/^[^<]*</, "", a); sub(/>.*/, "", a); cmd = "RCPT:" a }
		else if (cmd == ".") cmd = "DOT"
		else if (cmd == "MAIL" || cmd == "DATA" || cmd == "QUIT" || cmd == "AUTH" || cmd == "XCLIENT") ;
		else if (cmd == "EHLO" || cmd == "HELO") cmd = "EHLO"
		else cmd = "BODY"
		next }
	/^ *<(-|\*\*) +[0-9][0-9][0-9]( |$)/ {
		sub(/^ *<(-|\*\*) +/, ""); print (cmd == "" ? "CONNECT" : cmd), $0 }
	' "$PBS_TMP/smtp/last.raw"
}

# pbs_rcpt_reply [RCPT] — print the reply to RCPT (default: the last RCPT) in the last
# session. If the session ended before any RCPT was answered, print instead the error reply
# that ended it (e.g. "451 4.7.1 …" to MAIL when the milter is down), since that is what
# decided the recipient's fate; pbs_smtp_transcript tells which command got it.
pbs_rcpt_reply() {
	pbs_smtp_transcript | awk -v want="${1-}" '
		$1 ~ /^RCPT:/ && (want == "" || tolower($1) == tolower("RCPT:" want)) { line = $0 }
		$1 ~ /^RCPT:/ { rcpt = 1 }
		!rcpt && $2 ~ /^[45]/ && err == "" { err = $0 }
		END { if (line == "" && !rcpt) line = err
		      if (line != "") { sub(/^[^ ]* /, "", line); print line } }'
}

# pbs_smtp_rc — print swaks' exit status of the last session.
pbs_smtp_rc() { cat "$PBS_TMP/smtp/last.rc"; }

# pbs_smtp_raw — print the full swaks output of the last session (for diagnostics).
pbs_smtp_raw() { cat "$PBS_TMP/smtp/last.raw"; }
