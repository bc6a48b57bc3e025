/*
 * store.c — the Redis side of leases, over hiredis' blocking API. Every step is
 * bounded: the connect by a poll on a non-blocking socket, reads and writes by a poll
 * up to a deadline plus SO_RCVTIMEO/SO_SNDTIMEO set with redisSetTimeout. The store
 * opens its sockets itself, close-on-exec from their creation (hiredis 0.14 does not):
 * the Dovecot hook may exec the login at any instant. After any I/O error the hiredis
 * context is unusable, so it is freed and the next call connects afresh.
 */
#include "popbsmtp/store.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "popbsmtp/log.h"
#include "popbsmtp/sha1.h"

struct pbs_store {
	struct pbs_redis_config cfg; /* own copies of the strings */
	redisContext *ctx;           /* NULL while disconnected */
	char where[300];             /* "127.0.0.1:6379" or "unix:/path", for messages */
	char err[512];
	size_t good_sentinel;        /* the sentinel that answered last: asked first */
	char master_host[256];       /* with sentinel: the master we are connected to */
	int master_port;
	long long verified_ms;       /* when a sentinel last confirmed it */
	struct addrinfo *resolved;   /* redis.host, resolved once (see dial_tcp) */
	long long limit_ms;          /* pbs_store_bound: no step goes past it; 0: none */
	struct store_script {        /* each script's name for EVALSHA, worked out once */
		const char *text;
		char sha[PBS_SHA1_HEX_MAX];
	} scripts[8];
	int nscripts;
	bool eval_only; /* this connection's ACL refuses EVALSHA: scripts go whole */
};

/* Sentinel-managed connections are re-checked this often: after a planned switchover
 * the old master still says "master" for a while, and would answer with stale leases. */
#define SENTINEL_RECHECK_MS 1000

static long long store_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read one reply from C by DEADLINE (monotonic ms), sending what is queued first.
 * hiredis' own blocking read bounds each read() by SO_RCVTIMEO, not the whole reply, so a
 * server trickling a byte now and then would hold the caller forever. A timeout leaves C
 * in error like any I/O failure (its errstr then says EAGAIN's text). */
static int ctx_read_reply(redisContext *c, long long deadline, redisReply **out)
{
	void *r = NULL;
	int done = 0;

	*out = NULL;
	while (!done)
		if (redisBufferWrite(c, &done) != REDIS_OK)
			return REDIS_ERR;
	if (redisGetReplyFromReader(c, &r) != REDIS_OK)
		return REDIS_ERR;
	while (r == NULL) {
		long long left = deadline - store_now_ms();
		struct pollfd pfd = {c->fd, POLLIN, 0};
		int ready = left > 0 ? poll(&pfd, 1, (int)left) : 0;

		if (ready < 0 && errno == EINTR)
			continue;
		if (ready <= 0) {
			c->err = REDIS_ERR_IO;
			snprintf(c->errstr, sizeof c->errstr, "%s", strerror(EAGAIN));
			return REDIS_ERR;
		}
		if (redisBufferRead(c) != REDIS_OK || redisGetReplyFromReader(c, &r) != REDIS_OK)
			return REDIS_ERR;
	}
	*out = r;
	return REDIS_OK;
}

/* The deadline for one exchange with Redis: timeout_ms from now, and never past the bound
 * a caller set for all of them (pbs_store_bound). */
static long long store_deadline(const pbs_store *s)
{
	long long deadline = store_now_ms() + s->cfg.timeout_ms;

	return s->limit_ms > 0 && s->limit_ms < deadline ? s->limit_ms : deadline;
}

/* redis.timeout_ms as the struct hiredis wants. */
static struct timeval store_timeout(const pbs_store *s)
{
	struct timeval tv = {s->cfg.timeout_ms / 1000, (s->cfg.timeout_ms % 1000) * 1000};
	return tv;
}

/* Wait for the non-blocking connect on FD until DEADLINE. Returns 0 or an errno value. */
static int dial_wait(int fd, long long deadline)
{
	struct pollfd pfd = {fd, POLLOUT, 0};
	socklen_t len = sizeof(int);
	int ready, err = 0;

	do {
		long long left = deadline - store_now_ms();
		ready = left > 0 ? poll(&pfd, 1, (int)left) : 0;
	} while (ready < 0 && errno == EINTR);
	if (ready < 0)
		return errno;
	if (ready == 0)
		return ETIMEDOUT;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		return errno;
	return err;
}

/* A socket connected to ADDR by DEADLINE: close-on-exec from its creation, then blocking
 * (as hiredis' blocking API wants), TCP_NODELAY for TCP. Returns it, or -1 with errno. */
static int dial_one(const struct sockaddr *addr, socklen_t len, long long deadline)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int err = 0, flags, one = 1;

	if (fd < 0)
		return -1;
	if (connect(fd, addr, len) != 0)
		err = errno == EINPROGRESS || errno == EINTR ? dial_wait(fd, deadline) : errno;
	if (err == 0 &&
	    ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0))
		err = errno;
	if (err == 0 && addr->sa_family != AF_UNIX &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
		err = errno;
	if (err != 0) {
		close(fd);
		errno = err;
		return -1;
	}
	return fd;
}

/* Say why a connect failed, in the words the messages use after "connect ". */
static void dial_why(const pbs_store *s, int err, char *why, size_t whylen)
{
	if (err == ETIMEDOUT)
		snprintf(why, whylen, "timed out after %d ms", s->cfg.timeout_ms);
	else
		snprintf(why, whylen, "failed: %s", strerror(err));
}

