# milter.sh — start and stop popbsmtp-milter for the end-to-end tests and the demo
# (bash, sourced after common.sh). PBS_BIN must name the directory holding the built
# programs' subdirectories (the CMake build dir: hook/, milter/, ctl/). The pbs_check_*
# story steps at the end, shared by the Postfix and Sendmail tests, also need dovecot.sh
# and postfix.sh (the curl and swaks helpers).

# pbs_milter_conf_group SOCKET_PATH — the milter{} group a test config needs: a unix
# socket anyone may use (Postfix and Sendmail run as other users), no privilege drop,
# only 127.0.0.1 trusted so 127.0.0.2… are ordinary clients.
pbs_milter_conf_group() {
	printf 'milter: { socket = "unix:%s"; socket_mode = "0666"; user = ""; trusted = [ "127.0.0.1/32", "::1/128" ]; %s };' \
		"$1" "${PBS_CONF_MILTER_EXTRA:-}"
}

# pbs_start_milter CONF [LOG] — run popbsmtp-milter -f with CONF in the background, its log
# in MILTER_LOG (LOG, default $PBS_TMP/milter.log); wait until its socket exists. Sets
# MILTER_PID, MILTER_SOCKET.
pbs_start_milter() {
	MILTER_SOCKET=$(sed -n 's/.*socket = "unix:\([^"]*\)".*/\1/p' "$1" | tail -n 1)
	MILTER_LOG=${2:-$PBS_TMP/milter.log}
	"$PBS_BIN/milter/popbsmtp-milter" -f -c "$1" >>"$MILTER_LOG" 2>&1 &
	MILTER_PID=$!
	# libmilter takes up to 5 s to stop on SIGTERM; the exit trap may have to KILL it, and
	# bash should not report that as a crash.
	disown "$MILTER_PID"
	pbs_track_pid "$MILTER_PID"
	pbs_wait_file "$MILTER_SOCKET" 5 || { cat "$MILTER_LOG" >&2; return 1; }
}

# pbs_stop_milter — stop the milter (SIGTERM) and wait until it has exited.
pbs_stop_milter() {
	kill "$MILTER_PID" 2>/dev/null
	while kill -0 "$MILTER_PID" 2>/dev/null; do sleep 0.05; done
	rm -f "$MILTER_SOCKET"
}

# pbs_ctl ARGS… — popbsmtpctl with the test's config.
pbs_ctl() { "$PBS_BIN/ctl/popbsmtpctl" -c "$PBS_CONF" "$@"; }

# pbs_check_accepted_message SRC — a leased SRC sends one message to two relay recipients
# through the MTA under test: the milter accepts the message at the first, the MTA asks it
# no more, and both recipients must still reach the next hop (the smtp-sink).
pbs_check_accepted_message() {
	pbs_smtp "$1" first@remote.example second@remote.example >/dev/null
	pbs_check_match "lease, two relay recipients: the second is accepted too" '^250 ' \
		"$(pbs_rcpt_reply second@remote.example)"
	if pbs_sink_wait second@remote.example 1 && pbs_sink_wait first@remote.example 1; then
		pbs_ok "both relay recipients reached the next hop"
	else
		pbs_fail "a recipient of the two-recipient message never reached the next hop"
	fi
}

# pbs_start_story_servers [GATE] — everything the Postfix and Sendmail stories run on but the
# MTA: a private Redis, PBS_CONF (a config for it with a milter{} group on
# $PBS_TMP/milter.sock), Dovecot running popbsmtp-postlogin -c PBS_CONF, the gate and
# smtp-sink as the next hop. GATE "milter" (the default) starts the milter; "policy" starts
# nothing (Postfix's spawn(8) runs popbsmtp-policy) but writes POLICY_CMD, the command to give
# pbs_start_postfix as "policy:$POLICY_CMD" (see pbs_policy_command). Sets GATE_LOG, the log
# of the gate's decisions, and GATE_REFUSAL, the regex of the refusal of an unleased relay.
# Returns 1 if one of them does not come up.
pbs_start_story_servers() {
	pbs_start_redis || return 1
	PBS_CONF="$PBS_TMP/popbsmtp.conf"
	pbs_write_config "$PBS_CONF" "$(pbs_milter_conf_group "$PBS_TMP/milter.sock")"
	pbs_start_dovecot "$PBS_BIN/hook/popbsmtp-postlogin" -c "$PBS_CONF" || return 1
	if [ "${1:-milter}" = policy ]; then
		pbs_policy_command "$PBS_CONF"
		# The milter's reply carries reject_text; on the policy gate Postfix refuses itself.
		GATE_REFUSAL='^554 5\.7\.1 .*Relay access denied'
	else
		pbs_start_milter "$PBS_CONF" || return 1
		GATE_LOG=$MILTER_LOG
		GATE_REFUSAL='^550 5\.7\.1 .*Relay access denied'
	fi
	pbs_start_smtp_sink
}

