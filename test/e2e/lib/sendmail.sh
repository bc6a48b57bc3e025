# sendmail.sh — a private Sendmail 8.17 for popbsmtp's end-to-end tests (bash, sourced after
# common.sh). Sendmail conflicts with Postfix as a package, so it runs from the debs that
# scripts/fetch-sendmail unpacks (PBS_SENDMAIL_ROOT). The relay decision is handed to the milter
# (promiscuous_relay + F=T), as a real popbsmtp site would. See shared FACTS §1, §2 and §6.
#
#   pbs_start_sendmail MILTER_SPEC  start it; MILTER_SPEC in Sendmail syntax
#                                    (local:/path or inet:PORT@127.0.0.1), "" = no milter.
#                                    Needs SINK_PORT (smtp-sink for all non-local mail).
#                                    Sets SENDMAIL_PORT, SENDMAIL_DIR, SENDMAIL_LOG (-X SMTP
#                                    traffic), SENDMAIL_MBOX, SENDMAIL_PID. Startup warnings
#                                    land in $SENDMAIL_DIR/sendmail.out (there is no syslog).
#                                    With PBS_SENDMAIL_MAPPED=1 it also listens on an IPv6
#                                    socket bound to ::ffff:127.0.0.1, port SENDMAIL_MAPPED_PORT:
#                                    IPv4 clients connecting there reach Sendmail (and the
#                                    milter) as IPv4-mapped IPv6 addresses (::ffff:127.0.0.x).
#   pbs_sendmail_add_user USER PASS an SMTP AUTH (PLAIN, LOGIN) account; the milter then sees
#                                    {auth_authen}=USER.
#   pbs_stop_sendmail [PID]         stop it and wait (also registered as cleanup).
#
# local.test.example is local: any user there is delivered (mbox format) to $SENDMAIL_MBOX, and
# its {rcpt_mailer} is "local". Every other domain goes to [127.0.0.1]:SINK_PORT with
# {rcpt_mailer} "relay". The daemon runs in its own UTS and mount namespace as
# mx.test.example, with its own /etc/hosts, so it never waits for DNS.

PBS_SENDMAIL_ROOT=${PBS_SENDMAIL_ROOT:-/var/cache/popbsmtp/sendmail-root}
PBS_SENDMAIL_HOSTNAME=mx.test.example
PBS_SENDMAIL_LOCAL_DOMAIN=local.test.example