/* The addresses of HOST:PORT into *LIST. Returns 0, or -1 with WHY filled. */
static int dial_resolve(const char *host, int port, struct addrinfo **list, char *why,
			size_t whylen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	char service[16];
	int rc;

	snprintf(service, sizeof service, "%d", port);
	if ((rc = getaddrinfo(host, service, &hints, list)) != 0) {
		snprintf(why, whylen, "failed: %s",
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	return 0;
}

/* Connect to HOST:PORT, trying each address it resolves to in turn, all by DEADLINE.
 * The configured redis.host is resolved once and kept while connects to it succeed:
 * getaddrinfo has no timeout, and a Dovecot session refreshing its lease must not wait on
 * the resolver every time. A connect that fails on every address drops what was kept, so
 * a host that moved is looked up again. Returns the socket, or -1 with WHY filled. */
static int dial_tcp(pbs_store *s, const char *host, int port, long long deadline, char *why,
		    size_t whylen)
{
	bool configured = host == s->cfg.host && port == s->cfg.port;
	struct addrinfo *list = configured ? s->resolved : NULL, *ai;
	int fd = -1, err = ECONNREFUSED;

	if (list == NULL && dial_resolve(host, port, &list, why, whylen) != 0)
		return -1;
	for (ai = list; ai != NULL && fd < 0; ai = ai->ai_next)
		if ((fd = dial_one(ai->ai_addr, ai->ai_addrlen, deadline)) < 0)
			err = errno;
	if (configured && fd >= 0)
		s->resolved = list;
	else
		freeaddrinfo(list);
	if (configured && fd < 0)
		s->resolved = NULL;
	if (fd < 0)
		dial_why(s, err, why, whylen);
	return fd;
}

/* Connect to the unix socket PATH by DEADLINE. Returns the socket, or -1 with WHY filled. */
static int dial_unix(const pbs_store *s, const char *path, long long deadline, char *why,
		     size_t whylen)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof sun.sun_path) {
		dial_why(s, ENAMETOOLONG, why, whylen);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((fd = dial_one((const struct sockaddr *)&sun, sizeof sun, deadline)) < 0)
		dial_why(s, errno, why, whylen);
	return fd;
}

/* A hiredis context for HOST:PORT, or for the unix socket PATH when not NULL, on a socket
 * opened here (see the file comment), connected within the timeout and with reads and
 * writes bounded. NULL with WHY filled ("failed: ..." or "timed out ...") on failure. */
static redisContext *store_dial(pbs_store *s, const char *host, int port, const char *path,
				char *why, size_t whylen)
{
	long long deadline = store_deadline(s);
	struct timeval tv = store_timeout(s);
	redisContext *c;
	int fd = path ? dial_unix(s, path, deadline, why, whylen)
		      : dial_tcp(s, host, port, deadline, why, whylen);

	if (fd < 0)
		return NULL;
	if ((c = redisConnectFd(fd)) == NULL) {
		close(fd);
		snprintf(why, whylen, "failed: out of memory");
		return NULL;
	}
	if (redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(why, whylen, "failed: setting the timeout: %s", c->errstr);
		redisFree(c);
		return NULL;
	}
	return c;
}

/* Record why the last call failed; returns -1 for convenience. */
static int store_fail(pbs_store *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int store_fail(pbs_store *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err, sizeof s->err, fmt, ap);
	va_end(ap);
	return -1;
}

static char *dup_or_null(const char *v)
{
	return v ? strdup(v) : NULL;
}

pbs_store *pbs_store_new(const struct pbs_redis_config *cfg)
{
	pbs_store *s = calloc(1, sizeof *s);

	if (s == NULL)
		return NULL;
	s->cfg = *cfg;
	s->cfg.host = dup_or_null(cfg->host);
	s->cfg.socket = dup_or_null(cfg->socket);
	s->cfg.password = dup_or_null(cfg->password ? cfg->password : "");
	s->cfg.username = dup_or_null(cfg->username ? cfg->username : "");
	s->cfg.prefix = dup_or_null(cfg->prefix ? cfg->prefix : "");
	s->cfg.sentinel_master = dup_or_null(cfg->sentinel_master ? cfg->sentinel_master : "");
	s->cfg.sentinel_password = dup_or_null(cfg->sentinel_password ? cfg->sentinel_password : "");
	s->cfg.sentinel_nodes.items = NULL;
	s->cfg.sentinel_nodes.count = 0;
	if (cfg->sentinel_nodes.count > 0) {
		size_t i;
		s->cfg.sentinel_nodes.items = calloc(cfg->sentinel_nodes.count, sizeof(char *));
		for (i = 0; s->cfg.sentinel_nodes.items && i < cfg->sentinel_nodes.count; i++)
			if ((s->cfg.sentinel_nodes.items[i] = strdup(cfg->sentinel_nodes.items[i])))
				s->cfg.sentinel_nodes.count++;
		if (s->cfg.sentinel_nodes.count != cfg->sentinel_nodes.count) {
			pbs_store_free(s);
			return NULL;
		}
	}
	if (s->cfg.sentinel_nodes.count > 0)
		snprintf(s->where, sizeof s->where, "master '%s' (via sentinel)",
			 s->cfg.sentinel_master);
	else if (s->cfg.socket)
		snprintf(s->where, sizeof s->where, "unix:%s", s->cfg.socket);
	else
		snprintf(s->where, sizeof s->where, "%s:%d",
			 s->cfg.host ? s->cfg.host : "127.0.0.1", s->cfg.port);
	if (!s->cfg.password || !s->cfg.username || !s->cfg.prefix || !s->cfg.sentinel_master ||
	    !s->cfg.sentinel_password) {
		pbs_store_free(s);
		return NULL;
	}
	return s;
}

void pbs_store_disconnect(pbs_store *s)
{
	if (s->ctx != NULL) {
		redisFree(s->ctx);
		s->ctx = NULL;
	}
	s->eval_only = false; /* an ACL put right counts from the next connection */
}

void pbs_store_free(pbs_store *s)
{
	if (s == NULL)
		return;
	pbs_store_disconnect(s);
	if (s->resolved != NULL)
		freeaddrinfo(s->resolved);
	free(s->cfg.host);
	free(s->cfg.socket);
	free(s->cfg.password);
	free(s->cfg.username);
	free(s->cfg.prefix);
	free(s->cfg.sentinel_master);
	free(s->cfg.sentinel_password);
	for (size_t i = 0; i < s->cfg.sentinel_nodes.count; i++)
		free(s->cfg.sentinel_nodes.items[i]);
	free(s->cfg.sentinel_nodes.items);
	free(s);
}

void pbs_store_bound(pbs_store *s, int ms)
{
	s->limit_ms = ms > 0 ? store_now_ms() + ms : 0;
}

bool pbs_store_connected(const pbs_store *s)
{
	return s->ctx != NULL;
}

const char *pbs_store_error(const pbs_store *s)
{
	return s->err;
}

const char *pbs_store_where(const pbs_store *s)
{
	return s->where;
}

const char *pbs_store_prefix(const pbs_store *s)
{
	return s->cfg.prefix;
}

/* Describe a context error; hiredis reports a receive timeout as EAGAIN's text. */
static int store_io_fail(pbs_store *s, const char *what)
{
	const char *why = s->ctx ? s->ctx->errstr : "out of memory";

	if (s->ctx && s->ctx->err == REDIS_ERR_IO &&
	    strstr(why, strerror(EAGAIN)) != NULL)
		store_fail(s, "Redis at %s: %s timed out after %d ms", s->where, what,
			   s->cfg.timeout_ms);
	else
		store_fail(s, "Redis at %s: %s failed: %s", s->where, what, why);
	pbs_store_disconnect(s);
	return -1;
}

/* Server error replies that mean this connection must go: the server is not a usable
 * master right now (failover, loading) or we are no longer authenticated. */
static bool error_drops_connection(const char *msg)
{
	static const char *const fatal[] = {"READONLY", "MASTERDOWN", "LOADING", "NOAUTH",
					    "WRONGPASS", NULL};
	int i;

	for (i = 0; fatal[i] != NULL; i++)
		if (strncmp(msg, fatal[i], strlen(fatal[i])) == 0)
			return true;
	return false;
}

/* Turn an error reply into the handle's error. Returns -1. */
static int store_reply_fail(pbs_store *s, const char *what, const redisReply *r)
{
	char safe[PBS_LOG_SAFE_MAX];

	store_fail(s, "Redis at %s: %s refused: %s", s->where, what, pbs_log_safe(r->str, safe));
	if (error_drops_connection(r->str))
		pbs_store_disconnect(s);
	return -1;
}

/* Read and discard COUNT pipelined replies. The first error reply makes the whole sequence
 * fail, but all replies are read. */
static int store_read_replies(pbs_store *s, const char *what, int count)
{
	long long deadline = store_deadline(s);
	int i, rc = 0;

	for (i = 0; i < count; i++) {
		redisReply *r = NULL;

		if (ctx_read_reply(s->ctx, deadline, &r) != REDIS_OK)
			return store_io_fail(s, what);
		if (r->type == REDIS_REPLY_ERROR && rc == 0)
			rc = store_reply_fail(s, what, r);
		freeReplyObject(r);
		if (s->ctx == NULL)
			return -1;
	}
	return rc;
}

/* AUTH and SELECT as one pipelined round trip, when configured. */
static int store_handshake(pbs_store *s)
{
	char db[16];
	const char *auth[3] = {"AUTH", s->cfg.username, s->cfg.password};
	const char *select[2] = {"SELECT", db};
	int sent = 0;

	if (s->cfg.password[0] != '\0') {
		/* AUTH user pass (ACL) when a user is set, else the classic AUTH pass. */
		if (s->cfg.username[0] != '\0')
			redisAppendCommandArgv(s->ctx, 3, auth, NULL);
		else
			redisAppendCommandArgv(s->ctx, 2, (const char *[]){"AUTH", s->cfg.password},
					       NULL);
		sent++;
	}
	if (s->cfg.database != 0) {
		snprintf(db, sizeof db, "%d", s->cfg.database);
		redisAppendCommandArgv(s->ctx, 2, select, NULL);
		sent++;
	}
	return sent ? store_read_replies(s, "AUTH/SELECT", sent) : 0;
}

/* A master address a sentinel named is used only when it looks like one: a host name or
 * address of sane length and characters, a decimal port in range. Anything else would be
 * a broken or hostile sentinel, and would end up in log lines. */
static bool sentinel_reply_ok(const redisReply *host, const redisReply *port)
{
	char *end;
	unsigned long p;
	size_t i;

	if (host->len == 0 || host->len > 253 || strlen(host->str) != host->len)
		return false;
	for (i = 0; i < host->len; i++) {
		unsigned char c = (unsigned char)host->str[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == ':' || c == '_'))
			return false;
	}
	if (port->len == 0 || port->len > 5 || port->str[0] < '0' || port->str[0] > '9')
		return false;
	p = strtoul(port->str, &end, 10);
	return *end == '\0' && p >= 1 && p <= 65535;
}

