# sentinel.sh — private Redis data nodes (master, replicas) and redis-sentinel processes on
# loopback for the high-availability tests (bash, sourced after common.sh). Every node and
# sentinel runs from its own config file in PBS_TMP (Sentinel rewrites its file; CONFIG
# REWRITE and ACL changes persist in a data node's file) and is stopped when the test exits.
#
#   pbs_ha_start_node NAME [MASTER_PORT]   a data node; a replica of MASTER_PORT if given
#   pbs_ha_restart_node NAME [ARGS…]       start NAME again on its port, from its config file
#   pbs_ha_kill_node NAME                  kill -9 (a crash: no shutdown, no AOF rewrite)
#   pbs_ha_start_sentinel NAME MASTER_PORT a sentinel monitoring PBS_HA_MASTER at MASTER_PORT
#   pbs_ha_wait_ready SECONDS S1 S2 …      until every sentinel sees the others and a replica
#   pbs_ha_master_port SENTINEL_PORT       what that sentinel names as the master's port
#   pbs_ha_role PORT                       ROLE's first word of a data node (or "down")
#   pbs_ha_wait_link_up PORT SECONDS       until a replica's link to its master is up
#   pbs_ha_conf_group S_PORT…              the redis.sentinel{} group for popbsmtp.conf
#   pbs_start_fake_sentinel HOST PORT [MS] a stand-in sentinel naming HOST:PORT as master
#
# Knobs: PBS_HA_MASTER (the monitored name, default mymaster), PBS_HA_DOWN_AFTER_MS (1000),
# PBS_HA_FAILOVER_TIMEOUT_MS (3000), PBS_HA_QUORUM (2), PBS_HA_NODE_EXTRA (lines appended
# to every data node's config, e.g. "appendonly yes").

PBS_HA_MASTER=${PBS_HA_MASTER:-mymaster}

# pbs_ha_start_node NAME [MASTER_PORT] — write $PBS_TMP/redis-NAME/redis.conf and start a
# redis-server from it on a free port. Sets HA_PORT and HA_PORT_<NAME>.
pbs_ha_start_node() {
	local name=$1 master=${2:-} dir="$PBS_TMP/redis-$1" port
	mkdir -p "$dir"
	port=$(pbs_free_port)
	{
		printf 'port %s\nbind 127.0.0.1\ndaemonize yes\n' "$port"
		printf 'pidfile %s/redis.pid\nlogfile %s/redis.log\ndir %s\n' "$dir" "$dir" "$dir"
		printf 'save ""\n'
		# No 5 s pause before the first full sync of a replica (the default since 7.0).
		printf 'repl-diskless-sync-delay 0\n'
		[ -n "$master" ] && printf 'replicaof 127.0.0.1 %s\n' "$master"
		[ -n "${PBS_HA_NODE_EXTRA:-}" ] && printf '%s\n' "$PBS_HA_NODE_EXTRA"
	} >"$dir/redis.conf"
	echo "$port" >"$dir/port"
	redis-server "$dir/redis.conf" || return 1
	pbs_wait_file "$dir/redis.pid" 5 || return 1
	pbs_on_cleanup "kill -9 \$(cat '$dir/redis.pid' 2>/dev/null) 2>/dev/null"
	pbs_wait_port "$port" 5 || return 1
	HA_PORT=$port
	eval "HA_PORT_$name=$port"
}

# pbs_ha_restart_node NAME [redis-server ARGS…] — start NAME again from its config file
# (which CONFIG REWRITE may have changed) on its old port; extra args override the file.
pbs_ha_restart_node() {
	local name=$1 dir="$PBS_TMP/redis-$1" port
	shift
	port=$(cat "$dir/port")
	rm -f "$dir/redis.pid"
	redis-server "$dir/redis.conf" "$@" || return 1
	pbs_wait_file "$dir/redis.pid" 5 && pbs_wait_port "$port" 5
}

# pbs_ha_kill_node NAME — SIGKILL the node and wait until its port is closed.
pbs_ha_kill_node() {
	local dir="$PBS_TMP/redis-$1" pid port i=0
	pid=$(cat "$dir/redis.pid" 2>/dev/null) || return 1
	port=$(cat "$dir/port")
	kill -9 "$pid" 2>/dev/null
	while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.02
		i=$((i + 1))
	done
	rm -f "$dir/redis.pid"
}

# pbs_ha_start_sentinel NAME MASTER_PORT — a redis-sentinel on a free port. Sets
# HA_SENTINEL_PORT and HA_SENTINEL_PORT_<NAME>.
pbs_ha_start_sentinel() {
	local name=$1 master=$2 dir="$PBS_TMP/sentinel-$1" port
	mkdir -p "$dir"
	port=$(pbs_free_port)
	cat >"$dir/sentinel.conf" <<EOF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/sentinel.pid
logfile $dir/sentinel.log
dir $dir
sentinel resolve-hostnames no
sentinel monitor $PBS_HA_MASTER 127.0.0.1 $master ${PBS_HA_QUORUM:-2}
sentinel down-after-milliseconds $PBS_HA_MASTER ${PBS_HA_DOWN_AFTER_MS:-1000}
sentinel failover-timeout $PBS_HA_MASTER ${PBS_HA_FAILOVER_TIMEOUT_MS:-3000}
sentinel parallel-syncs $PBS_HA_MASTER 1
EOF
	redis-sentinel "$dir/sentinel.conf" || return 1
	pbs_wait_file "$dir/sentinel.pid" 5 || return 1
	pbs_on_cleanup "kill -9 \$(cat '$dir/sentinel.pid' 2>/dev/null) 2>/dev/null"
	pbs_wait_port "$port" 5 || return 1
	HA_SENTINEL_PORT=$port
	eval "HA_SENTINEL_PORT_$name=$port"
}

