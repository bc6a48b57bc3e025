# exim.sh — a private Exim 4.96 for popbsmtp's end-to-end tests (bash, sourced after common.sh
# and postfix.sh, whose smtp-sink is the next hop and whose swaks helpers talk to Exim through
# SMTP_PORT). Exim conflicts with Postfix as a package, so it runs from the debs that
# scripts/fetch-exim unpacks (PBS_EXIM_ROOT), in a mount namespace of its own whose
# /etc/passwd and /etc/group are copies with the user Debian-exim the binary is built for.
#
#   pbs_exim_prepare                 make EXIM_DIR (spool, log, the namespace's files) and
#                                    choose EXIM_PORT; sets EXIM_LOG (the mainlog).
#   pbs_exim_conf MAIN_EXTRA ACLS    print a configuration: MAIN_EXTRA goes at the end of
#                                    the main section, ACLS is the whole ACL section (from
#                                    docs/exim.md). Needs SINK_PORT.
#   pbs_exim_doc_conf SOCKET ACL_FILE [MAIN_EXTRA]
#                                    print pbs_exim_conf with docs/exim.md's blocks as
#                                    written, but for the daemon's SOCKET and the ACL_FILE to
#                                    include; sets EXIM_DOC_MACRO and EXIM_DOC_ACLS (the
#                                    blocks as used). Exim's user joins the group mail, as
#                                    "adduser Debian-exim popbsmtp-policy" does on a host.
#   pbs_start_exim CONF              start "exim4 -bdf -C CONF", wait until it listens; sets
#                                    EXIM_PID and SMTP_PORT=EXIM_PORT (the swaks helpers).
#   pbs_stop_exim                    stop it and wait (also registered as cleanup).
#   pbs_exim ARGS…                   run exim4 in the namespace, in a subshell: $(pbs_exim -C CONF -bV).
#   pbs_exim_debian_dir DIR          a copy of the package's /etc/exim4 in DIR/exim4, to edit.
#   pbs_exim_debian DIR LOCALMACROS [SPLIT]
#                                    Debian's exim4-config as its update-exim4.conf generates
#                                    it from DIR/exim4, split (SPLIT true, the default) or
#                                    unsplit (false: exim4.conf.template): smarthost type,
#                                    this test's private paths and LOCALMACROS as Debian's
#                                    local macros (conf.d/main/000_localmacros, or
#                                    exim4.conf.localmacros); prints the generated file.
#
# local.test.example is local: any user there is delivered to $EXIM_DIR/mail/local. Every
# other domain goes to 127.0.0.1:SINK_PORT. 127.0.0.1 is relay_from_hosts; 127.0.0.2… and
# ::1 (Exim listens there too) are ordinary clients. AUTH PLAIN: alice / secret.

PBS_EXIM_ROOT=${PBS_EXIM_ROOT:-/var/cache/popbsmtp/exim-root}
PBS_EXIM_UID=64990    # Debian-exim in the namespace's /etc/passwd

pbs_exim_prepare() {
	[ -x "$PBS_EXIM_ROOT/usr/sbin/exim4" ] ||
		{ echo "no unpacked Exim in $PBS_EXIM_ROOT (run scripts/fetch-exim as root)" >&2; return 1; }
	EXIM_DIR=$PBS_TMP/exim
	EXIM_PORT=$(pbs_free_port)
	install -d -m 0755 "$EXIM_DIR"
	install -d -o "$PBS_EXIM_UID" -g "$PBS_EXIM_UID" -m 0750 "$EXIM_DIR/spool"
	install -d -o "$PBS_EXIM_UID" -g "$PBS_EXIM_UID" -m 0755 "$EXIM_DIR/log" "$EXIM_DIR/mail"
	cp /etc/passwd "$EXIM_DIR/passwd"
	cp /etc/group "$EXIM_DIR/group"
	grep -q '^Debian-exim:' "$EXIM_DIR/passwd" ||
		echo "Debian-exim:x:$PBS_EXIM_UID:$PBS_EXIM_UID::$EXIM_DIR/spool:/usr/sbin/nologin" >>"$EXIM_DIR/passwd"
	grep -q '^Debian-exim:' "$EXIM_DIR/group" || echo "Debian-exim:x:$PBS_EXIM_UID:" >>"$EXIM_DIR/group"
	EXIM_LOG=$EXIM_DIR/log/mainlog
}

# pbs_exim ARGS… — exim4 with ARGS in the private mount namespace. It execs (unshare, then
# bash, then Exim: one process), so call it in a subshell only, $(…) or (…): "(pbs_exim …) &"
# makes $! Exim's own pid.
pbs_exim() {
	exec unshare -m bash -c 'mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group &&
		exec "$2/usr/sbin/exim4" "${@:3}"' \
		pbs-exim "$EXIM_DIR" "$PBS_EXIM_ROOT" "$@"
}