/* Take the master's address from a sentinel's reply R. Returns 0 or -1 (WHY filled). */
static int sentinel_take(const pbs_store *s, const char *node, const redisReply *r,
			 char *host, size_t hostlen, int *port, char *why, size_t whylen)
{
	char safe_host[PBS_LOG_SAFE_MAX], safe_port[PBS_LOG_SAFE_MAX];

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
	    r->element[0]->type != REDIS_REPLY_STRING ||
	    r->element[1]->type != REDIS_REPLY_STRING) {
		snprintf(why, whylen, "sentinel %s does not know master '%s'", node,
			 s->cfg.sentinel_master);
		return -1;
	}
	if (!sentinel_reply_ok(r->element[0], r->element[1]) || r->element[0]->len >= hostlen) {
		snprintf(why, whylen,
			 "sentinel %s named no valid address for master '%s': '%s' port '%s'", node,
			 s->cfg.sentinel_master, pbs_log_safe(r->element[0]->str, safe_host),
			 pbs_log_safe(r->element[1]->str, safe_port));
		return -1;
	}
	memcpy(host, r->element[0]->str, r->element[0]->len + 1);
	*port = atoi(r->element[1]->str);
	return 0;
}

/* Ask one sentinel NODE for the master's address. Returns 0 or -1 (WHY filled). */
static int sentinel_ask(pbs_store *s, const char *node, char *host, size_t hostlen,
			int *port, char *why, size_t whylen)
{
	long long deadline = store_deadline(s); /* one bound for the whole exchange */
	char shost[256], cwhy[200];
	int sport, rc = -1;
	redisContext *c;
	redisReply *r = NULL;

	if (pbs_addr_split_hostport(node, shost, sizeof shost, &sport) != 0)
		return snprintf(why, whylen, "bad sentinel node %s", node), -1;
	if ((c = store_dial(s, shost, sport, NULL, cwhy, sizeof cwhy)) == NULL) {
		snprintf(why, whylen, "sentinel %s: connect %s", node, cwhy);
		return -1;
	}
	if (s->cfg.sentinel_password[0] != '\0') {
		redisAppendCommandArgv(c, 2, (const char *[]){"AUTH", s->cfg.sentinel_password},
				       NULL);
		if (ctx_read_reply(c, deadline, &r) != REDIS_OK || r->type == REDIS_REPLY_ERROR) {
			snprintf(why, whylen, "sentinel %s refused AUTH", node);
			goto out;
		}
		freeReplyObject(r);
		r = NULL;
	}
	redisAppendCommandArgv(c, 3, (const char *[]){"SENTINEL", "get-master-addr-by-name",
						    s->cfg.sentinel_master}, NULL);
	if (ctx_read_reply(c, deadline, &r) != REDIS_OK)
		snprintf(why, whylen, "sentinel %s: %s", node, c->errstr);
	else
		rc = sentinel_take(s, node, r, host, hostlen, port, why, whylen);
out:
	freeReplyObject(r);
	redisFree(c);
	return rc;
}