# pbs_policy_command CONF — write $PBS_TMP/popbsmtp-policy, which runs the built
# popbsmtp-policy with its log lines (stderr, which it writes only when stderr is not the
# spawn(8) socket) appended to POLICY_LOG, and set POLICY_CMD to "that -c CONF". Sets
# GATE_LOG=POLICY_LOG. (There is no syslog in the test containers.)
pbs_policy_command() {
	POLICY_LOG="$PBS_TMP/policy.log"
	GATE_LOG=$POLICY_LOG
	install -m 666 /dev/null "$POLICY_LOG"
	printf '#!/bin/sh\nexec %q "$@" 2>>%q\n' "$PBS_BIN/policy/popbsmtp-policy" "$POLICY_LOG" \
		>"$PBS_TMP/popbsmtp-policy"
	chmod 755 "$PBS_TMP/popbsmtp-policy"
	POLICY_CMD="$PBS_TMP/popbsmtp-policy -c $1"
}

# pbs_check_login_lease SRC RCPT — the start of the story on the MTA under test: SRC, with no
# lease, may not relay to RCPT; after an IMAP login as alice from SRC it may, the message
# reaches the next hop, the milter logs the decision with alice's name, and a message to two
# relay recipients goes out whole (pbs_check_accepted_message).
pbs_check_login_lease() {
	local src=$1 rcpt=$2
	# Sendmail puts "<rcpt>... " in front of the milter's reply text.
	pbs_check_match "no lease: relay refused" "$GATE_REFUSAL" \
		"$(pbs_smtp_rcpt_reply "$src" "$rcpt")"

	pbs_login_imap "$src" alice secret
	pbs_check_eq "IMAP login from $src" 0 $?
	pbs_check_match "after the IMAP login: relay accepted" '^250 ' "$(pbs_smtp_rcpt_reply "$src" "$rcpt")"
	if pbs_sink_wait "$rcpt" 1; then
		pbs_ok "the relayed message reached the next hop"
	else
		pbs_fail "the relayed message never reached the next hop"
	fi
	pbs_check_match "the decision is logged with the lease's user" \
		"relay allowed: client=$(pbs_re_quote "$src") rcpt=<$(pbs_re_quote "$rcpt")> reason=lease user=alice" \
		"$(cat "$GATE_LOG")"
	pbs_check_accepted_message "$src"
}

# pbs_check_policy_story RCPT LOCAL_RCPT — the start of the story on Postfix with a policy
# gate (spawn(8) or the daemon): pbs_check_login_lease from 127.0.0.5, the refusal before it
# Postfix's own, a POP3 login from 127.0.0.6 that relays, 127.0.0.7 still refused, a local
# recipient accepted from it without the gate being asked (GATE_LOG).
pbs_check_policy_story() {
	local rcpt=$1 local_rcpt=$2
	pbs_check_login_lease 127.0.0.5 "$rcpt"
	pbs_check_match "the refusal is Postfix's own reject_unauth_destination" \
		"reject: RCPT from .*127\.0\.0\.5.*: 554 5\.7\.1 <$(pbs_re_quote "$rcpt")>: Relay access denied" \
		"$(cat "$POSTFIX_LOG")"
	pbs_login_pop3 127.0.0.6 bob secret
	pbs_check_eq "POP3 login from 127.0.0.6" 0 $?
	pbs_check_match "after the POP3 login: relay accepted" '^250 ' "$(pbs_smtp_rcpt_reply 127.0.0.6 "$rcpt")"
	pbs_check_match "another address is still refused" '^554 5\.7\.1' \
		"$(pbs_smtp_rcpt_reply 127.0.0.7 "$rcpt")"
	pbs_check_match "local recipient accepted without a lease" '^250 ' \
		"$(pbs_smtp_rcpt_reply 127.0.0.7 "$local_rcpt")"
	pbs_check_nomatch "... and the gate was not even asked" "rcpt=<$(pbs_re_quote "$local_rcpt")>" \
		"$(cat "$GATE_LOG")"
}

