# dovecot.sh — a private Dovecot instance (IMAP and POP3 on loopback; 2.3 as on Debian 12 or
# 2.4 as on Debian 13) that runs the popbsmtp post-login hook, the popbsmtp mail plugin, or
# both, and curl login helpers, for popbsmtp's end-to-end tests and the demo (bash, sourced
# after common.sh). The system Dovecot is never touched: the instance has its own config,
# base_dir, state_dir, log and instance name under $PBS_TMP/dovecot.

DOVECOT_USERS="alice bob"    # the passwd-file users; every one's password is DOVECOT_PASS
DOVECOT_PASS=secret
DOVECOT_PLUGIN_DIR=""        # plugin mode (pbs_start_dovecot_plugin) when set
DOVECOT_PLUGIN_CONF=""
DOVECOT_EXTRA_CONF=""        # more dovecot.conf lines, e.g. imap_hibernate_timeout
DOVECOT_MORE_USERS=""        # more passwd-file lines, e.g. a user with userdb extra fields

# Dovecot 2.4 refuses a 2.3 configuration and 2.3 knows nothing of 2.4's (docs/dovecot.md
# names every difference): the configuration is written for the Dovecot installed.
DOVECOT_VERSION=$(dovecot --version 2>/dev/null)
case $DOVECOT_VERSION in
2.[0-3].* | "") DOVECOT_24=0 ;;
*) DOVECOT_24=1 ;;
esac
# DOVECOT_INTERNAL_USER: how a service's user= names Dovecot's internal user, for
# DOVECOT_EXTRA_CONF too (2.4 takes a plain $default_internal_user as a user of that name,
# and its master dies at start).
# DOVECOT_SERIES picks docs/dovecot.md's snippets; 2.4 refuses 2.3's vsz_limit = 0, and
# calls an inet_listener's address listen.
# shellcheck disable=SC2016,SC2034 # Dovecot's own $ syntax; the tests use DOVECOT_INTERNAL_USER
if [ "$DOVECOT_24" = 1 ]; then
	DOVECOT_SERIES=2.4 DOVECOT_VSZ_UNLIMITED=unlimited DOVECOT_LISTENER_ADDRESS=listen
	DOVECOT_INTERNAL_USER='$SET:default_internal_user'
else
	DOVECOT_SERIES=2.3 DOVECOT_VSZ_UNLIMITED=0 DOVECOT_LISTENER_ADDRESS=address
	DOVECOT_INTERNAL_USER='$default_internal_user'
fi

# pbs_start_dovecot HOOK_CMD… — start the instance with HOOK_CMD (the hook's path and its
# options, e.g. /path/popbsmtp-postlogin -c FILE) as post-login script of both imap and pop3.
# The hook runs as the dovecot user, so HOOK_CMD's files must be readable by it. Sets
# DOVECOT_DIR, DOVECOT_CONF, DOVECOT_LOG, DOVECOT_IMAP_PORT, DOVECOT_POP3_PORT,
# DOVECOT_LMTP_PORT (plugin mode) and DOVECOT_AUTH_SOCKET (SASL socket for a private
# Postfix). Stopped on exit; calling it again replaces the running instance (e.g. to change
# HOOK_CMD). In plugin mode HOOK_CMD may be empty (the plugin alone) or given (both at once).
pbs_start_dovecot() {
	local word
	[ $# -gt 0 ] || [ -n "$DOVECOT_PLUGIN_DIR" ] || { echo "pbs_start_dovecot: no hook command" >&2; return 1; }
	# Dovecot splits "executable" on blanks, so no word of HOOK_CMD may contain one.
	for word in "$@"; do
		case $word in "" | *[[:space:]]*) echo "pbs_start_dovecot: bad word '$word'" >&2; return 1 ;; esac
	done
	DOVECOT_DIR="$PBS_TMP/dovecot"
	DOVECOT_CONF="$DOVECOT_DIR/dovecot.conf"
	DOVECOT_LOG="$DOVECOT_DIR/dovecot.log"
	DOVECOT_AUTH_SOCKET="$DOVECOT_DIR/auth-postfix"
	DOVECOT_IMAP_PORT=$(pbs_free_port)
	DOVECOT_POP3_PORT=$(pbs_free_port)
	DOVECOT_LMTP_PORT=$(pbs_free_port)
	# Calls in a row can hand out the same port; ask again until they differ.
	while [ "$DOVECOT_POP3_PORT" = "$DOVECOT_IMAP_PORT" ]; do DOVECOT_POP3_PORT=$(pbs_free_port); done
	while [ "$DOVECOT_LMTP_PORT" = "$DOVECOT_IMAP_PORT" ] || [ "$DOVECOT_LMTP_PORT" = "$DOVECOT_POP3_PORT" ]; do
		DOVECOT_LMTP_PORT=$(pbs_free_port)
	done
	pbs_stop_dovecot "$DOVECOT_DIR/run"
	pbs_dovecot_files "$*" || return 1
	pbs_on_cleanup "pbs_stop_dovecot '$DOVECOT_DIR/run'"
	# Its own output to a file: an inherited stdout pipe would keep a caller (a | tail) waiting.
	dovecot -c "$DOVECOT_CONF" </dev/null >"$DOVECOT_DIR/dovecot.out" 2>&1 || { pbs_dovecot_why; return 1; }
	pbs_wait_port "$DOVECOT_IMAP_PORT" 5 && pbs_wait_port "$DOVECOT_POP3_PORT" 5 ||
		{ pbs_dovecot_why; return 1; }
}