/* The master's address, from the first sentinel that knows it (the last good one first),
 * as the Sentinel client protocol says. Returns 0 or -1. */
static int sentinel_resolve(pbs_store *s, char *host, size_t hostlen, int *port)
{
	size_t n = s->cfg.sentinel_nodes.count, i;
	char why[300] = "";

	for (i = 0; i < n; i++) {
		size_t idx = (s->good_sentinel + i) % n;
		if (sentinel_ask(s, s->cfg.sentinel_nodes.items[idx], host, hostlen, port, why,
				 sizeof why) == 0) {
			s->good_sentinel = idx;
			snprintf(s->where, sizeof s->where, "%s:%d (master '%s')", host, *port,
				 s->cfg.sentinel_master);
			return 0;
		}
	}
	return store_fail(s, "Redis master '%s': no sentinel could name it (last: %s)",
			  s->cfg.sentinel_master, why);
}

/* A sentinel's answer may be stale: make sure the server really is the master. */
static int store_check_master(pbs_store *s)
{
	redisReply *r;
	int ok;

	redisAppendCommandArgv(s->ctx, 1, (const char *[]){"ROLE"}, NULL);
	if (ctx_read_reply(s->ctx, store_deadline(s), &r) != REDIS_OK)
		return store_io_fail(s, "ROLE");
	ok = r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
	     r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
	freeReplyObject(r);
	if (!ok) {
		pbs_store_disconnect(s);
		return store_fail(s, "Redis at %s is not a master (yet); retrying via sentinel",
				  s->where);
	}
	return 0;
}

/* Open the TCP or unix connection, to the master a sentinel names when so configured. */
static int store_open(pbs_store *s)
{
	char host[256], why[200];
	int port = 0;

	if (s->cfg.sentinel_nodes.count > 0) {
		/* Every (re)connect asks again: the master may have changed. */
		if (sentinel_resolve(s, host, sizeof host, &port) != 0)
			return -1;
		snprintf(s->master_host, sizeof s->master_host, "%s", host);
		s->master_port = port;
		s->verified_ms = store_now_ms();
		s->ctx = store_dial(s, host, port, NULL, why, sizeof why);
	} else {
		s->ctx = store_dial(s, s->cfg.host, s->cfg.port, s->cfg.socket, why, sizeof why);
	}
	if (s->ctx == NULL)
		return store_fail(s, "Redis at %s: connect %s", s->where, why);
	return 0;
}

/* Ask a sentinel whether the master we talk to is still the master; drop the connection
 * if it names another. A sentinel that cannot answer proves nothing: keep going. */
static void store_recheck_master(pbs_store *s)
{
	char host[256];
	int port = 0;

	s->verified_ms = store_now_ms();
	if (sentinel_resolve(s, host, sizeof host, &port) != 0)
		return;
	if (port != s->master_port || strcmp(host, s->master_host) != 0)
		pbs_store_disconnect(s);
}

/* Whether the server closed the idle connection C (or sent what nobody asked for): its
 * socket is readable between commands. A command sent on it would fail only after it was
 * written, when nobody can tell whether the server ran it; so such a connection is
 * replaced before anything is sent on it, and nothing is ever sent twice. */
static bool ctx_went_away(const redisContext *c)
{
	struct pollfd pfd = {.fd = c->fd, .events = POLLIN};

	return poll(&pfd, 1, 0) != 0;
}

int pbs_store_connect(pbs_store *s)
{
	if (s->ctx != NULL && ctx_went_away(s->ctx))
		pbs_store_disconnect(s);
	if (s->ctx != NULL && s->cfg.sentinel_nodes.count > 0 &&
	    store_now_ms() - s->verified_ms >= SENTINEL_RECHECK_MS)
		store_recheck_master(s);
	if (s->ctx != NULL)
		return 0;
	if (store_open(s) != 0)
		return -1;
	/* A connection that failed AUTH or SELECT must not be used (it would talk to db 0). */
	if (store_handshake(s) != 0) {
		pbs_store_disconnect(s);
		return -1;
	}
	return s->cfg.sentinel_nodes.count > 0 ? store_check_master(s) : 0;
}

