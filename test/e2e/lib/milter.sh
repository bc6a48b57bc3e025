# milter.sh — start and stop popbsmtp-milter for the end-to-end tests and the demo
# (bash, sourced after common.sh). PBS_BIN must name the directory holding the built
# programs' subdirectories (the CMake build dir: hook/, milter/, ctl/).

# pbs_milter_conf_group SOCKET_PATH — the milter{} group a test config needs: a unix
# socket anyone may use (Postfix and Sendmail run as other users), no privilege drop,
# only 127.0.0.1 trusted so 127.0.0.2… are ordinary clients.
pbs_milter_conf_group() {
	printf 'milter: { socket = "unix:%s"; socket_mode = "0666"; user = ""; trusted = [ "127.0.0.1/32", "::1/128" ]; %s };' \
		"$1" "${PBS_CONF_MILTER_EXTRA:-}"
}

# pbs_start_milter CONF — run popbsmtp-milter -f with CONF in the background, its log in
# MILTER_LOG; wait until its socket exists. Sets MILTER_PID, MILTER_SOCKET.
pbs_start_milter() {
	MILTER_SOCKET=$(sed -n 's/.*socket = "unix:\([^"]*\)".*/\1/p' "$1" | tail -n 1)
	MILTER_LOG="$PBS_TMP/milter.log"
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