# pbs_plugin_test_start BUILD_DIR — the start of a plugin test: PBS_BIN from BUILD_DIR, and
# PLUGIN_DIR, where lib90_popbsmtp_plugin.so was built; "Bail out!" (TAP) when it was not.
pbs_plugin_test_start() {
	pbs_build_dir_arg "$@"
	PLUGIN_DIR="$PBS_BIN/plugin"
	[ -e "$PLUGIN_DIR/lib90_popbsmtp_plugin.so" ] || bail "$PLUGIN_DIR: no plugin built"
}

# pbs_start_dovecot_plugin PLUGIN_DIR CONF [HOOK_CMD…] — start the instance in plugin mode:
# lib90_popbsmtp_plugin.so from PLUGIN_DIR in every mail process (mail_plugins for all
# services, so LMTP, LDA and doveadm load it too and must write no lease) with
# popbsmtp_config = CONF, and LMTP on DOVECOT_LMTP_PORT; with HOOK_CMD the hook runs too.
# The mail processes run as nobody: CONF must be readable by it.
pbs_start_dovecot_plugin() {
	DOVECOT_PLUGIN_DIR=$1
	DOVECOT_PLUGIN_CONF=$2
	shift 2
	pbs_start_dovecot "$@"
}

# pbs_dovecot_files HOOK_CMD — create DOVECOT_DIR afresh: run/state dirs, users, config.
pbs_dovecot_files() {
	local user
	rm -rf "$DOVECOT_DIR"
	mkdir -p "$DOVECOT_DIR/run" "$DOVECOT_DIR/state" "$DOVECOT_DIR/home" || return 1
	chmod 755 "$DOVECOT_DIR"
	# Mail processes run as nobody and create their home (and Maildir) on first login.
	chmod 1777 "$DOVECOT_DIR/home"
	{
		for user in $DOVECOT_USERS; do printf '%s:{PLAIN}%s::::::\n' "$user" "$DOVECOT_PASS"; done
		[ -z "$DOVECOT_MORE_USERS" ] || printf '%s\n' "$DOVECOT_MORE_USERS"
	} >"$DOVECOT_DIR/users"
	pbs_dovecot_conf "$1" >"$DOVECOT_CONF"
	chmod 644 "$DOVECOT_DIR/users" "$DOVECOT_CONF"
}