/* One command, a connection error named WHAT in the handle's error. Returns the reply (an
 * error reply too, left to the caller) or NULL on a connection error. */
static redisReply *store_send(pbs_store *s, const char *what, int argc, const char **argv,
			      const size_t *argvlen)
{
	redisReply *r;

	if (pbs_store_connect(s) != 0)
		return NULL;
	redisAppendCommandArgv(s->ctx, argc, argv, argvlen);
	if (ctx_read_reply(s->ctx, store_deadline(s), &r) != REDIS_OK) {
		store_io_fail(s, what);
		return NULL;
	}
	return r;
}

/* One command, its failures named WHAT in the handle's error. Returns the reply (an error
 * reply too) or NULL on a connection error. */
static redisReply *store_command_named(pbs_store *s, const char *what, int argc,
				       const char **argv, const size_t *argvlen)
{
	redisReply *r = store_send(s, what, argc, argv, argvlen);

	if (r != NULL && r->type == REDIS_REPLY_ERROR)
		store_reply_fail(s, what, r);
	return r;
}

struct redisReply *pbs_store_command(pbs_store *s, int argc, const char **argv,
				     const size_t *argvlen)
{
	return store_command_named(s, argv[0], argc, argv, argvlen);
}

int pbs_store_pipeline(pbs_store *s, int count, const int *argcs, const char **const *argvs,
		       struct redisReply **replies)
{
	long long deadline;
	int i, j;

	if (pbs_store_connect(s) != 0)
		return -1;
	for (i = 0; i < count; i++)
		redisAppendCommandArgv(s->ctx, argcs[i], argvs[i], NULL);
	deadline = store_deadline(s);
	for (i = 0; i < count; i++) {
		if (ctx_read_reply(s->ctx, deadline, &replies[i]) != REDIS_OK) {
			for (j = 0; j < i; j++)
				freeReplyObject(replies[j]);
			return store_io_fail(s, argvs[i][0]);
		}
	}
	return 0;
}

int pbs_store_grant(pbs_store *s, const char *subject, const pbs_lease *lease, int ttl)
{
	char key[PBS_KEY_MAX], value[PBS_LEASE_VALUE_MAX], ttls[16];
	size_t vlen = pbs_lease_encode(lease, value);
	redisReply *r;
	int rc;

	if (pbs_lease_key(s->cfg.prefix, subject, key) != 0)
		return store_fail(s, "lease key too long");
	snprintf(ttls, sizeof ttls, "%d", ttl);
	r = pbs_store_command(s, 5, (const char *[]){"SET", key, value, "EX", ttls},
			      (const size_t[]){3, strlen(key), vlen, 2, strlen(ttls)});
	rc = r != NULL && r->type != REDIS_REPLY_ERROR ? 0 : -1;
	freeReplyObject(r);
	return rc;
}

enum pbs_lookup pbs_store_lookup(pbs_store *s, const char *subject, pbs_lease *lease)
{
	char key[PBS_KEY_MAX];
	redisReply *r;
	enum pbs_lookup result = PBS_LOOKUP_ERROR;

	/* Empty unless this lookup failed or ignored a value: how callers tell them apart. */
	s->err[0] = '\0';
	if (pbs_lease_key(s->cfg.prefix, subject, key) != 0) {
		store_fail(s, "lease key too long");
		return PBS_LOOKUP_ERROR;
	}
	r = pbs_store_command(s, 2, (const char *[]){"GET", key}, NULL);
	if (r == NULL)
		return PBS_LOOKUP_ERROR;
	if (r->type == REDIS_REPLY_NIL) {
		result = PBS_LOOKUP_NONE;
	} else if (r->type == REDIS_REPLY_STRING && pbs_lease_decode(r->str, r->len, lease) == 0) {
		result = PBS_LOOKUP_FOUND;
	} else if (r->type == REDIS_REPLY_STRING ||
		   (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) == 0)) {
		/* Whatever another writer left there is not a lease popbsmtp can use: no lease,
		 * so relay is refused, rather than a store error that defers mail (or, with
		 * on_store_error = accept, relays it) for as long as the value stays. */
		result = PBS_LOOKUP_NONE;
		store_fail(s, "%s holds no valid lease%s", key,
			   r->type == REDIS_REPLY_ERROR ? " (not a string)" : "");
	} else if (r->type != REDIS_REPLY_ERROR) {
		store_fail(s, "Redis at %s: GET gave an unexpected reply", s->where);
	}
	freeReplyObject(r);
	return result;
}

/* SCRIPT's name for EVALSHA (its SHA-1, as Redis names it), or NULL when the handle has no
 * room left to remember one (the script then goes whole). */
static const char *store_script_sha(pbs_store *s, const char *script)
{
	int i;

	for (i = 0; i < s->nscripts; i++)
		if (s->scripts[i].text == script)
			return s->scripts[i].sha;
	if (s->nscripts == (int)(sizeof s->scripts / sizeof s->scripts[0]))
		return NULL;
	s->scripts[i].text = script;
	pbs_sha1_hex(script, strlen(script), s->scripts[i].sha);
	s->nscripts++;
	return s->scripts[i].sha;
}

/* Whether the server refused EVALSHA itself, before any of the script ran: Redis' "NOPERM
 * this user has no permissions to run the 'evalsha' command", Valkey's "NOPERM User … has
 * no permissions to run the 'evalsha' command". A NOPERM from inside a script names the
 * command the script called, and must not lead to a second run. */
static bool evalsha_refused(const redisReply *r)
{
	return strncmp(r->str, "NOPERM", 6) == 0 && strstr(r->str, "'evalsha' command") != NULL;
}