# pbs_check_short_lease SRC RCPT — grant SRC a lease of 2 s (as carol, with popbsmtpctl): SRC
# relays to RCPT through the MTA under test while the lease lives and is refused once it
# has expired.
pbs_check_short_lease() {
	pbs_ctl grant "$1" carol --ttl 2 >/dev/null
	pbs_check_match "a short lease relays while it lives" '^250 ' "$(pbs_smtp_rcpt_reply "$1" "$2")"
	sleep 2.5
	pbs_check_match "after its TTL the lease is gone: refused" "$GATE_REFUSAL" \
		"$(pbs_smtp_rcpt_reply "$1" "$2")"
}

# pbs_check_redis_outage SRC RELAY_RCPT LOCAL_RCPT — stop the main Redis: SRC's relay to
# RELAY_RCPT is deferred (451), mail from SRC to LOCAL_RCPT is still accepted and an IMAP
# login as alice from SRC still works. Then start Redis again, empty, on the same port: after
# a new login from SRC the relay is accepted again, the milter not restarted. Returns 1 if
# Redis does not come back.
pbs_check_redis_outage() {
	local src=$1 relay_rcpt=$2 local_rcpt=$3
	pbs_stop_redis
	pbs_check_match "Redis stopped: relay deferred" '^451 4\.3\.0' \
		"$(pbs_smtp_rcpt_reply "$src" "$relay_rcpt")"
	pbs_check_match "Redis stopped: local mail still accepted" '^250 ' \
		"$(pbs_smtp_rcpt_reply "$src" "$local_rcpt")"
	pbs_login_imap "$src" alice secret
	pbs_check_eq "Redis stopped: IMAP login still works" 0 $?

	pbs_restart_redis main "$REDIS_PORT" || return 1
	# The restarted Redis is empty; the milter's backoff after the outage lasts at most 0.5 s.
	sleep 0.6
	pbs_login_imap "$src" alice secret
	pbs_check_match "Redis back: a new login relays again, no restart needed" '^250 ' \
		"$(pbs_smtp_rcpt_reply "$src" "$relay_rcpt")"
}

# pbs_check_one_get SRC N — a leased SRC sends one message to N relay recipients through the
# MTA under test: all accepted, with one Redis GET (Redis MONITOR sees every command), and
# every one reaches the next hop.
pbs_check_one_get() {
	local src=$1 n=$2 rcpts=() i monitor
	for i in $(seq 1 "$n"); do rcpts+=("r$i@remote.example"); done
	redis-cli -h 127.0.0.1 -p "$REDIS_PORT" MONITOR >"$PBS_TMP/monitor" &
	monitor=$!
	pbs_track_pid $monitor
	sleep 0.2
	pbs_smtp "$src" "${rcpts[@]}" >"$PBS_TMP/one-get"
	sleep 0.2
	kill $monitor
	pbs_check_eq "$n relay recipients of a leased client: all accepted" "$n" \
		"$(grep -c '^RCPT:.* 250 ' "$PBS_TMP/one-get")"
	pbs_check_eq "... with one Redis GET" 1 "$(grep -c '"GET"' "$PBS_TMP/monitor")"
	pbs_check_eq "... and every one reached the next hop" 0 \
		"$(for i in "${rcpts[@]}"; do pbs_sink_wait "$i" 1 >/dev/null 2>&1 || echo "$i"; done | wc -l)"
}

