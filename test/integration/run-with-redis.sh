#!/bin/bash
# run-with-redis.sh — run a store integration test against private servers it starts:
#   usage: run-with-redis.sh TEST-BINARY [ARGS...]
# Starts a plain redis-server (TCP and a unix socket, DEBUG allowed so the test can stall
# it), a second one with --requirepass s3cret, and a black hole that accepts connections
# and never answers; picks a port nobody listens on; passes all of it to the test in the
# environment. common.sh's exit trap stops everything it started, pass or fail.
set -u
here=$(cd "$(dirname "$0")" && pwd)
. "$here/../e2e/lib/common.sh"

if [ $# -lt 1 ]; then
	echo "usage: $0 TEST-BINARY [ARGS...]" >&2
	exit 2
fi

pbs_start_redis main --enable-debug-command yes \
	--unixsocket "$PBS_TMP/redis.sock" --unixsocketperm 700 || exit 1
export PBS_REDIS_PORT=$REDIS_PORT_main
export PBS_REDIS_SOCKET=$PBS_TMP/redis.sock
pbs_start_redis auth --requirepass s3cret || exit 1
export PBS_REDIS_AUTH_PORT=$REDIS_PORT_auth
pbs_start_blackhole || exit 1
export PBS_BLACKHOLE_PORT=$BLACKHOLE_PORT
# Free right now and nobody of ours will listen there: connections are refused.
PBS_DEAD_PORT=$(pbs_free_port)
export PBS_DEAD_PORT

"$@"
exit $?