/* Run SCRIPT with NKEYS of the ARGC strings in ARGV as its KEYS, the rest as ARGV. An error
 * reply fails (the store's error says why). Returns the reply or NULL. By name (EVALSHA)
 * first: a script is kilobytes and a gate runs one per relay recipient. A server that
 * does not know the name yet (restarted, failed over, SCRIPT FLUSH: NOSCRIPT) gets it
 * whole by EVAL, which also teaches it the name; an ACL without +evalsha (a line from
 * before it was needed) too, for the rest of the connection, with one warning. Neither
 * error ran any of the script, so nothing runs twice. */
static redisReply *store_eval(pbs_store *s, const char *what, const char *script, int nkeys,
			      int argc, const char **argv)
{
	static int warned;
	const char *words[64];
	const char *sha = s->eval_only ? NULL : store_script_sha(s, script);
	char nk[8];
	redisReply *r;
	int i;

	if (argc + 3 > (int)(sizeof words / sizeof words[0])) {
		store_fail(s, "%s: too many arguments", what);
		return NULL;
	}
	snprintf(nk, sizeof nk, "%d", nkeys);
	words[0] = sha != NULL ? "EVALSHA" : "EVAL";
	words[1] = sha != NULL ? sha : script;
	words[2] = nk;
	for (i = 0; i < argc; i++)
		words[3 + i] = argv[i];
	r = store_send(s, what, argc + 3, words, NULL);
	if (r != NULL && r->type == REDIS_REPLY_ERROR && sha != NULL &&
	    (strncmp(r->str, "NOSCRIPT", 8) == 0 || evalsha_refused(r))) {
		if (evalsha_refused(r)) {
			s->eval_only = true;
			if (__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED) == 0)
				pbs_log(LOG_WARNING,
					"Redis at %s: this user may not run EVALSHA, so every "
					"script is sent whole; add +evalsha to its ACL line "
					"(docs/ha.md)",
					s->where);
		}
		freeReplyObject(r);
		words[0] = "EVAL";
		words[1] = script;
		r = store_send(s, what, argc + 3, words, NULL);
	}
	if (r != NULL && r->type == REDIS_REPLY_ERROR) {
		store_reply_fail(s, what, r);
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* The keys a lease of SUBJECT for USER involves. Returns 0, or -1 if one is too long. */
struct store_keys {
	char lease[PBS_KEY_MAX], revoked[PBS_KEY_MAX], revoked_user[PBS_KEY_MAX],
	    suspended[PBS_KEY_MAX], users[PBS_KEY_MAX], clock[PBS_KEY_MAX];
};

static int store_keys(pbs_store *s, const char *subject, const char *user, struct store_keys *k)
{
	if ((subject != NULL && (pbs_lease_key(s->cfg.prefix, subject, k->lease) != 0 ||
				 pbs_lease_revoked_key(s->cfg.prefix, subject, k->revoked) != 0 ||
				 pbs_lease_users_key(s->cfg.prefix, subject, k->users) != 0)) ||
	    (user != NULL && (pbs_lease_revoked_user_key(s->cfg.prefix, user, k->revoked_user) != 0 ||
			      pbs_lease_suspended_key(s->cfg.prefix, user, k->suspended) != 0)) ||
	    pbs_lease_clock_key(s->cfg.prefix, k->clock) != 0)
		return store_fail(s, "lease key too long");
	return 0;
}

/* The store's time now (pbs_lease_script_clock), into *NOW_MS. Returns 0 or -1. */
static int store_clock(pbs_store *s, const struct store_keys *k, long long *now_ms)
{
	const char *argv[1] = {k->clock};
	redisReply *r = store_eval(s, "clock", pbs_lease_script_clock, 1, 1, argv);
	int rc = -1;

	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
		*now_ms = r->integer;
		rc = 0;
	} else {
		store_fail(s, "Redis at %s: clock gave an unexpected reply", s->where);
	}
	freeReplyObject(r);
	return rc;
}

/* Most counter commands a grant carries (a writer's usage counters: lib/usage.c). */
#define GRANT_COUNTERS_MAX 8

/* The ARGV of the grant script after its fixed words: each of the COUNT commands as its
 * word count (written into COUNTS) and its words, appended to WORDS at *N (room for MAX).
 * Returns 0, or -1 when they do not fit. */
static int grant_counter_words(int count, const int *argcs, const char **const *argvs,
			       const char **words, int *n, int max, char counts[][12])
{
	int i, j;

	if (count > GRANT_COUNTERS_MAX)
		return -1;
	for (i = 0; i < count; i++) {
		if (*n + 1 + argcs[i] > max)
			return -1;
		snprintf(counts[i], sizeof counts[i], "%d", argcs[i]);
		words[(*n)++] = counts[i];
		for (j = 0; j < argcs[i]; j++)
			words[(*n)++] = argvs[i][j];
	}
	return 0;
}

/* What the grant script answered: GRANTED, REVOKED or LATE with the time; anything else
 * is an error. */
static enum pbs_grant grant_result(pbs_store *s, const redisReply *r, long long *login_ms)
{
	const redisReply *st, *now, *err;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
	    (st = r->element[0])->type != REDIS_REPLY_STRING ||
	    (now = r->element[1])->type != REDIS_REPLY_INTEGER ||
	    (err = r->element[2])->type != REDIS_REPLY_STRING) {
		store_fail(s, "Redis at %s: grant gave an unexpected reply", s->where);
		return PBS_GRANT_ERROR;
	}
	*login_ms = now->integer;
	if (strcmp(st->str, "revoked") == 0) {
		store_fail(s, "a revoke came after the login began");
		return PBS_GRANT_REVOKED;
	}
	if (strcmp(st->str, "suspended") == 0) {
		store_fail(s, "the user is suspended");
		return PBS_GRANT_SUSPENDED;
	}
	if (strcmp(st->str, "shared") == 0) {
		store_fail(s, "other users logged in from this address already "
			      "(lease.max_users_per_address)");
		return PBS_GRANT_SHARED;
	}
	if (strcmp(st->str, "late") == 0) {
		store_fail(s, "the grant reached Redis later than %d ms after the login began",
			   s->cfg.timeout_ms);
		return PBS_GRANT_LATE;
	}
	if (err->len > 0) {
		char safe[PBS_LOG_SAFE_MAX];
		pbs_log(LOG_WARNING, "Redis at %s: grant counters refused: %s", s->where,
			pbs_log_safe(err->str, safe));
	}
	return PBS_GRANT_WRITTEN;
}

