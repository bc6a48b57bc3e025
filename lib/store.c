/*
 * store.c — the Redis side of leases, over hiredis' blocking API. Every step is
 * bounded: the connect by redisConnectWithTimeout, reads and writes by SO_RCVTIMEO/
 * SO_SNDTIMEO set with redisSetTimeout. After any I/O error the hiredis context is
 * unusable, so it is freed and the next call connects afresh.
 */
#include "popbsmtp/store.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static struct timeval store_timeout(const pbs_store *s)
{
	struct timeval tv = {s->cfg.timeout_ms / 1000, (s->cfg.timeout_ms % 1000) * 1000};
	return tv;
}

/* Ask one sentinel NODE for the master's address. Returns 0 or -1 (WHY filled). */
static int sentinel_ask(const pbs_store *s, const char *node, char *host, size_t hostlen,
			int *port, char *why, size_t whylen)
{
	struct timeval tv = store_timeout(s);
	long long deadline = store_deadline(s);
	char shost[256];
	int sport, rc = -1;
	redisContext *c;
	redisReply *r = NULL;

	if (pbs_addr_split_hostport(node, shost, sizeof shost, &sport) != 0)
		return snprintf(why, whylen, "bad sentinel node %s", node), -1;
	c = redisConnectWithTimeout(shost, sport, tv);
	if (c == NULL || c->err || redisSetTimeout(c, tv) != REDIS_OK) {
		snprintf(why, whylen, "sentinel %s: %s", node, c ? c->errstr : "out of memory");
		goto out;
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
	if (ctx_read_reply(c, deadline, &r) != REDIS_OK) {
		snprintf(why, whylen, "sentinel %s: %s", node, c->errstr);
	} else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		   r->element[0]->type == REDIS_REPLY_STRING &&
		   r->element[1]->type == REDIS_REPLY_STRING) {
		snprintf(host, hostlen, "%s", r->element[0]->str);
		*port = atoi(r->element[1]->str);
		rc = 0;
	} else {
		snprintf(why, whylen, "sentinel %s does not know master '%s'", node,
			 s->cfg.sentinel_master);
	}
out:
	freeReplyObject(r);
	if (c != NULL)
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
	struct timeval tv = store_timeout(s);
	char host[256];
	int port = 0;

	if (s->cfg.sentinel_nodes.count > 0) {
		/* Every (re)connect asks again: the master may have changed. */
		if (sentinel_resolve(s, host, sizeof host, &port) != 0)
			return -1;
		snprintf(s->master_host, sizeof s->master_host, "%s", host);
		s->master_port = port;
		s->verified_ms = store_now_ms();
		s->ctx = redisConnectWithTimeout(host, port, tv);
	} else if (s->cfg.socket) {
		s->ctx = redisConnectUnixWithTimeout(s->cfg.socket, tv);
	} else {
		s->ctx = redisConnectWithTimeout(s->cfg.host, s->cfg.port, tv);
	}
	if (s->ctx == NULL || s->ctx->err)
		return store_io_fail(s, "connect");
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
	struct timeval tv = store_timeout(s);

	if (s->ctx != NULL && s->cfg.sentinel_nodes.count > 0 &&
	    store_now_ms() - s->verified_ms >= SENTINEL_RECHECK_MS)
		store_recheck_master(s);
	if (s->ctx != NULL)
		return 0;
	if (store_open(s) != 0)
		return -1;
	/* The connect timeout does not cover reads and writes: bound those too. */
	if (redisSetTimeout(s->ctx, tv) != REDIS_OK)
		return store_io_fail(s, "setting the timeout");
	/* Never leak the socket into a program we exec (the Dovecot hook execs the login). */
	fcntl(s->ctx->fd, F_SETFD, FD_CLOEXEC);
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
	/* One command, so one round trip and nothing half-written. There is no per-user index
	 * (it cost more memory than the lease): the value names the user, and popbsmtpctl finds
	 * a user's leases by scanning them. */
	redisAppendCommandArgv(s->ctx, 5, (const char *[]){"SET", key, value, "EX", ttls},
			       (const size_t[]){3, strlen(key), vlen, 2, strlen(ttls)});
	for (i = 0; i < count; i++)
		redisAppendCommandArgv(s->ctx, argcs[i], argvs[i], NULL);
	if ((rc = store_read_replies(s, "grant", 1)) != 0 || count == 0)
		return rc;
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

	if (pbs_lease_key(s->cfg.prefix, subject, key) != 0) {
		store_fail(s, "lease key too long");
		return PBS_LOOKUP_ERROR;
	}
	r = pbs_store_command(s, 2, (const char *[]){"GET", key}, NULL);
	if (r == NULL)
		return PBS_LOOKUP_ERROR;
	if (r->type == REDIS_REPLY_NIL)
		result = PBS_LOOKUP_NONE;
	else if (r->type == REDIS_REPLY_STRING && pbs_lease_decode(r->str, r->len, lease) == 0)
		result = PBS_LOOKUP_FOUND;
	else if (r->type == REDIS_REPLY_STRING)
		store_fail(s, "Redis at %s: %s holds no valid lease", s->where, key);
	else if (r->type != REDIS_REPLY_ERROR)
		store_fail(s, "Redis at %s: GET gave an unexpected reply", s->where);
	freeReplyObject(r);
	return result;
}
