#!/bin/bash
# log_forging.sh BUILD_DIR — a hostile or broken sentinel cannot forge log lines (issue 11):
# a stand-in sentinel names a master whose host or port holds a newline and the text of a
# "lease granted" line. popbsmtp-postlogin (whose stderr Dovecot copies into its log) and
# popbsmtpctl (a terminal) must each say one line about it, naming the sentinel, with the
# value escaped, and still go on (the hook execs the login).
# PBS_HOOK / PBS_CTL=/path run the checks against other builds of the hook and the tool.

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"
. "$here/../e2e/lib/sentinel.sh"

pbs_build_dir_arg "$@"
hook=${PBS_HOOK:-$PBS_BIN/hook/popbsmtp-postlogin}
ctl=${PBS_CTL:-$PBS_BIN/ctl/popbsmtpctl}
[ -x "$hook" ] && [ -x "$ctl" ] || { echo "Bail out! hook or ctl not built"; exit 1; }
forged='lease granted: 203.0.113.1 user=mallory service=imap ttl=1800'

# check_one_line WHAT FILE SENTINEL_PORT — FILE (a stderr) holds exactly one line, the
# error naming the sentinel, and no line that starts with the forged text.
check_one_line() {
	local what=$1 text
	text=$(cat "$2")
	pbs_check_eq "$what: exactly one line on stderr" 1 "$(wc -l <"$2")"
	pbs_check_match "$what: the line names the sentinel and shows the value escaped" \
		"sentinel 127\.0\.0\.1:$3 named no valid address .*\\\\x0alease granted" "$text"
	pbs_check_nomatch "$what: no line starts with the forged text" \
		"^(popbsmtp-postlogin: |popbsmtpctl: )?lease granted" "$text"
}

# The newline in the host, then in the port.
n=0
for answer in host port; do
	n=$((n + 1))
	if [ $answer = host ]; then
		pbs_start_fake_sentinel "10.0.0.1"$'\n'"$forged" 6379 || exit 1
	else
		pbs_start_fake_sentinel 127.0.0.1 "1"$'\n'"$forged" || exit 1
	fi
	conf=$PBS_TMP/$answer.conf
	printf 'redis: { timeout_ms = 500; sentinel: { master = "mymaster"; nodes = [ "127.0.0.1:%s" ]; }; };\n' \
		"$FAKE_SENTINEL_PORT" >"$conf"

	env -i IP=192.0.2.7 USER=alice "$hook" -c "$conf" /bin/sh -c 'echo login-goes-on' \
		>"$PBS_TMP/hook-$n.out" 2>"$PBS_TMP/hook-$n.err"
	pbs_check_eq "$answer: the hook still runs the login" login-goes-on "$(cat "$PBS_TMP/hook-$n.out")"
	check_one_line "$answer: hook" "$PBS_TMP/hook-$n.err" "$FAKE_SENTINEL_PORT"

	"$ctl" -c "$conf" check 192.0.2.7 >"$PBS_TMP/ctl-$n.out" 2>"$PBS_TMP/ctl-$n.err"
	pbs_check_eq "$answer: popbsmtpctl check says Redis error (exit 3)" 3 $?
	check_one_line "$answer: popbsmtpctl check" "$PBS_TMP/ctl-$n.err" "$FAKE_SENTINEL_PORT"
	"$ctl" -c "$conf" list >/dev/null 2>"$PBS_TMP/ctl-list-$n.err"
	check_one_line "$answer: popbsmtpctl list" "$PBS_TMP/ctl-list-$n.err" "$FAKE_SENTINEL_PORT"
done

pbs_done