enum pbs_grant pbs_store_login(pbs_store *s, const char *subject, const pbs_lease *lease,
			       int ttl, int max_users, int count, const int *argcs,
			       const char **const *argvs, long long *login_ms)
{
	struct store_keys k;
	char value[PBS_LEASE_VALUE_MAX], ttls[16], started[24], budget[16], most[16];
	char counts[GRANT_COUNTERS_MAX][12];
	const char *words[60] = {k.clock,    k.lease,	     value,	  ttls,	   started, budget,
				 k.revoked, k.revoked_user, k.suspended, k.users, most,    lease->user};
	long long start;
	enum pbs_grant result;
	redisReply *r;
	int n = 12;

	*login_ms = 0;
	if (store_keys(s, subject, lease->user, &k) != 0)
		return PBS_GRANT_ERROR;
	if (grant_counter_words(count, argcs, argvs, words, &n, 60, counts) != 0) {
		store_fail(s, "grant: too many counter commands");
		return PBS_GRANT_ERROR;
	}
	pbs_lease_encode(lease, value);
	snprintf(ttls, sizeof ttls, "%d", ttl);
	snprintf(budget, sizeof budget, "%d", s->cfg.timeout_ms);
	snprintf(most, sizeof most, "%d", max_users);
	/* First the time the login began, by the store's clock: the grant that follows is
	 * refused if a revoke comes in between, or if it arrives after the writer gave up. */
	if (store_clock(s, &k, &start) != 0)
		return PBS_GRANT_ERROR;
	snprintf(started, sizeof started, "%lld", start);
	if ((r = store_eval(s, "grant", pbs_lease_script_grant, 1, n, words)) == NULL)
		return PBS_GRANT_ERROR;
	result = grant_result(s, r, login_ms);
	freeReplyObject(r);
	return result;
}

enum pbs_refresh pbs_store_refresh(pbs_store *s, const char *subject, const pbs_lease *lease,
				   int ttl, long long login_ms, bool may_restore)
{
	static const struct {
		const char *word;
		enum pbs_refresh result;
	} answers[] = {{"kept", PBS_REFRESH_KEPT},       {"other", PBS_REFRESH_OTHER},
		       {"restored", PBS_REFRESH_RESTORED}, {"gone", PBS_REFRESH_GONE},
		       {"revoked", PBS_REFRESH_REVOKED},   {"suspended", PBS_REFRESH_SUSPENDED}};
	struct store_keys k;
	char value[PBS_LEASE_VALUE_MAX], ttls[16], login[24];
	const char *argv[10] = {k.lease,     value,	  ttls,		 login,	      may_restore ? "1" : "0",
				lease->user, k.revoked, k.revoked_user, k.suspended, k.users};
	enum pbs_refresh result = PBS_REFRESH_ERROR;
	redisReply *r;
	size_t i;

	if (store_keys(s, subject, lease->user, &k) != 0)
		return PBS_REFRESH_ERROR;
	pbs_lease_encode(lease, value);
	snprintf(ttls, sizeof ttls, "%d", ttl);
	snprintf(login, sizeof login, "%lld", login_ms);
	if ((r = store_eval(s, "refresh", pbs_lease_script_refresh, 1, 10, argv)) == NULL)
		return PBS_REFRESH_ERROR;
	for (i = 0; i < sizeof answers / sizeof answers[0]; i++)
		if (r->type == REDIS_REPLY_STATUS || r->type == REDIS_REPLY_STRING)
			if (strcmp(r->str, answers[i].word) == 0)
				result = answers[i].result;
	if (result == PBS_REFRESH_ERROR)
		store_fail(s, "Redis at %s: refresh gave an unexpected reply", s->where);
	freeReplyObject(r);
	return result;
}

int pbs_store_revoke(pbs_store *s, const char *subject, const char *user, int lease_ttl,
		     bool *removed)
{
	struct store_keys k;
	char ttls[16];
	const char *argv[4];
	redisReply *r;
	int rc = -1;

	*removed = false;
	if (store_keys(s, subject, user, &k) != 0)
		return -1;
	snprintf(ttls, sizeof ttls, "%d", pbs_lease_revocation_ttl(lease_ttl));
	argv[0] = subject != NULL ? k.revoked : k.revoked_user;
	argv[1] = k.clock;
	argv[2] = subject != NULL ? k.lease : ttls;
	argv[3] = ttls;
	r = store_eval(s, "revoke", pbs_lease_script_revoke, subject != NULL ? 3 : 2,
		       subject != NULL ? 4 : 3, argv);
	if (r == NULL)
		return -1;
	if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
	    r->element[0]->type == REDIS_REPLY_INTEGER) {
		*removed = r->element[0]->integer > 0;
		rc = 0;
	} else {
		store_fail(s, "Redis at %s: revoke gave an unexpected reply", s->where);
	}
	freeReplyObject(r);
	return rc;
}