# pbs_ha_sentinel_field SENTINEL_PORT FIELD — one field of SENTINEL MASTER <name>.
pbs_ha_sentinel_field() {
	redis-cli -h 127.0.0.1 -p "$1" SENTINEL MASTER "$PBS_HA_MASTER" 2>/dev/null |
		awk -v f="$2" 'prev == f { print; exit } { prev = $0 }'
}

# pbs_ha_wait_ready SECONDS SENTINEL_PORT… — wait until every sentinel knows the other
# sentinels, knows at least one replica, and CKQUORUM says a failover can be authorized.
pbs_ha_wait_ready() {
	local limit=$1 t0 p others ok
	shift
	others=$(($# - 1))
	t0=$(pbs_now_ms)
	while [ $(($(pbs_now_ms) - t0)) -lt $((limit * 1000)) ]; do
		ok=1
		for p in "$@"; do
			[ "$(pbs_ha_sentinel_field "$p" num-other-sentinels)" = "$others" ] || ok=0
			[ "$(pbs_ha_sentinel_field "$p" num-slaves)" -ge 1 ] 2>/dev/null || ok=0
			redis-cli -h 127.0.0.1 -p "$p" SENTINEL CKQUORUM "$PBS_HA_MASTER" 2>/dev/null |
				grep -q '^OK' || ok=0
			[ $ok = 1 ] || break
		done
		[ $ok = 1 ] && return 0
		sleep 0.2
	done
	echo "sentinels not ready within ${limit}s" >&2
	return 1
}

# pbs_ha_master_port SENTINEL_PORT — the port that sentinel names for the master.
pbs_ha_master_port() {
	redis-cli -h 127.0.0.1 -p "$1" SENTINEL get-master-addr-by-name "$PBS_HA_MASTER" \
		2>/dev/null | sed -n 2p
}

# pbs_ha_role PORT — "master", "slave" (a replica) or "down".
pbs_ha_role() {
	local r
	r=$(redis-cli -h 127.0.0.1 -p "$1" ROLE 2>/dev/null | head -n 1)
	printf '%s\n' "${r:-down}"
}

# pbs_ha_wait_link_up PORT SECONDS — wait until the replica at PORT is in sync.
pbs_ha_wait_link_up() {
	local port=$1 limit=$2 t0
	t0=$(pbs_now_ms)
	while [ $(($(pbs_now_ms) - t0)) -lt $((limit * 1000)) ]; do
		redis-cli -h 127.0.0.1 -p "$port" INFO replication 2>/dev/null |
			grep -q '^master_link_status:up' && return 0
		sleep 0.1
	done
	echo "replica at $port not in sync within ${limit}s" >&2
	return 1
}

# pbs_ha_conf_group SENTINEL_PORT… — the sentinel{} group, to put inside redis{}.
pbs_ha_conf_group() {
	local p nodes=""
	for p in "$@"; do nodes="$nodes${nodes:+, }\"127.0.0.1:$p\""; done
	printf 'sentinel: { master = "%s"; nodes = [ %s ]; password = ""; };' "$PBS_HA_MASTER" "$nodes"
}

# pbs_start_fake_sentinel HOST PORT [DELAY_MS] — a stand-in for a sentinel (a broken or
# hostile one) on a free port: it answers AUTH with +OK, SENTINEL get-master-addr-by-name
# with [HOST, PORT] exactly as given (any bytes, newlines included) after DELAY_MS, and
# anything else with an error. Sets FAKE_SENTINEL_PORT.
pbs_start_fake_sentinel() {
	FAKE_SENTINEL_PORT=$(pbs_free_port)
	/usr/bin/python3 - "$FAKE_SENTINEL_PORT" "$1" "$2" "${3:-0}" <<'PY' &
import socket, sys, threading, time
port, host, mport, delay = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode(), int(sys.argv[4])

def bulk(b):
    return b"$%d\r\n%s\r\n" % (len(b), b)

def serve(c):
    f = c.makefile("rb")
    try:
        while True:
            line = f.readline()
            if not line.startswith(b"*"):
                return
            args = []
            for _ in range(int(line[1:])):
                n = int(f.readline()[1:])
                args.append(f.read(n + 2)[:n])
            cmd = [a.lower() for a in args[:2]]
            if cmd[:1] == [b"auth"]:
                c.sendall(b"+OK\r\n")
            elif cmd == [b"sentinel", b"get-master-addr-by-name"]:
                time.sleep(delay / 1000)
                c.sendall(b"*2\r\n" + bulk(host) + bulk(mport))
            else:
                c.sendall(b"-ERR not a real sentinel\r\n")
    except (OSError, ValueError):
        pass
    finally:
        c.close()

s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
	pbs_track_pid $!
	pbs_wait_port "$FAKE_SENTINEL_PORT" 5
}