# pbs_start_policy_daemon LOG ARGS… — popbsmtp-policy ARGS (-L or -l SOCKET, -c CONF) in the
# background, as root or, with PBS_POLICY_DAEMON_AS=USER, started as USER (setpriv); its
# log appended to LOG. Waits until it serves (a new "serving on" line) or exits. Sets
# POLICY_DAEMON_PID.
pbs_start_policy_daemon() {
	local log=$1 i=0 n0 as=()
	shift
	[ -n "${PBS_POLICY_DAEMON_AS-}" ] &&
		as=(setpriv --reuid="$PBS_POLICY_DAEMON_AS" --regid="$(id -gn "$PBS_POLICY_DAEMON_AS")" --clear-groups)
	n0=$(grep -c 'serving on' "$log")
	"${as[@]}" "$PBS_BIN/policy/popbsmtp-policy" "$@" 2>>"$log" &
	POLICY_DAEMON_PID=$!
	pbs_track_pid "$POLICY_DAEMON_PID"
	while [ "$(grep -c 'serving on' "$log")" = "$n0" ] && kill -0 "$POLICY_DAEMON_PID" 2>/dev/null &&
		[ $i -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
}

# pbs_start_story_daemon SOCKET GROUP — pbs_start_story_servers for the policy daemon: the
# same servers, PBS_CONF's policy group listening on the unix SOCKET with GROUP (the MTA's
# way in) as nobody, and the daemon started (pbs_story_daemon). Sets DAEMON_LOG (= GATE_LOG).
pbs_start_story_daemon() {
	pbs_start_story_servers policy || return 1
	printf 'policy: { listen = "unix:%s"; user = "nobody"; socket_group = "%s"; };\n' "$1" "$2" \
		>>"$PBS_CONF"
	DAEMON_LOG=$PBS_TMP/policyd.log
	GATE_LOG=$DAEMON_LOG
	: >"$DAEMON_LOG"
	pbs_story_daemon
}

# pbs_story_daemon — (again) the story's popbsmtp-policy -L, as root; sets DAEMON_PID.
pbs_story_daemon() {
	pbs_start_policy_daemon "$DAEMON_LOG" -c "$PBS_CONF" -L
	DAEMON_PID=$POLICY_DAEMON_PID
}

# PBS_LOCAL_DOMAINS — the milter.local_domains line of the stories: the MTA's own domain and
# a backup-MX domain (which both MTAs route out, through the next hop).
PBS_LOCAL_DOMAINS='local_domains = [ "local.test.example", "backup.test.example" ];'

# pbs_check_sender_routes SRC — SRC holds no lease and milter.local_domains is
# PBS_LOCAL_DOMAINS: a plain recipient in the backup-MX domain is accepted (what the domain
# list is for), but no sender route behind a listed domain ("%" hack, a second "@", a
# quoted local part, a UUCP bang path, a source route) gets through to a remote victim,
# whatever the MTA makes of it, and nothing for the victim reaches the next hop.
pbs_check_sender_routes() {
	local src=$1 domain rcpt
	pbs_check_match "local_domains: a plain backup-MX recipient is accepted" '^250 ' \
		"$(pbs_smtp_rcpt_reply "$src" user@backup.test.example)"
	for domain in local.test.example backup.test.example; do
		for rcpt in "victim%remote.example@$domain" "victim@remote.example@$domain" \
			"\"victim@remote.example\"@$domain" "remote.example!victim@$domain" \
			"@$domain:victim@remote.example"; do
			pbs_check_match "local_domains: sender route <$rcpt> is not relayed" '^5[0-9][0-9] ' \
				"$(pbs_smtp_rcpt_reply "$src" "$rcpt")"
		done
	done
	pbs_check_eq "no sender-routed message reached the next hop" 0 \
		"$(pbs_count_files_with "$SINK_DIR" '^X-Rcpt-Args: .*victim')"
}

# ---- the trace header (usage.trace_header): forged copies never reach the next hop ----

# pbs_trace_headers RCPT — the X-PopBeforeSMTP header lines (any case, a space before the
# colon, with their continuation lines) in the header part of the messages the sink got for
# RCPT, CRs removed. Waits for one such message first.
pbs_trace_headers() {
	pbs_sink_wait "$1" 1 >/dev/null 2>&1
	grep -l -iE "^X-Rcpt-Args: <$(pbs_re_quote "$1")>" -r "$SINK_DIR" | while read -r f; do
		tr -d '\r' <"$f" | awk '/^$/ { exit }
			/^[ \t]/ { if (t) print; next }
			{ t = tolower($0) ~ /^x-popbeforesmtp[ \t]*:/ } t'
	done
}

# pbs_write_forged_message FILE — a message whose client wrote X-PopBeforeSMTP five times, as
# a forger would: the real form, lower and upper case, folded over two lines, a space before
# the colon; and, to be kept, a header whose name only starts the same and the same line in
# the body. For swaks --data (it puts the recipient in for %TO_ADDRESS%).
pbs_write_forged_message() {
	cat >"$1" <<'MSG'
Date: Mon, 07 Dec 2026 17:00:00 +0000
To: %TO_ADDRESS%
From: sender@client.example
Subject: forged trace headers
X-PopBeforeSMTP: user=bob lease=127.0.0.5 service=imap granted=2026-01-01T00:00:00Z
x-popbeforesmtp: user=bob case=lower
X-POPBEFORESMTP: user=bob case=upper
X-PopBeforeSMTP: user=bob
	folded=continuation
X-PopBeforeSMTP : user=bob space=before-colon
X-PopBeforeSMTPx: user=keep another-header
Message-Id: <forged@client.example>

body line
X-PopBeforeSMTP: user=body not a header
MSG
}

# pbs_check_forged_trace WHAT SRC RCPT USER [-- SWAKS_ARGS…] — SRC sends the forged message
# (pbs_write_forged_message) to RCPT through the MTA under test; at the next hop none of the
# client's X-PopBeforeSMTP headers is left, the look-alike header and the body are, and the
# only X-PopBeforeSMTP is popbsmtp's own naming USER — or there is none when USER is "".
pbs_check_forged_trace() {
	local what=$1 src=$2 rcpt=$3 user=$4 h kept
	shift 4
	[ "${1-}" = -- ] && shift
	[ -f "$PBS_TMP/forged.eml" ] || pbs_write_forged_message "$PBS_TMP/forged.eml"
	# "@": a file, whatever the swaks (Debian 13's takes a bare name as the data itself).
	pbs_smtp "$src" "$rcpt" -- --data "@$PBS_TMP/forged.eml" "$@" >/dev/null
	pbs_check_match "$what: accepted" '^DOT 250 ' "$(pbs_smtp_transcript | grep '^DOT ')"
	pbs_sink_wait "$rcpt" 1 >/dev/null 2>&1
	h=$(pbs_trace_headers "$rcpt")
	if [ -n "$user" ]; then
		pbs_check_match "$what: popbsmtp's header naming $user" \
			"^X-PopBeforeSMTP: user=$user lease=[^ ]+ service=[a-z]+ granted=[0-9T:-]+Z\$" "$h"
		pbs_check_eq "$what: that one and no other X-PopBeforeSMTP line" 1 \
			"$(printf '%s\n' "$h" | grep -c .)"
	else
		pbs_check_eq "$what: no X-PopBeforeSMTP header at all" "" "$h"
	fi
	kept=$(grep -l -iE "^X-Rcpt-Args: <$(pbs_re_quote "$rcpt")>" -r "$SINK_DIR" |
		xargs -r grep -hcE '^X-PopBeforeSMTPx: user=keep|^X-PopBeforeSMTP: user=body')
	pbs_check_eq "$what: the look-alike header and the body line are kept" 2 "$kept"
	# What the next hop got, when that fails: the lines that say why.
	[ "$kept" = 2 ] || grep -l -iE "^X-Rcpt-Args: <$(pbs_re_quote "$rcpt")>" -r "$SINK_DIR" |
		xargs -r cat | tr -d '\r' | sed 's/^/#   /' | head -n 40
}