# _pbs_sendmail_mc DIR PORT MILTER_SPEC [MAPPED_PORT] — print the .mc (docs quote this heredoc).
_pbs_sendmail_mc() {
	local dir=$1 port=$2 milter=$3 mapped=${4-}
	cat <<EOF
divert(0)dnl
VERSIONID(\`popbsmtp e2e test')dnl
OSTYPE(\`linux')dnl
dnl Everything private: files under the test dir, no DNS, no interface probing.
define(\`QUEUE_DIR', \`$dir/mqueue')dnl
define(\`confPID_FILE', \`$dir/sendmail.pid')dnl
define(\`STATUS_FILE', \`$dir/statistics')dnl
define(\`ALIAS_FILE', \`$dir/aliases')dnl
define(\`confSERVICE_SWITCH_FILE', \`$dir/service.switch')dnl
define(\`confHOSTS_FILE', \`$dir/hosts')dnl
define(\`confDONT_PROBE_INTERFACES', \`True')dnl
define(\`confDONT_BLAME_SENDMAIL', \`TrustStickyBit')dnl
DAEMON_OPTIONS(\`Port=$port, Addr=127.0.0.1, Name=MTA')dnl
$(_pbs_sendmail_mc_mapped "$mapped")
FEATURE(\`no_default_msa')dnl
FEATURE(\`nocanonify')dnl
FEATURE(\`accept_unresolvable_domains')dnl
dnl Deliver before answering DATA: once the client has its 250, the sink or mbox has the mail.
define(\`confDELIVERY_MODE', \`interactive')dnl
dnl Sendmail refuses connections above a load average of 12 and queues above 8 (its
dnl defaults): a test machine running other jobs gets there; the tests are not about that.
define(\`confREFUSE_LA', \`1000')dnl
define(\`confQUEUE_LA', \`1000')dnl
define(\`confDELAY_LA', \`1000')dnl
dnl The milter is the relay gate: Sendmail lets everyone relay, F=T fails closed.
FEATURE(\`promiscuous_relay')dnl
$(_pbs_sendmail_mc_milter "$milter")
define(\`confMILTER_MACROS_CONNECT', confMILTER_MACROS_CONNECT\`, v, {client_addr}')dnl
dnl SMTP AUTH (Cyrus SASL, sasldb in the test dir) so the milter sees {auth_authen}.
define(\`confAUTH_MECHANISMS', \`PLAIN LOGIN')dnl
dnl Local domain: any user (w flag dropped) goes to a file via a script run as root (S).
LOCAL_DOMAIN(\`$PBS_SENDMAIL_LOCAL_DOMAIN')dnl
define(\`LOCAL_MAILER_PATH', \`$dir/deliver')dnl
define(\`LOCAL_MAILER_ARGS', \`deliver \$u')dnl
define(\`LOCAL_MAILER_FLAGS', \`SP')dnl
MODIFY_MAILER_FLAGS(\`LOCAL', \`-w')dnl
dnl Everything else goes to smtp-sink through the "relay" mailer (SMART_HOST takes no port).
define(\`SMART_HOST', \`[127.0.0.1]')dnl
define(\`RELAY_MAILER_ARGS', \`TCP \$h $SINK_PORT')dnl
MAILER(\`local')dnl
MAILER(\`smtp')dnl
EOF
}

# _pbs_sendmail_mc_milter SPEC — the INPUT_MAIL_FILTER line, or a comment when SPEC is empty.
_pbs_sendmail_mc_milter() {
	if [ -n "$1" ]; then
		printf "INPUT_MAIL_FILTER(\`popbsmtp', \`S=%s, F=T, T=C:10s;S:10s;R:10s;E:5m')dnl" "$1"
	else
		printf 'dnl No milter: Sendmail alone (relay-path check only; an open relay!).'
	fi
}

# _pbs_sendmail_mc_mapped PORT — the DAEMON_OPTIONS line of the IPv4-mapped listener, or a
# comment when PORT is empty.
_pbs_sendmail_mc_mapped() {
	if [ -n "$1" ]; then
		printf "DAEMON_OPTIONS(\`Port=%s, Addr=::ffff:127.0.0.1, Family=inet6, %s')dnl" "$1" \
			'Name=MTA-v4mapped'
	else
		printf 'dnl No IPv6 listener.'
	fi
}

# _pbs_sendmail_files DIR — queue dir, hosts, switch, aliases and the local delivery script.
_pbs_sendmail_files() {
	local dir=$1
	mkdir -p "$dir/mqueue"
	chmod 700 "$dir/mqueue"
	# Our name resolves from a file (no DNS here). Not to 127.0.0.1: Sendmail puts its own
	# address in class w, and a smart host in class w is ignored (mail would go direct).
	printf '127.0.0.2\t%s\n127.0.0.1\tlocalhost\n' "$PBS_SENDMAIL_HOSTNAME" >"$dir/hosts"
	printf 'hosts\tfiles\naliases\tfiles\n' >"$dir/service.switch"
	printf 'postmaster: root\nMAILER-DAEMON: root\n' >"$dir/aliases"
	touch "$dir/local.mbox"
	# Cyrus SASL reads <service>.conf from /usr/lib/sasl2: _pbs_sendmail_exec mounts this there.
	mkdir -p "$dir/sasl2"
	printf 'pwcheck_method: auxprop\nauxprop_plugin: sasldb\nmech_list: PLAIN LOGIN\nsasldb_path: %s\n' \
		"$dir/sasldb2" >"$dir/sasl2/Sendmail.conf"
	# The local "mailer": append the message (with its From_ line) and who it was for.
	cat >"$dir/deliver" <<EOF
#!/bin/sh
{ printf 'X-Pbs-Local-Rcpt: %s\n' "\$*"; cat; echo; } >>'$dir/local.mbox'
EOF
	chmod 755 "$dir/deliver"
}

# _pbs_sendmail_cf DIR — build DIR/sendmail.cf from DIR/sendmail.mc with the unpacked cf tree.
_pbs_sendmail_cf() {
	local cfdir="$PBS_SENDMAIL_ROOT/usr/share/sendmail/cf"
	m4 -D_CF_DIR_="$cfdir/" "$cfdir/m4/cf.m4" "$1/sendmail.mc" >"$1/sendmail.cf" 2>"$1/m4.err" ||
		{ cat "$1/m4.err" >&2; return 1; }
}

# _pbs_sendmail_exec DIR ARGS… — exec sendmail as mx.test.example in private namespaces.
# It replaces the calling shell, so that $! is Sendmail's pid: call it with & or inside ( ).
# A dotless hostname makes every start sleep 60 s; the bind mount gives it our /etc/hosts.
_pbs_sendmail_exec() {
	local dir=$1
	shift
	# shellcheck disable=SC2016 # the inner script expands its own arguments
	exec unshare -u -m sh -c 'hostname "$1" && mount --bind "$2/hosts" /etc/hosts &&
		mount --bind "$2/sasl2" /usr/lib/sasl2 && shift 2 && exec "$@"' \
		sh "$PBS_SENDMAIL_HOSTNAME" "$dir" \
		"$PBS_SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" -C "$dir/sendmail.cf" "$@"
}

# pbs_start_sendmail MILTER_SPEC — see the header. Returns non-zero if it does not come up.
pbs_start_sendmail() {
	local milter=$1 dir="$PBS_TMP/sendmail" port
	[ -n "${SINK_PORT:-}" ] || { echo "pbs_start_sendmail: SINK_PORT is not set" >&2; return 1; }
	[ -x "$PBS_SENDMAIL_ROOT/usr/libexec/sendmail/sendmail" ] ||
		{ echo "pbs_start_sendmail: no Sendmail in $PBS_SENDMAIL_ROOT (run scripts/fetch-sendmail)" >&2; return 1; }
	pbs_stop_sendmail # a second start in one test replaces the first (e.g. another milter)
	port=$(pbs_free_port)
	SENDMAIL_MAPPED_PORT=
	if [ "${PBS_SENDMAIL_MAPPED:-0}" = 1 ]; then
		# Two calls in a row can hand out the same port; ask again until they differ.
		until [ -n "$SENDMAIL_MAPPED_PORT" ] && [ "$SENDMAIL_MAPPED_PORT" != "$port" ]; do
			SENDMAIL_MAPPED_PORT=$(pbs_free_port)
		done
	fi
	_pbs_sendmail_files "$dir"
	_pbs_sendmail_mc "$dir" "$port" "$milter" "$SENDMAIL_MAPPED_PORT" >"$dir/sendmail.mc"
	_pbs_sendmail_cf "$dir" || return 1
	# -bD: stay in the foreground so the pid is ours; -X: SMTP traffic log (there is no syslog).
	_pbs_sendmail_exec "$dir" -bD -X "$dir/traffic.log" >"$dir/sendmail.out" 2>&1 &
	SENDMAIL_PID=$!
	pbs_on_cleanup "pbs_stop_sendmail $SENDMAIL_PID"
	# shellcheck disable=SC2034 # for the tests that source this file
	SENDMAIL_PORT=$port SENDMAIL_DIR=$dir SENDMAIL_LOG="$dir/traffic.log" SENDMAIL_MBOX="$dir/local.mbox"
	pbs_wait_port "$port" 15 || { cat "$dir/sendmail.out" >&2; return 1; }
	[ -z "$SENDMAIL_MAPPED_PORT" ] || pbs_wait_port "$SENDMAIL_MAPPED_PORT" 5 ||
		{ cat "$dir/sendmail.out" >&2; return 1; }
}

# pbs_sendmail_add_user USER PASSWORD — let USER log in with SMTP AUTH PLAIN/LOGIN. Works before
# or after the start (the sasldb is read per login). The key is "user NUL realm NUL property",
# the realm being Sendmail's $j; Perl's DB_File writes the Berkeley DB 5.3 hash Cyrus reads.
pbs_sendmail_add_user() {
	local db="$PBS_TMP/sendmail/sasldb2"
	mkdir -p "${db%/*}"
	perl -MDB_File -MFcntl -e '
		my ($db, $user, $realm, $pass) = @ARGV;
		tie(my %h, "DB_File", $db, O_RDWR | O_CREAT, 0600, $DB_HASH) or die "$db: $!\n";
		$h{"$user\0$realm\0userPassword"} = $pass;
		untie %h or die "$db: $!\n";' "$db" "$1" "$PBS_SENDMAIL_HOSTNAME" "$2"
}

# _pbs_any_alive PID… — true while at least one of the PIDs still runs. Zombies count as gone:
# after a stop script (pbs_keep_servers) killed it, Sendmail waits for init to reap it.
_pbs_any_alive() {
	local p
	for p; do ps -o stat= -p "$p" 2>/dev/null | grep -qv '^Z' && return 0; done
	return 1
}

# pbs_stop_sendmail [PID] — TERM the daemon (default: $SENDMAIL_PID) and its session processes
# (it does not pass TERM on to them), wait for all of them (up to 5 s, then KILL). The cleanup
# names the PID, so that the stop script of pbs_keep_servers stops Sendmail too.
# shellcheck disable=SC2086 # pids is a word list
pbs_stop_sendmail() {
	local pid=${1:-${SENDMAIL_PID:-}} pids i=0
	[ -n "$pid" ] || return 0
	# A stale PID may have been recycled: only signal Sendmail (or unshare/sh before the exec).
	case $(ps -o comm= -p "$pid") in sendmail | unshare | sh) ;; *) return 0 ;; esac
	pids="$pid $(ps -o pid= --ppid "$pid")"
	kill $pids 2>/dev/null
	while [ $i -lt 100 ] && _pbs_any_alive $pids; do sleep 0.05; i=$((i + 1)); done
	_pbs_any_alive $pids && kill -9 $pids 2>/dev/null
	wait "$pid" 2>/dev/null
	[ "$pid" != "${SENDMAIL_PID:-}" ] || SENDMAIL_PID=
}
