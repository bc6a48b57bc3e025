/*
 * leases.c — how popbsmtpctl reads many leases at once: SCAN with a cursor (never KEYS,
 * which would block a Redis holding a million leases), then one pipelined round trip
 * of GET+TTL per batch. Also the output of a lease, as text or JSON.
 */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "popbsmtp/log.h"
#include "popbsmtp/text.h"

#define SCAN_BATCH "1000"

void ctl_json_string(FILE *out, const char *s)
{
	pbs_text_json(out, s);
}

void ctl_print_lease(const struct ctl *c, const struct ctl_lease *l)
{
	char when[PBS_TEXT_TIME_MAX], user[PBS_USER_MAX + 1], subject[sizeof l->subject];

	if (c->json) {
		printf("{\"subject\":");
		ctl_json_string(stdout, l->subject);
		printf(",\"user\":");
		ctl_json_string(stdout, l->lease.user);
		printf(",\"service\":");
		ctl_json_string(stdout, l->lease.service);
		printf(",\"granted\":%lld,\"ttl\":%lld}", l->lease.granted, l->ttl);
		return;
	}
	/* The subject is the rest of a key SCAN found: anything may have written it. */
	printf("%-40s %-24s %-6s %s %6lld\n", pbs_text_row(l->subject, subject, sizeof subject),
	       pbs_text_row(l->lease.user, user, sizeof user),
	       l->lease.service[0] ? l->lease.service : "-", pbs_text_time(l->lease.granted, when),
	       l->ttl);
}

int ctl_subject(const struct ctl *c, const char *addr_text, pbs_addr *addr,
		char subject[PBS_ADDR_STRLEN])
{
	if (pbs_addr_parse(addr_text, addr) != 0)
		return ctl_fail(CTL_USAGE, "'%s' is not an IPv4 or IPv6 address", addr_text);
	pbs_lease_subject(addr, (unsigned)c->cfg->lease.ipv4_prefix,
			  (unsigned)c->cfg->lease.ipv6_prefix, subject);
	return CTL_OK;
}

bool ctl_wrongtype(const struct redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) == 0;
}

/* True if Redis refused the GET itself; WRONGTYPE only says the key holds no string. */
static bool get_refused(const redisReply *get)
{
	return get->type == REDIS_REPLY_ERROR && !ctl_wrongtype(get);
}

/* Fill OUT from a GET reply and a TTL reply. CTL_OK, CTL_NO, or CTL_STORE (reported). */
static int lease_from_replies(const struct ctl *c, const char *key, const redisReply *get,
			      const redisReply *ttl, struct ctl_lease *out)
{
	char safe[PBS_LOG_SAFE_MAX];

	out->invalid = false;
	if (get_refused(get))
		return ctl_fail(CTL_STORE, "Redis at %s refused: %s", pbs_store_where(c->store),
				pbs_log_safe(get->str, safe));
	if (get->type == REDIS_REPLY_NIL)
		return CTL_NO;
	/* The key may come from SCAN, written by anyone: sanitised. */
	if (get->type != REDIS_REPLY_STRING ||
	    pbs_lease_decode(get->str, get->len, &out->lease) != 0) {
		out->invalid = true;
		return ctl_fail(CTL_STORE, "%s does not hold a valid lease", pbs_log_safe(key, safe));
	}
	out->ttl = ttl->type == REDIS_REPLY_INTEGER ? ttl->integer : -2;
	return CTL_OK;
}

struct scan_each {
	void (*each)(const struct ctl *, const struct ctl_lease *, void *);
	void *arg;
	long long bad; /* keys that held no valid lease (each reported) */
};

/* One key of a batch: a lease goes to EACH. A key holding something else (another tool's
 * bad write) is reported and the walk goes on, so it cannot hide the leases after it; a
 * refusal by Redis stops the walk (CTL_STORE). */
static int batch_key(const struct ctl *c, const char *key, const redisReply *get,
		     const redisReply *ttl, struct scan_each *se)
{
	size_t prefix_len = strlen(pbs_store_prefix(c->store)) + strlen("lease:");
	struct ctl_lease l;
	int got;

	snprintf(l.subject, sizeof l.subject, "%s", key + prefix_len);
	/* A lease that expired between SCAN and GET is simply gone: skip it. */
	got = lease_from_replies(c, key, get, ttl, &l);
	if (got == CTL_OK)
		se->each(c, &l, se->arg);
	else if (got == CTL_STORE && get_refused(get))
		return CTL_STORE;
	else if (got == CTL_STORE)
		se->bad++;
	return CTL_OK;
}