int pbs_store_remove_if_user(pbs_store *s, const char *subject, const char *user)
{
	struct store_keys k;
	const char *argv[2] = {k.lease, user};
	redisReply *r;
	int rc = -1;

	if (store_keys(s, subject, NULL, &k) != 0)
		return -1;
	if ((r = store_eval(s, "revoke", pbs_lease_script_remove_if_user, 1, 2, argv)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER)
		rc = r->integer > 0;
	else
		store_fail(s, "Redis at %s: revoke gave an unexpected reply", s->where);
	freeReplyObject(r);
	return rc;
}

int pbs_store_suspend(pbs_store *s, const char *user, int seconds, const char *reason)
{
	struct store_keys k;
	char secs[16];
	const char *argv[4] = {k.suspended, k.clock, secs, reason};
	redisReply *r;
	int rc = -1;

	if (store_keys(s, NULL, user, &k) != 0)
		return -1;
	snprintf(secs, sizeof secs, "%d", seconds);
	if ((r = store_eval(s, "suspend", pbs_lease_script_suspend, 2, 4, argv)) == NULL)
		return -1;
	if (r->type == REDIS_REPLY_INTEGER)
		rc = 0;
	else
		store_fail(s, "Redis at %s: suspend gave an unexpected reply", s->where);
	freeReplyObject(r);
	return rc;
}

int pbs_store_unsuspend(pbs_store *s, const char *user)
{
	struct store_keys k;
	redisReply *r;
	int rc = -1;

	if (store_keys(s, NULL, user, &k) != 0)
		return -1;
	r = pbs_store_command(s, 2, (const char *[]){"DEL", k.suspended}, NULL);
	if (r != NULL && r->type == REDIS_REPLY_INTEGER)
		rc = r->integer > 0;
	else if (r != NULL && r->type != REDIS_REPLY_ERROR)
		store_fail(s, "Redis at %s: DEL gave an unexpected reply", s->where);
	freeReplyObject(r);
	return rc;
}

/* The lease state of the relay script's reply R (pbs_lease_script_relay), CHECK filled. */
static enum pbs_lease_state relay_result(pbs_store *s, const char *key, const redisReply *r,
					 struct pbs_relay_check *check)
{
	static const struct {
		const char *word;
		enum pbs_lease_state state;
	} answers[] = {{"relay", PBS_LEASE_LIVE},
		       {"sender", PBS_LEASE_LIVE},
		       {"suspended", PBS_LEASE_SUSPENDED},
		       {"user-limit", PBS_LEASE_OVER_LIMIT},
		       {"lease-limit", PBS_LEASE_OVER_LIMIT},
		       {"none", PBS_LEASE_NONE},
		       {"bad", PBS_LEASE_NONE}};
	size_t i;

	if (r->type != REDIS_REPLY_ARRAY || r->elements != 5 ||
	    r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING ||
	    r->element[2]->type != REDIS_REPLY_INTEGER || r->element[3]->type != REDIS_REPLY_INTEGER ||
	    r->element[4]->type != REDIS_REPLY_INTEGER)
		goto unexpected;
	for (i = 0; i < sizeof answers / sizeof answers[0]; i++)
		if (strcmp(r->element[0]->str, answers[i].word) == 0)
			break;
	if (i == sizeof answers / sizeof answers[0])
		goto unexpected;
	if (answers[i].state == PBS_LEASE_NONE) {
		if (strcmp(answers[i].word, "bad") == 0)
			store_fail(s, "%s holds no valid lease", key);
		return PBS_LEASE_NONE;
	}
	/* The script found the user with the same pattern: a value it took must decode. */
	if (pbs_lease_decode(r->element[1]->str, r->element[1]->len, &check->lease) != 0) {
		store_fail(s, "%s holds no valid lease", key);
		return PBS_LEASE_NONE;
	}
	check->limit = answers[i].state == PBS_LEASE_OVER_LIMIT ? answers[i].word : NULL;
	check->count = strcmp(answers[i].word, "lease-limit") == 0 ? r->element[3]->integer
								    : r->element[2]->integer;
	check->suspended_now = r->element[4]->integer == 1;
	return answers[i].state;
unexpected:
	store_fail(s, "Redis at %s: relay check gave an unexpected reply", s->where);
	return PBS_LEASE_STORE_ERROR;
}

enum pbs_lease_state pbs_store_relay(pbs_store *s, const char *subject,
				     const struct pbs_limits_config *limits,
				     const struct pbs_relay_sender *sender,
				     struct pbs_relay_check *check)
{
	static const char *const rules[] = {[PBS_SENDER_ANY] = "any",
					    [PBS_SENDER_DOMAIN] = "domain",
					    [PBS_SENDER_ADDRESS] = "address"};
	struct store_keys k;
	char ulimit[16], llimit[16], after[16], secs[16];
	const char *argv[10] = {k.lease, s->cfg.prefix, k.clock, subject, ulimit, llimit,
				after, secs, rules[sender->rule], sender->owner};
	enum pbs_lease_state state;
	redisReply *r;

	memset(check, 0, sizeof *check);
	if (!pbs_config_limits_on(limits)) {
		switch (pbs_store_lookup(s, subject, &check->lease)) {
		case PBS_LOOKUP_FOUND:
			return PBS_LEASE_LIVE;
		case PBS_LOOKUP_NONE:
			return PBS_LEASE_NONE;
		default:
			return PBS_LEASE_STORE_ERROR;
		}
	}
	s->err[0] = '\0';
	if (store_keys(s, subject, NULL, &k) != 0)
		return PBS_LEASE_STORE_ERROR;
	snprintf(ulimit, sizeof ulimit, "%d", limits->user_recipients_per_hour);
	snprintf(llimit, sizeof llimit, "%d", limits->lease_recipients_per_hour);
	snprintf(after, sizeof after, "%d", limits->suspend_after);
	snprintf(secs, sizeof secs, "%d", limits->suspend_for);
	if ((r = store_eval(s, "relay", pbs_lease_script_relay, 0, 10, argv)) == NULL)
		return PBS_LEASE_STORE_ERROR;
	state = relay_result(s, k.lease, r, check);
	freeReplyObject(r);
	return state;
}