# pbs_dovecot_conf HOOK_CMD — print dovecot.conf for the instance (FACTS §4 and §6); HOOK_CMD
# may be empty in plugin mode.
pbs_dovecot_conf() {
	# 2.4 wants these two first: the syntax and the storage format the file is written for.
	[ "$DOVECOT_24" = 0 ] || printf 'dovecot_config_version = 2.4.1\ndovecot_storage_version = 2.4.1\n'
	cat <<EOF
protocols = imap pop3
listen = 127.0.0.1
base_dir = $DOVECOT_DIR/run
state_dir = $DOVECOT_DIR/state
instance_name = dovecot-${PBS_TMP##*/}
log_path = $DOVECOT_LOG
ssl = no
auth_mechanisms = plain login
# A wrong password is answered at once (default 2 s), so failure tests stay fast.
auth_failure_delay = 0
first_valid_uid = 0
$(if [ "$DOVECOT_24" = 1 ]; then pbs_dovecot_conf_users24; else pbs_dovecot_conf_users23; fi)
service imap-login {
  inet_listener imap {
    $DOVECOT_LISTENER_ADDRESS = 127.0.0.1
    port = $DOVECOT_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    $DOVECOT_LISTENER_ADDRESS = 127.0.0.1
    port = $DOVECOT_POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
}
$(pbs_dovecot_conf_mail "$1")
$([ -n "$DOVECOT_PLUGIN_DIR" ] && pbs_dovecot_conf_plugin)
# SASL for a private Postfix (smtpd_sasl_type = dovecot, smtpd_sasl_path = this socket).
service auth {
  unix_listener $DOVECOT_AUTH_SOCKET {
    mode = 0666
  }
}
$DOVECOT_EXTRA_CONF
EOF
}

# pbs_dovecot_conf_users23 — Dovecot 2.3: cleartext logins, the mail store, the passwd-file.
pbs_dovecot_conf_users23() {
	cat <<EOF
# Clients come from 127.0.0.x to 127.0.0.1, which Dovecot does not count as "secured".
disable_plaintext_auth = no
mail_location = maildir:~/Maildir
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DOVECOT_DIR/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $DOVECOT_DIR/users
  default_fields = uid=nobody gid=nogroup home=$DOVECOT_DIR/home/%u
}
EOF
}

# pbs_dovecot_conf_users24 — the same for Dovecot 2.4, in its names.
pbs_dovecot_conf_users24() {
	cat <<EOF
# Clients come from 127.0.0.x to 127.0.0.1, which Dovecot does not count as "secured".
auth_allow_cleartext = yes
mail_driver = maildir
mail_path = ~/Maildir
passdb passwd-file {
  passwd_file_path = $DOVECOT_DIR/users
}
userdb passwd-file {
  passwd_file_path = $DOVECOT_DIR/users
  fields {
    uid:default = nobody
    gid:default = nogroup
    home:default = $DOVECOT_DIR/home/%{user}
  }
}
EOF
}

# pbs_dovecot_conf_mail HOOK_CMD — the imap service's limit; with HOOK_CMD (the hook's path and
# options) docs/dovecot.md's hook snippet for this Dovecot, which routes imap and pop3 through
# one post-login service each, so the hook learns the protocol from -s.
pbs_dovecot_conf_mail() {
	cat <<EOF
service imap {
  # The plugin's 200-session test holds that many IMAP processes.
  process_limit = 1024
}
EOF
	[ -n "$1" ] || return 0
	# The snippet as written, but with the test's hook and configuration, and vsz_limit where
	# it says extra_groups (the test's configuration is world-readable, and the machine has
	# no popbsmtp group): a hook built with PBS_SANITIZE=ON reserves terabytes of address
	# space for ASan's shadow memory, and the default 256M limit would kill it before main
	# (and fail the login). Dovecot merges blocks of the same service.
	pbs_doc_block "$PBS_DOCS/dovecot.md" "The hook on **Dovecot $DOVECOT_SERIES**" |
		sed -e "s|/usr/sbin/popbsmtp-postlogin -c /etc/popbsmtp/popbsmtp.conf|$1|" \
			-e "s|^\( *\)extra_groups = popbsmtp\$|\1vsz_limit = $DOVECOT_VSZ_UNLIMITED|"
}

# pbs_dovecot_conf_plugin — the popbsmtp plugin for every mail process, and LMTP.
pbs_dovecot_conf_plugin() {
	if [ "$DOVECOT_24" = 1 ]; then
		printf 'protocols {\n  lmtp = yes\n}\nmail_plugins {\n  popbsmtp = yes\n}\n'
	else
		# shellcheck disable=SC2016 # Dovecot's $ syntax
		printf 'protocols = $protocols lmtp\nmail_plugins = $mail_plugins popbsmtp\n'
	fi
	cat <<EOF
mail_plugin_dir = $DOVECOT_PLUGIN_DIR
# Many test sessions share a user and an address.
mail_max_userip_connections = 1000
# docs/dovecot.md's blocks as written (the path of the configuration: the test's own).
$(pbs_doc_block "$PBS_DOCS/dovecot.md" "The plugin on **Dovecot $DOVECOT_SERIES**")
$(pbs_doc_block "$PBS_DOCS/dovecot.md" "For another path on **Dovecot $DOVECOT_SERIES**" |
	sed "s|/etc/popbsmtp/popbsmtp.conf|$DOVECOT_PLUGIN_CONF|")
service lmtp {
  inet_listener lmtp {
    $DOVECOT_LISTENER_ADDRESS = 127.0.0.1
    port = $DOVECOT_LMTP_PORT
  }
}
EOF
}

# pbs_stop_dovecot [BASE_DIR] — stop the instance (default: the current one) and wait until the
# master and every process of its session are gone, so nothing outlives the test.
pbs_stop_dovecot() {
	local base=${1:-$DOVECOT_DIR/run} pid i=0
	pid=$(cat "$base/master.pid" 2>/dev/null)
	# A stale pid file may name a recycled pid: only ever signal a dovecot master.
	[ -n "$pid" ] && [ "$(ps -o comm= -p "$pid")" = dovecot ] || return 0
	kill "$pid"
	while pbs_session_alive "$pid" && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
	pbs_session_alive "$pid" && pkill -9 -s "$pid"
	rm -f "$base/master.pid"
	return 0
}

# pbs_session_alive SID — true while a process of session SID still runs. The daemonized
# master's parent is init, which may take a while to reap it: zombies count as gone.
pbs_session_alive() { ps --no-headers -o stat= --sid "$1" | grep -qv '^Z'; }

# pbs_dovecot_why — show on stderr why Dovecot failed: the tail of its log.
pbs_dovecot_why() {
	echo "# dovecot failed; $DOVECOT_LOG:" >&2
	tail -n 20 "$DOVECOT_LOG" 2>/dev/null | sed 's/^/#   /' >&2
}

# ---- logins with curl; the last one's output is kept in $DOVECOT_DIR/login.out ----

# pbs_login_imap SRC USER PASS — log in over IMAP from source address SRC (and LIST).
# Returns curl's exit status: 0 = logged in, 67 = login denied.
pbs_login_imap() { pbs_login imap "$DOVECOT_IMAP_PORT" "$@"; }

# pbs_login_pop3 SRC USER PASS — the same over POP3.
pbs_login_pop3() { pbs_login pop3 "$DOVECOT_POP3_PORT" "$@"; }

# pbs_login SCHEME PORT SRC USER PASS — the common part of the two above.
pbs_login() {
	curl -sS --interface "$3" --max-time 10 -u "$4:$5" "$1://127.0.0.1:$2/" \
		>"$DOVECOT_DIR/login.out" 2>&1
}

# ---- the log: the hook's stderr lands here, written asynchronously by Dovecot's log process ----

# pbs_dovecot_log_mark — print the log's current size, to read only what comes after it.
pbs_dovecot_log_mark() { stat -c %s "$DOVECOT_LOG" 2>/dev/null || echo 0; }

# pbs_dovecot_log_since MARK [REGEX [SECONDS]] — print the log written after MARK, first
# waiting up to SECONDS (default 2) for a line matching REGEX to show up.
pbs_dovecot_log_since() {
	local mark=$1 re=${2-} limit=${3:-2} i=0
	while [ -n "$re" ] && [ $i -lt $((limit * 20)) ] &&
		! tail -c +$((mark + 1)) "$DOVECOT_LOG" | grep -Eq -- "$re"; do
		sleep 0.05
		i=$((i + 1))
	done
	tail -c +$((mark + 1)) "$DOVECOT_LOG"
}

# ---- IMAP sessions held open in IDLE (imap_idle.py), for the plugin's tests ----

# pbs_idle_start NAME USER SRC… — log USER in over IMAP once from each SRC and keep the
# sessions idling in the background (group NAME, a shell word). Sets PBS_IDLE_OK to how
# many logged in. Call it, and pbs_idle_cmd, in this shell, not in $(…).
pbs_idle_start() {
	local name=$1 user=$2 dir="$PBS_TMP/idle-$1"
	shift 2
	rm -rf "$dir" && mkdir -p "$dir" && mkfifo "$dir/in" || return 1
	"$PBS_LIB/imap_idle.py" "$DOVECOT_IMAP_PORT" "$user" "$DOVECOT_PASS" "$@" \
		<"$dir/in" >"$dir/out" 2>"$dir/err" &
	pbs_track_pid $!
	# The write end stays open in this shell: closing it logs every session out.
	eval "exec {PBS_IDLE_FD_$name}>'$dir/in'"
	PBS_IDLE_OK=$(pbs_idle_answer "$name" 0 ready)
}

# pbs_idle_cmd NAME noop|logout — send the command to every session of NAME; set PBS_IDLE_OK
# to how many answered OK. After logout the group is gone.
pbs_idle_cmd() {
	local name=$1 fd seen
	seen=$(wc -l <"$PBS_TMP/idle-$name/out")
	fd=$(eval "echo \$PBS_IDLE_FD_$name")
	echo "$2" >&"$fd"
	PBS_IDLE_OK=$(pbs_idle_answer "$name" "$seen" "$2 ok")
	if [ "$2" = logout ]; then eval "exec {PBS_IDLE_FD_$name}>&-"; fi
}

# pbs_idle_answer NAME SEEN WORDS — wait (up to 120 s) for a line after the first SEEN lines
# of NAME's output that starts with WORDS; print its count, or nothing on a timeout.
pbs_idle_answer() {
	local out="$PBS_TMP/idle-$1/out" i=0 line
	while [ $i -lt 2400 ]; do
		line=$(tail -n +$(($2 + 1)) "$out" | grep -m1 "^$3 ")
		[ -n "$line" ] && { echo "${line##* }"; return 0; }
		sleep 0.05
		i=$((i + 1))
	done
	return 1
}

# pbs_idle_errors NAME — what went wrong in NAME's sessions (the helper's stderr).
pbs_idle_errors() { cat "$PBS_TMP/idle-$1/err"; }