/* GET and TTL of COUNT keys in one round trip; each key to batch_key. */
static int fetch_batch(const struct ctl *c, char **keys, size_t count, struct scan_each *se)
{
	size_t i;
	int *argcs = calloc(count * 2, sizeof *argcs), rc = CTL_OK;
	const char ***argvs = calloc(count * 2, sizeof *argvs);
	const char **words = calloc(count * 4, sizeof *words);
	redisReply **replies = calloc(count * 2, sizeof *replies);

	if (!argcs || !argvs || !words || !replies) {
		rc = ctl_fail(CTL_STORE, "out of memory");
		goto out;
	}
	for (i = 0; i < count * 2; i++) {
		argcs[i] = 2;
		words[i * 2] = (i % 2) ? "TTL" : "GET";
		words[i * 2 + 1] = keys[i / 2];
		argvs[i] = &words[i * 2];
	}
	if (pbs_store_pipeline(c->store, (int)count * 2, argcs, argvs, replies) != 0) {
		rc = ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
		goto out;
	}
	for (i = 0; i < count; i++) {
		if (rc == CTL_OK)
			rc = batch_key(c, keys[i], replies[i * 2], replies[i * 2 + 1], se);
		freeReplyObject(replies[i * 2]);
		freeReplyObject(replies[i * 2 + 1]);
	}
out:
	free(argcs);
	free(argvs);
	free(words);
	free(replies);
	return rc;
}

int ctl_fetch(const struct ctl *c, const char *subject, struct ctl_lease *out)
{
	char key[PBS_KEY_MAX];
	const char *get[2] = {"GET", key}, *ttl[2] = {"TTL", key};
	const char **argvs[2] = {get, ttl};
	const int argcs[2] = {2, 2};
	redisReply *replies[2];
	int rc;

	out->invalid = false;
	if (pbs_lease_key(pbs_store_prefix(c->store), subject, key) != 0)
		return ctl_fail(CTL_USAGE, "key too long");
	if (pbs_store_pipeline(c->store, 2, argcs, argvs, replies) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	snprintf(out->subject, sizeof out->subject, "%s", subject);
	rc = lease_from_replies(c, key, replies[0], replies[1], out);
	freeReplyObject(replies[0]);
	freeReplyObject(replies[1]);
	return rc;
}

/* "<prefix><kind>*" with the prefix's glob characters escaped, for SCAN MATCH. */
static void match_pattern(const char *prefix, const char *kind, char *out, size_t len)
{
	size_t o = 0;

	for (; *prefix != '\0' && o + 3 < len; prefix++) {
		if (strchr("*?[]\\", *prefix) != NULL)
			out[o++] = '\\';
		out[o++] = *prefix;
	}
	snprintf(out + o, len - o, "%s*", kind);
}

int ctl_scan_keys(const struct ctl *c, const char *kind,
		  int (*on_batch)(const struct ctl *, char **, size_t, void *), void *arg)
{
	char pattern[PBS_KEY_MAX * 2], cursor[32] = "0";
	int rc = CTL_OK;

	match_pattern(pbs_store_prefix(c->store), kind, pattern, sizeof pattern);
	do {
		const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_BATCH};
		redisReply *r = pbs_store_command(c->store, 6, argv, NULL);
		char **keys;
		size_t i, n;

		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			rc = ctl_fail(CTL_STORE, "SCAN failed: %s", pbs_store_error(c->store));
			freeReplyObject(r);
			break;
		}
		snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
		n = r->element[1]->elements;
		keys = calloc(n ? n : 1, sizeof *keys);
		for (i = 0; keys != NULL && i < n; i++)
			keys[i] = r->element[1]->element[i]->str;
		if (keys == NULL)
			rc = ctl_fail(CTL_STORE, "out of memory");
		else if (n > 0)
			rc = on_batch(c, keys, n, arg);
		free(keys);
		freeReplyObject(r);
	} while (rc == CTL_OK && strcmp(cursor, "0") != 0);
	return rc;
}

static int lease_batch(const struct ctl *c, char **keys, size_t n, void *arg)
{
	return fetch_batch(c, keys, n, arg);
}

int ctl_walk_leases(const struct ctl *c,
		    void (*each)(const struct ctl *, const struct ctl_lease *, void *), void *arg,
		    long long *invalid)
{
	struct scan_each se = {each, arg, 0};
	int rc = ctl_scan_keys(c, "lease:", lease_batch, &se);

	*invalid = se.bad;
	return rc;
}

int ctl_scan_leases(const struct ctl *c,
		    void (*each)(const struct ctl *, const struct ctl_lease *, void *), void *arg)
{
	long long invalid;
	int rc = ctl_walk_leases(c, each, arg, &invalid);

	return rc == CTL_OK && invalid > 0 ? CTL_STORE : rc;
}

static int unlink_batch(const struct ctl *c, char **keys, size_t n, void *arg)
{
	const char **argv = calloc(n + 1, sizeof *argv);
	redisReply *r;
	size_t i;

	if (argv == NULL)
		return ctl_fail(CTL_STORE, "out of memory");
	argv[0] = "UNLINK";
	for (i = 0; i < n; i++)
		argv[i + 1] = keys[i];
	r = pbs_store_command(c->store, (int)n + 1, argv, NULL);
	free(argv);
	if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
		freeReplyObject(r);
		return ctl_fail(CTL_STORE, "UNLINK failed: %s", pbs_store_error(c->store));
	}
	*(long long *)arg += r->integer;
	freeReplyObject(r);
	return CTL_OK;
}

int ctl_unlink_leases(const struct ctl *c, long long *n)
{
	return ctl_scan_keys(c, "lease:", unlink_batch, n);
}
