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

struct pbs_store {
	struct pbs_redis_config cfg; /* own copies of the strings */
	redisContext *ctx;           /* NULL while disconnected */
	char where[300];             /* "127.0.0.1:6379" or "unix:/path", for messages */
	char err[512];
	size_t good_sentinel;        /* the sentinel that answered last: asked first */
	char master_host[256];       /* with sentinel: the master we are connected to */
	int master_port;
	long long verified_ms;       /* when a sentinel last confirmed it */
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

/* The deadline for one exchange with Redis: timeout_ms from now. */
static long long store_deadline(const pbs_store *s)
{
	return store_now_ms() + s->cfg.timeout_ms;
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

/* Connect to HOST:PORT, trying each address it resolves to in turn, all by DEADLINE.
 * Returns the socket, or -1 with WHY filled. */
static int dial_tcp(const pbs_store *s, const char *host, int port, long long deadline,
		    char *why, size_t whylen)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *list, *ai;
	char service[16];
	int fd = -1, err = ECONNREFUSED, rc;

	snprintf(service, sizeof service, "%d", port);
	if ((rc = getaddrinfo(host, service, &hints, &list)) != 0) {
		snprintf(why, whylen, "failed: %s",
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	for (ai = list; ai != NULL && fd < 0; ai = ai->ai_next)
		if ((fd = dial_one(ai->ai_addr, ai->ai_addrlen, deadline)) < 0)
			err = errno;
	freeaddrinfo(list);
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
static redisContext *store_dial(const pbs_store *s, const char *host, int port,
				const char *path, char *why, size_t whylen)
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
}

void pbs_store_free(pbs_store *s)
{
	if (s == NULL)
		return;
	pbs_store_disconnect(s);
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
static int sentinel_ask(const pbs_store *s, const char *node, char *host, size_t hostlen,
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

int pbs_store_connect(pbs_store *s)
{
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

struct redisReply *pbs_store_command(pbs_store *s, int argc, const char **argv,
				     const size_t *argvlen)
{
	redisReply *r;

	if (pbs_store_connect(s) != 0)
		return NULL;
	redisAppendCommandArgv(s->ctx, argc, argv, argvlen);
	if (ctx_read_reply(s->ctx, store_deadline(s), &r) != REDIS_OK) {
		store_io_fail(s, argv[0]);
		return NULL;
	}
	if (r->type == REDIS_REPLY_ERROR)
		store_reply_fail(s, argv[0], r);
	return r;
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
	return pbs_store_grant_with(s, subject, lease, ttl, 0, NULL, NULL);
}

int pbs_store_grant_with(pbs_store *s, const char *subject, const pbs_lease *lease, int ttl,
			 int count, const int *argcs, const char **const *argvs)
{
	char key[PBS_KEY_MAX], value[PBS_LEASE_VALUE_MAX], ttls[16];
	int i, rc;
	size_t vlen = pbs_lease_encode(lease, value);

	if (pbs_lease_key(s->cfg.prefix, subject, key) != 0)
		return store_fail(s, "lease key too long");
	if (pbs_store_connect(s) != 0)
		return -1;
	snprintf(ttls, sizeof ttls, "%d", ttl);
	/* One SET (plus the caller's counters in the same round trip), so nothing is
	 * half-written. There is no per-user index (it cost more memory than the lease): the
	 * value names the user, and popbsmtpctl finds a user's leases by scanning them. */
	redisAppendCommandArgv(s->ctx, 5, (const char *[]){"SET", key, value, "EX", ttls},
			       (const size_t[]){3, strlen(key), vlen, 2, strlen(ttls)});
	for (i = 0; i < count; i++)
		redisAppendCommandArgv(s->ctx, argcs[i], argvs[i], NULL);
	if ((rc = store_read_replies(s, "grant", 1)) != 0) {
		/* The counters' replies are still queued: the next command would read them as
		 * its own. */
		if (count > 0)
			pbs_store_disconnect(s);
		return rc;
	}
	if (count == 0)
		return 0;
	/* The lease is written; a counter Redis refused costs nothing but the count. */
	if (store_read_replies(s, "grant counters", count) != 0)
		pbs_log(LOG_WARNING, "%s", s->err);
	return 0;
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

int pbs_store_mark_revoked(pbs_store *s, const char *subject, const char *user, long long now_ms,
			   int lease_ttl)
{
	char key[PBS_KEY_MAX], value[PBS_REVOCATION_MAX], ttls[16];
	int bad = subject != NULL ? pbs_lease_revoked_key(s->cfg.prefix, subject, key)
				  : pbs_lease_revoked_user_key(s->cfg.prefix, user, key);

	if (bad)
		return store_fail(s, "revocation key too long");
	if (pbs_store_connect(s) != 0)
		return -1;
	pbs_lease_revocation_encode(now_ms, value);
	snprintf(ttls, sizeof ttls, "%d", pbs_lease_revocation_ttl(lease_ttl));
	/* The key is binary-safe: a user name may hold any byte but control characters. */
	redisAppendCommandArgv(s->ctx, 5, (const char *[]){"SET", key, value, "EX", ttls},
			       (const size_t[]){3, strlen(key), strlen(value), 2, strlen(ttls)});
	return store_read_replies(s, "revocation record", 1);
}

/* True when REPLY (an element of an MGET) is a revocation at or after LOGIN_MS. A record
 * that does not decode counts as a revoke: when in doubt, the revoke wins. */
static bool revoked_since(const redisReply *reply, long long login_ms)
{
	long long revoked_ms;

	if (reply->type == REDIS_REPLY_NIL)
		return false;
	if (reply->type != REDIS_REPLY_STRING ||
	    pbs_lease_revocation_decode(reply->str, reply->len, &revoked_ms) != 0)
		return true;
	return revoked_ms >= login_ms;
}

/* Send COUNT commands in one round trip; on success the replies are in R. An error reply
 * to any fails the whole (REPLIES freed). Returns 0 or -1. */
static int store_exchange(pbs_store *s, const char *what, int count, const int *argcs,
			  const char **const *argvs, redisReply **r)
{
	int i;

	if (pbs_store_pipeline(s, count, argcs, argvs, r) != 0)
		return -1;
	for (i = 0; i < count; i++)
		if (r[i]->type == REDIS_REPLY_ERROR)
			break;
	if (i == count)
		return 0;
	store_reply_fail(s, what, r[i]);
	for (i = 0; i < count; i++)
		freeReplyObject(r[i]);
	return -1;
}

/* Whether a revoke of SUBJECT or USER came at or after LOGIN_MS, under WATCH of both
 * records when WATCHING. Returns 1 revoked, 0 not, -1 on error. */
static int store_revoked(pbs_store *s, const char *subject, const char *user, long long login_ms,
			 bool watching)
{
	char rkey[PBS_KEY_MAX], ukey[PBS_KEY_MAX];
	const char *watch[3] = {"WATCH", rkey, ukey}, *mget[3] = {"MGET", rkey, ukey};
	const char **argvs[2] = {watch, mget};
	const int argcs[2] = {3, 3};
	redisReply *r[2];
	int n = watching ? 2 : 1, rc;

	if (pbs_lease_revoked_key(s->cfg.prefix, subject, rkey) != 0 ||
	    pbs_lease_revoked_user_key(s->cfg.prefix, user, ukey) != 0)
		return store_fail(s, "revocation key too long");
	if (store_exchange(s, "revocation check", n, argcs + 2 - n, argvs + 2 - n, r) != 0)
		return -1;
	if (r[n - 1]->type != REDIS_REPLY_ARRAY || r[n - 1]->elements != 2)
		rc = store_fail(s, "Redis at %s: MGET gave an unexpected reply", s->where);
	else
		rc = revoked_since(r[n - 1]->element[0], login_ms) ||
		     revoked_since(r[n - 1]->element[1], login_ms);
	freeReplyObject(r[0]);
	if (n == 2)
		freeReplyObject(r[1]);
	return rc;
}

/* Write the session's lease again where none is, unless a revoke came since the login.
 * The WATCH on the records makes a revoke that lands before the EXEC abort the write. */
static enum pbs_refresh store_restore(pbs_store *s, const char *key, const char *subject,
				      const pbs_lease *lease, int ttl, long long login_ms)
{
	char value[PBS_LEASE_VALUE_MAX], ttls[16];
	const char *multi[1] = {"MULTI"}, *exec[1] = {"EXEC"};
	const char *set[6] = {"SET", key, value, "NX", "EX", ttls};
	const char **argvs[3] = {multi, set, exec};
	const int argcs[3] = {1, 6, 1};
	redisReply *r[3];
	int revoked = store_revoked(s, subject, lease->user, login_ms, true), i;
	enum pbs_refresh result;

	if (revoked != 0) {
		/* The WATCH goes with the connection, which the caller drops after the exchange. */
		pbs_store_disconnect(s);
		return revoked > 0 ? PBS_REFRESH_REVOKED : PBS_REFRESH_ERROR;
	}
	pbs_lease_encode(lease, value);
	snprintf(ttls, sizeof ttls, "%d", ttl);
	if (store_exchange(s, "restore", 3, argcs, argvs, r) != 0)
		return PBS_REFRESH_ERROR;
	/* EXEC nil: a revocation record changed meanwhile; the next refresh looks again. An
	 * array holding nil: another login wrote the lease first, which stands. */
	result = r[2]->type == REDIS_REPLY_ARRAY && r[2]->elements == 1 &&
			 r[2]->element[0]->type == REDIS_REPLY_STATUS
		     ? PBS_REFRESH_RESTORED
		     : PBS_REFRESH_KEPT;
	for (i = 0; i < 3; i++)
		freeReplyObject(r[i]);
	return result;
}

enum pbs_refresh pbs_store_refresh(pbs_store *s, const char *subject, const pbs_lease *lease,
				   int ttl, long long login_ms)
{
	char key[PBS_KEY_MAX], ttls[16], value[PBS_LEASE_VALUE_MAX];
	size_t vlen = pbs_lease_encode(lease, value);
	bool ours;
	redisReply *r;
	int revoked;

	if (pbs_lease_key(s->cfg.prefix, subject, key) != 0) {
		store_fail(s, "lease key too long");
		return PBS_REFRESH_ERROR;
	}
	snprintf(ttls, sizeof ttls, "%d", ttl);
	/* One command in the common case: the TTL starts afresh, the value stays as it is. */
	r = pbs_store_command(s, 4, (const char *[]){"GETEX", key, "EX", ttls}, NULL);
	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		freeReplyObject(r);
		return PBS_REFRESH_ERROR;
	}
	if (r->type == REDIS_REPLY_NIL) {
		freeReplyObject(r);
		return store_restore(s, key, subject, lease, ttl, login_ms);
	}
	ours = r->type == REDIS_REPLY_STRING && r->len == vlen && memcmp(r->str, value, vlen) == 0;
	freeReplyObject(r);
	if (ours)
		return PBS_REFRESH_KEPT;
	/* Another login's lease: it stands. But if this session was revoked and someone took
	 * the address over meanwhile, the session must learn it now, before the records go. */
	revoked = store_revoked(s, subject, lease->user, login_ms, false);
	return revoked < 0 ? PBS_REFRESH_ERROR : revoked ? PBS_REFRESH_REVOKED : PBS_REFRESH_KEPT;
}