pbs_exim_conf() {
	cat <<EOF
# A private Exim for popbsmtp's tests: loopback, files under $EXIM_DIR, no DNS, no ident.
primary_hostname = mx.test.example
qualify_domain = test.example
domainlist local_domains = local.test.example
domainlist relay_to_domains =
hostlist relay_from_hosts = 127.0.0.1
daemon_smtp_ports = $EXIM_PORT
local_interfaces = <; 127.0.0.1 ; ::1
spool_directory = $EXIM_DIR/spool
log_file_path = $EXIM_DIR/log/%slog
pid_file_path = $EXIM_DIR/exim.pid
host_lookup =
rfc1413_hosts =
rfc1413_query_timeout = 0s
# Exim re-executes itself to deliver: the unpacked binary.
exim_path = $PBS_EXIM_ROOT/usr/sbin/exim4
keep_environment =
tls_advertise_hosts =
acl_smtp_rcpt = acl_check_rcpt
auth_advertise_hosts = *
smtp_accept_max = 100
$1

$2

begin routers

to_sink:
  driver = manualroute
  domains = ! +local_domains
  route_list = * 127.0.0.1
  transport = to_sink
  self = send

local_user:
  driver = accept
  domains = +local_domains
  transport = local_file

begin transports

to_sink:
  driver = smtp
  port = $SINK_PORT
  hosts_try_fastopen = :

local_file:
  driver = appendfile
  file = $EXIM_DIR/mail/local
  user = Debian-exim

begin retry
* * F,1m,1m

begin authenticators

plain:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = \${if and{{eq{\$auth2}{alice}}{eq{\$auth3}{secret}}}}
  server_set_id = \$auth2
EOF
}

pbs_exim_doc_conf() {
	local doc=$PBS_DOCS/exim.md
	EXIM_DOC_MACRO=$(pbs_doc_block "$doc" 'Define them in the main' | sed "s|/run/popbsmtp-policy/policy.sock|$1|")
	EXIM_DOC_ACLS=$(pbs_doc_block "$doc" 'In the ACL section' | sed "s|/usr/share/popbsmtp/exim/popbsmtp.acl|$2|")
	sed -i 's/^\(mail:[^:]*:[^:]*:\)\(.*\)$/\1\2,Debian-exim/; s/^\(mail:[^:]*:[^:]*:\),/\1/' "$EXIM_DIR/group"
	pbs_exim_conf "$EXIM_DOC_MACRO
${3-}" "$EXIM_DOC_ACLS"
}

pbs_start_exim() {
	# A subshell that execs: $! is Exim's own pid.
	(pbs_exim -C "$1" -bdf) >>"$EXIM_DIR/daemon.out" 2>&1 &
	EXIM_PID=$!
	pbs_track_pid "$EXIM_PID"
	pbs_on_cleanup "pbs_stop_exim"
	SMTP_PORT=$EXIM_PORT
	if ! pbs_wait_port "$EXIM_PORT" 10; then
		cat "$EXIM_DIR/daemon.out" "$EXIM_DIR/log/paniclog" 2>/dev/null >&2
		return 1
	fi
}

pbs_stop_exim() {
	[ -n "${EXIM_PID-}" ] || return 0
	kill "$EXIM_PID" 2>/dev/null
	wait "$EXIM_PID" 2>/dev/null
	EXIM_PID=
	# its port free again before the next start
	while ss -Hltn "sport = :$EXIM_PORT" | grep -q .; do sleep 0.05; done
}

# pbs_exim_debian_dir DIR — a copy of Debian 12's /etc/exim4 from the unpacked package in DIR/exim4.
pbs_exim_debian_dir() {
	rm -rf "$1"
	mkdir -p "$1"
	cp -a "$PBS_EXIM_ROOT/etc/exim4" "$1/"
}

pbs_exim_debian() {
	local dir=$1 split=${3:-true} macros
	cat >"$dir/exim4/update-exim4.conf.conf" <<EOF
dc_eximconfig_configtype='smarthost'
dc_other_hostnames='local.test.example'
dc_local_interfaces='127.0.0.1.$EXIM_PORT'
dc_readhost=''
dc_relay_domains=''
dc_minimaldns='false'
dc_relay_nets=''
dc_smarthost='127.0.0.1::$SINK_PORT'
CFILEMODE='644'
dc_use_split_config='$split'
dc_hide_mailname=''
dc_mailname_in_oh='true'
dc_localdelivery='mail_spool'
EOF
	# Debian's places for local macros.
	macros=$dir/exim4/conf.d/main/000_localmacros
	[ "$split" = true ] || macros=$dir/exim4/exim4.conf.localmacros
	cat >"$macros" <<EOF
SPOOLDIR = $EXIM_DIR/spool
MAIN_HARDCODE_PRIMARY_HOSTNAME = mx.test.example
MAIN_HOST_LOOKUP =
MAIN_TLS_ADVERTISE_HOSTS =
$2
EOF
	echo mx.test.example >"$dir/mailname"
	sed "s|/etc/mailname|$dir/mailname|g; s|/etc/exim4/exim4.conf.localmacros|$macros|g" \
		"$PBS_EXIM_ROOT/usr/sbin/update-exim4.conf" >"$dir/update-exim4.conf"
	unshare -m bash -c 'mount --bind "$1/passwd" /etc/passwd && mount --bind "$1/group" /etc/group &&
		bash "$2/update-exim4.conf" --confdir "$2/exim4" --output "$2/generated.conf"' \
		pbs-exim "$EXIM_DIR" "$dir" >"$dir/update.out" 2>&1 || { cat "$dir/update.out" >&2; return 1; }
	# What a package would have in place: the binary's path, and the log and pid files here.
	{
		printf 'log_file_path = %s/log/%%slog\npid_file_path = %s/exim.pid\n' "$EXIM_DIR" "$EXIM_DIR"
		sed "s|^exim_path = .*|exim_path = $PBS_EXIM_ROOT/usr/sbin/exim4|" "$dir/generated.conf"
	} >"$dir/exim4.conf"
	echo "$dir/exim4.conf"
}
