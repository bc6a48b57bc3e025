/*
 * usage.c — a gate's counters between flushes, and the flush itself. Decision counts are
 * an array of atomics: counting one costs an atomic add. Per-user entries live in a hash
 * table keyed by (day, user) behind a mutex held for a lookup and a copy; only a user's
 * first message in a flush interval allocates. A flush swaps the table for an empty one,
 * takes the counts, and writes it all in one MULTI/EXEC round trip: either Redis applies
 * all of it or none, so a failed flush can put everything back and try again later
 * without counting anything twice (unless the reply to an applied EXEC is what got lost).
 */
#include "popbsmtp/usage.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "popbsmtp/log.h"
#include "popbsmtp/text.h"

#define TABLE_SIZE 4096

/* One user's relays on one day since the last flush. */
struct entry {
	struct entry *next;
	long long day; /* Unix day number */
	long long messages, first, last;
	char client[PBS_ADDR_STRLEN];
	char user[];
};

struct pbs_usage {
	char gate[PBS_USAGEKEY_GATE_MAX];
	long long counts[PBS_EV_COUNT]; /* atomics */
	pthread_mutex_t lock;           /* guards table and users */
	struct entry **table;
	size_t users, max_users;
	pthread_mutex_t flush_lock; /* one flush at a time; guards the fields below */
	struct entry **spare;       /* the empty table the next flush swaps in */
	time_t last_try;
	int failing;      /* the last flush failed (logged once) */
	int said_dropped; /* the cap was hit since the last clean flush (logged once) */
};

pbs_usage *pbs_usage_new(const char *gate, size_t max_users)
{
	pbs_usage *u = calloc(1, sizeof *u);

	if (u == NULL)
		return NULL;
	u->table = calloc(TABLE_SIZE, sizeof *u->table);
	u->spare = calloc(TABLE_SIZE, sizeof *u->spare);
	if (u->table == NULL || u->spare == NULL) {
		free(u->table);
		free(u->spare);
		free(u);
		return NULL;
	}
	snprintf(u->gate, sizeof u->gate, "%s", gate);
	u->max_users = max_users;
	u->last_try = time(NULL);
	pthread_mutex_init(&u->lock, NULL);
	pthread_mutex_init(&u->flush_lock, NULL);
	return u;
}

/* Free every entry of TABLE and leave it empty. */
static void table_clear(struct entry **table)
{
	size_t i;

	for (i = 0; i < TABLE_SIZE; i++) {
		while (table[i] != NULL) {
			struct entry *e = table[i];
			table[i] = e->next;
			free(e);
		}
	}
}

void pbs_usage_free(pbs_usage *u)
{
	if (u == NULL)
		return;
	table_clear(u->table);
	free(u->table);
	free(u->spare);
	pthread_mutex_destroy(&u->lock);
	pthread_mutex_destroy(&u->flush_lock);
	free(u);
}

void pbs_usage_count(pbs_usage *u, enum pbs_usage_event event)
{
	if (u != NULL)
		__atomic_fetch_add(&u->counts[event], 1, __ATOMIC_RELAXED);
}

/* FNV-1a of USER and DAY: the table slot. */
static size_t slot_of(const char *user, long long day)
{
	unsigned long long h = 1469598103934665603ULL ^ (unsigned long long)day;

	for (; *user != '\0'; user++)
		h = (h ^ (unsigned char)*user) * 1099511628211ULL;
	return (size_t)(h % TABLE_SIZE);
}

/* The entry for (DAY, USER) in U's table, or NULL; lock held. */
static struct entry *find_locked(pbs_usage *u, const char *user, long long day)
{
	struct entry *e;

	for (e = u->table[slot_of(user, day)]; e != NULL; e = e->next)
		if (e->day == day && strcmp(e->user, user) == 0)
			return e;
	return NULL;
}

/* Add E's counts to TO: messages add up, first is the earliest, client goes with last. */
static void entry_merge(struct entry *to, const struct entry *e)
{
	to->messages += e->messages;
	if (e->first < to->first)
		to->first = e->first;
	if (e->last >= to->last) {
		to->last = e->last;
		memcpy(to->client, e->client, sizeof to->client);
	}
}

/* Put E into U's table (merged or linked), or drop it when the table is full; lock held.
 * E is consumed. */
static void adopt_locked(pbs_usage *u, struct entry *e)
{
	struct entry *have = find_locked(u, e->user, e->day);
	size_t slot;

	if (have != NULL) {
		entry_merge(have, e);
		free(e);
	} else if (u->users >= u->max_users) {
		__atomic_fetch_add(&u->counts[PBS_EV_USAGE_DROPPED], e->messages, __ATOMIC_RELAXED);
		free(e);
	} else {
		slot = slot_of(e->user, e->day);
		e->next = u->table[slot];
		u->table[slot] = e;
		u->users++;
	}
}

void pbs_usage_relay(pbs_usage *u, const char *user, const char *client, time_t now)
{
	long long day = (long long)now / 86400;
	size_t len = strlen(user);
	struct entry *e;

	if (u == NULL)
		return;
	pthread_mutex_lock(&u->lock);
	if ((e = find_locked(u, user, day)) != NULL) {
		e->messages++;
		e->last = now;
		snprintf(e->client, sizeof e->client, "%s", client);
	} else if (u->users >= u->max_users || (e = malloc(sizeof *e + len + 1)) == NULL) {
		__atomic_fetch_add(&u->counts[PBS_EV_USAGE_DROPPED], 1, __ATOMIC_RELAXED);
	} else {
		e->day = day;
		e->messages = 1;
		e->first = e->last = now;
		snprintf(e->client, sizeof e->client, "%s", client);
		memcpy(e->user, user, len + 1);
		e->next = u->table[slot_of(user, day)];
		u->table[slot_of(user, day)] = e;
		u->users++;
	}
	pthread_mutex_unlock(&u->lock);
}

size_t pbs_usage_pending_users(pbs_usage *u)
{
	size_t n;

	if (u == NULL)
		return 0;
	pthread_mutex_lock(&u->lock);
	n = u->users;
	pthread_mutex_unlock(&u->lock);
	return n;
}

long long pbs_usage_pending(pbs_usage *u, enum pbs_usage_event event)
{
	return u != NULL ? __atomic_load_n(&u->counts[event], __ATOMIC_RELAXED) : 0;
}

long long pbs_usage_pending_messages(pbs_usage *u, const char *user, time_t now)
{
	struct entry *e;
	long long n;

	if (u == NULL)
		return 0;
	pthread_mutex_lock(&u->lock);
	e = find_locked(u, user, (long long)now / 86400);
	n = e != NULL ? e->messages : 0;
	pthread_mutex_unlock(&u->lock);
	return n;
}

/* ---- the commands of one flush ---- */

struct cmds {
	int n, cap;
	int *argcs;
	char ***argvs;
	int failed; /* out of memory while building */
};

/* Append one command of ARGC words (copied). */
static void cmds_add(struct cmds *c, int argc, const char *const *words)
{
	char **argv;
	int i;

	if (c->failed)
		return;
	if (c->n == c->cap) {
		int cap = c->cap ? c->cap * 2 : 64;
		int *argcs = realloc(c->argcs, (size_t)cap * sizeof *argcs);
		char ***argvs = argcs ? realloc(c->argvs, (size_t)cap * sizeof *argvs) : NULL;

		if (argcs != NULL)
			c->argcs = argcs;
		if (argvs == NULL) {
			c->failed = 1;
			return;
		}
		c->argvs = argvs;
		c->cap = cap;
	}
	if ((argv = calloc((size_t)argc, sizeof *argv)) == NULL) {
		c->failed = 1;
		return;
	}
	for (i = 0; i < argc; i++)
		if ((argv[i] = strdup(words[i])) == NULL)
			c->failed = 1;
	c->argcs[c->n] = argc;
	c->argvs[c->n++] = argv;
}

static void cmds_free(struct cmds *c)
{
	int i, j;

	for (i = 0; i < c->n; i++) {
		for (j = 0; j < c->argcs[i]; j++)
			free(c->argvs[i][j]);
		free(c->argvs[i]);
	}
	free(c->argcs);
	free(c->argvs);
}

/* HINCRBY KEY FIELD N. */
static void cmds_hincrby(struct cmds *c, const char *key, const char *field, long long n)
{
	char num[24];

	snprintf(num, sizeof num, "%lld", n);
	cmds_add(c, 4, (const char *const[]){"HINCRBY", key, field, num});
}

/* CMD KEY N (EXPIRE, EXPIREAT). */
static void cmds_expire(struct cmds *c, const char *cmd, const char *key, long long n)
{
	char num[24];

	snprintf(num, sizeof num, "%lld", n);
	cmds_add(c, 3, (const char *const[]){cmd, key, num});
}

/* The decision counts DELTA into the all-time hash and NOW's bucket. */
static void add_counts(struct cmds *c, const pbs_usage *u, const long long *delta,
		       const char *prefix, const char *host, const struct pbs_usage_config *cfg,
		       time_t now)
{
	char total[PBS_KEY_MAX], bucket[PBS_KEY_MAX], field[PBS_USAGEKEY_FIELD_MAX], num[24];
	int e;

	pbs_usagekey_total(prefix, total);
	pbs_usagekey_bucket(prefix, now, bucket);
	for (e = 0; e < PBS_EV_COUNT; e++) {
		if (delta[e] == 0)
			continue;
		pbs_usagekey_field(host, u->gate, (enum pbs_usage_event)e, field);
		cmds_hincrby(c, total, field, delta[e]);
		cmds_hincrby(c, bucket, field, delta[e]);
	}
	/* The time of this flush: shows which gates still report. */
	pbs_usagekey_flushed_field(host, u->gate, field);
	snprintf(num, sizeof num, "%lld", (long long)now);
	cmds_add(c, 4, (const char *const[]){"HSET", total, field, num});
	cmds_expire(c, "EXPIRE", total, (long long)cfg->retention_days * 86400);
	cmds_expire(c, "EXPIREAT", bucket, pbs_usagekey_bucket_expiry(now));
}

/* The per-user commands of one DAY's entries in TABLE: HINCRBY and HSETNX per user, one
 * HSET for every "last" field, then the day's expiry. */
static void add_day(struct cmds *c, struct entry **table, long long day, const char *prefix,
		    const struct pbs_usage_config *cfg)
{
	char key[PBS_KEY_MAX], field[PBS_USAGEKEY_USER_FIELD_MAX], num[24];
	char value[24 + PBS_ADDR_STRLEN];
	const char **hset = NULL;
	size_t n = 0, i;
	struct entry *e;
	time_t t = (time_t)(day * 86400);

	pbs_usagekey_day(prefix, t, key);
	for (i = 0; i < TABLE_SIZE; i++)
		for (e = table[i]; e != NULL; e = e->next)
			n += e->day == day;
	/* HSET's words: the command, the key, then a field and a value per user. */
	if ((hset = calloc(2 + 2 * n, sizeof *hset)) == NULL) {
		c->failed = 1;
		return;
	}
	hset[0] = "HSET";
	hset[1] = key;
	n = 2;
	for (i = 0; i < TABLE_SIZE; i++) {
		for (e = table[i]; e != NULL; e = e->next) {
			if (e->day != day)
				continue;
			pbs_usagekey_user_field('n', e->user, field);
			cmds_hincrby(c, key, field, e->messages);
			pbs_usagekey_user_field('f', e->user, field);
			snprintf(num, sizeof num, "%lld", e->first);
			cmds_add(c, 4, (const char *const[]){"HSETNX", key, field, num});
			pbs_usagekey_user_field('l', e->user, field);
			pbs_usagekey_last_value(e->last, e->client, value, sizeof value);
			hset[n] = strdup(field);
			hset[n + 1] = strdup(value);
			if (hset[n] == NULL || hset[n + 1] == NULL)
				c->failed = 1;
			n += 2;
		}
	}
	cmds_add(c, (int)n, hset);
	for (i = 2; i < n; i++)
		free((char *)hset[i]);
	free(hset);
	cmds_expire(c, "EXPIREAT", key, pbs_usagekey_day_expiry(t, cfg->retention_days));
}

/* The per-user commands of every day present in TABLE: one or two days after a flush
 * that worked, one per day of an outage after failed ones — any number of days, or one
 * long outage would stop every later flush, and the decision counts with it. A day whose
 * usage has already expired (over retention_days ago) is left out: its EXPIREAT would
 * delete it at once. Returns the messages of the days left out. */
static long long add_users(struct cmds *c, struct entry **table, const char *prefix,
			   const struct pbs_usage_config *cfg, time_t now)
{
	long long *done = NULL, *more, expired = 0;
	size_t ndone = 0, cap = 0, i, j;
	struct entry *e;

	for (i = 0; i < TABLE_SIZE; i++) {
		for (e = table[i]; e != NULL; e = e->next) {
			if (pbs_usagekey_day_expiry((time_t)(e->day * 86400), cfg->retention_days) <=
			    (long long)now) {
				expired += e->messages;
				continue;
			}
			for (j = 0; j < ndone && done[j] != e->day; j++)
				;
			if (j < ndone)
				continue;
			if (ndone == cap) {
				cap = cap ? 2 * cap : 8;
				if ((more = realloc(done, cap * sizeof *done)) == NULL) {
					c->failed = 1;
					free(done);
					return 0;
				}
				done = more;
			}
			done[ndone++] = e->day;
			add_day(c, table, e->day, prefix, cfg);
		}
	}
	free(done);
	return expired;
}

/* Send C wrapped in MULTI/EXEC. Returns 0 when EXEC ran, -1 when nothing was applied
 * (WHY filled). */
static int send_cmds(pbs_store *store, struct cmds *c, char *why, size_t len)
{
	redisReply **replies = calloc((size_t)c->n, sizeof *replies);
	redisReply *exec;
	int rc = -1, i;

	if (replies == NULL) {
		snprintf(why, len, "out of memory");
		return -1;
	}
	if (pbs_store_pipeline(store, c->n, c->argcs, (const char **const *)c->argvs, replies) !=
	    0) {
		snprintf(why, len, "%s", pbs_store_error(store));
		free(replies);
		return -1;
	}
	exec = replies[c->n - 1];
	if (exec->type == REDIS_REPLY_ARRAY) {
		rc = 0;
	} else {
		/* EXECABORT names the refused command's error; show the first error reply. */
		for (i = 0; i < c->n && replies[i]->type != REDIS_REPLY_ERROR; i++)
			;
		snprintf(why, len, "Redis at %s refused: %s", pbs_store_where(store),
			 i < c->n ? replies[i]->str : "EXEC gave no result");
	}
	for (i = 0; i < c->n; i++)
		freeReplyObject(replies[i]);
	free(replies);
	return rc;
}

/* Put back what a failed flush took: the counts, and the entries of TABLE (emptied). */
static void put_back(pbs_usage *u, const long long *delta, struct entry **table)
{
	size_t i;
	int e;

	for (e = 0; e < PBS_EV_COUNT; e++)
		__atomic_fetch_add(&u->counts[e], delta[e], __ATOMIC_RELAXED);
	pthread_mutex_lock(&u->lock);
	for (i = 0; i < TABLE_SIZE; i++) {
		while (table[i] != NULL) {
			struct entry *next = table[i]->next;
			adopt_locked(u, table[i]);
			table[i] = next;
		}
	}
	pthread_mutex_unlock(&u->lock);
}

/* Say once per run of failures that counts are held back, and once when they flow again. */
static void log_outcome(pbs_usage *u, int rc, const char *why, long long dropped)
{
	char safe[PBS_LOG_SAFE_MAX];

	if (rc != 0 && !u->failing)
		pbs_log(LOG_WARNING, "usage counters not written, kept for the next try: %s",
			pbs_log_safe(why, safe));
	else if (rc == 0 && u->failing)
		pbs_log(LOG_INFO, "usage counters written again");
	u->failing = rc != 0;
	if (dropped > 0 && !u->said_dropped)
		pbs_log(LOG_WARNING, "more than %zu users' usage waiting to be written: the usage "
				     "of new users is counted as dropped until Redis takes it",
			u->max_users);
	if (rc == 0)
		u->said_dropped = dropped > 0;
	else if (dropped > 0)
		u->said_dropped = 1;
}

int pbs_usage_flush(pbs_usage *u, pbs_store *store, const struct pbs_usage_config *cfg,
		    time_t now)
{
	char host[PBS_USAGEKEY_HOST_MAX + 1], why[512] = "";
	long long delta[PBS_EV_COUNT];
	struct cmds c = {0, 0, NULL, NULL, 0};
	struct entry **taken;
	long long expired;
	int e, rc = -1;

	if (u == NULL)
		return 0;
	pthread_mutex_lock(&u->flush_lock);
	u->last_try = now;
	pthread_mutex_lock(&u->lock);
	taken = u->table;
	u->table = u->spare;
	u->users = 0;
	pthread_mutex_unlock(&u->lock);
	for (e = 0; e < PBS_EV_COUNT; e++)
		delta[e] = __atomic_exchange_n(&u->counts[e], 0, __ATOMIC_RELAXED);
	pbs_usagekey_host(cfg->host, host);
	cmds_add(&c, 1, (const char *const[]){"MULTI"});
	add_counts(&c, u, delta, pbs_store_prefix(store), host, cfg, now);
	expired = add_users(&c, taken, pbs_store_prefix(store), cfg, now);
	cmds_add(&c, 1, (const char *const[]){"EXEC"});
	if (c.failed)
		snprintf(why, sizeof why, "out of memory");
	else
		rc = send_cmds(store, &c, why, sizeof why);
	cmds_free(&c);
	if (rc == 0) {
		table_clear(taken);
		/* Usage too old to keep counts as lost; the next flush writes that count. */
		__atomic_fetch_add(&u->counts[PBS_EV_USAGE_DROPPED], expired, __ATOMIC_RELAXED);
	} else
		put_back(u, delta, taken);
	u->spare = taken;
	log_outcome(u, rc, why, delta[PBS_EV_USAGE_DROPPED]);
	pthread_mutex_unlock(&u->flush_lock);
	return rc;
}

int pbs_usage_maybe_flush(pbs_usage *u, pbs_store *store, const struct pbs_usage_config *cfg,
			  time_t now)
{
	time_t last;

	if (u == NULL)
		return 0;
	pthread_mutex_lock(&u->flush_lock);
	last = u->last_try;
	pthread_mutex_unlock(&u->flush_lock);
	if (now - last < cfg->flush_interval && now >= last)
		return 0;
	return pbs_usage_flush(u, store, cfg, now);
}

void pbs_usage_grant_commands(struct pbs_usage_batch *b, const char *prefix,
			      const struct pbs_usage_config *cfg, const char *source,
			      enum pbs_usage_event event, time_t now)
{
	char host[PBS_USAGEKEY_HOST_MAX + 1];
	int i;

	pbs_usagekey_host(cfg->host, host);
	pbs_usagekey_field(host, source, event, b->field);
	pbs_usagekey_total(prefix, b->keys[0]);
	pbs_usagekey_bucket(prefix, now, b->keys[1]);
	snprintf(b->expiry[0], sizeof b->expiry[0], "%lld", (long long)cfg->retention_days * 86400);
	snprintf(b->expiry[1], sizeof b->expiry[1], "%lld", pbs_usagekey_bucket_expiry(now));
	for (i = 0; i < 2; i++) {
		b->words[2 * i][0] = "HINCRBY";
		b->words[2 * i][1] = b->keys[i];
		b->words[2 * i][2] = b->field;
		b->words[2 * i][3] = "1";
		b->words[2 * i + 1][0] = i == 0 ? "EXPIRE" : "EXPIREAT";
		b->words[2 * i + 1][1] = b->keys[i];
		b->words[2 * i + 1][2] = b->expiry[i];
		b->argcs[2 * i] = 4;
		b->argcs[2 * i + 1] = 3;
	}
	b->count = 4;
	for (i = 0; i < b->count; i++)
		b->argvs[i] = b->words[i];
}

enum pbs_grant pbs_usage_grant(pbs_store *store, const struct pbs_usage_config *cfg,
			       const char *source, const char *subject, const pbs_lease *lease,
			       int ttl, int max_users, long long *login_ms)
{
	struct pbs_usage_batch counters;

	pbs_usage_grant_commands(&counters, pbs_store_prefix(store), cfg, source, PBS_EV_GRANTED,
				 (time_t)lease->granted);
	enum pbs_grant result = pbs_store_login(store, subject, lease, ttl, max_users,
						counters.count, counters.argcs, counters.argvs,
						login_ms);

	/* A refusal the counters in the script did not see: counted on its own. */
	if (result == PBS_GRANT_SHARED || result == PBS_GRANT_SUSPENDED)
		(void)pbs_usage_count_grant(store, cfg, source,
					    result == PBS_GRANT_SHARED
						? PBS_EV_GRANT_REFUSED_SHARED
						: PBS_EV_GRANT_REFUSED_SUSPENDED,
					    (time_t)lease->granted);
	return result;
}

int pbs_usage_count_grant(pbs_store *store, const struct pbs_usage_config *cfg,
			  const char *source, enum pbs_usage_event event, time_t now)
{
	struct pbs_usage_batch counters;
	redisReply *replies[sizeof counters.argcs / sizeof counters.argcs[0]];
	int i;

	pbs_usage_grant_commands(&counters, pbs_store_prefix(store), cfg, source, event, now);
	if (pbs_store_pipeline(store, counters.count, counters.argcs, counters.argvs, replies) != 0)
		return -1;
	for (i = 0; i < counters.count; i++)
		freeReplyObject(replies[i]);
	return 0;
}

const char *pbs_usage_trace_value(const pbs_lease *lease, const char *subject, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	char when[PBS_TEXT_TIME_MAX];
	size_t o;
	const unsigned char *p;

	o = (size_t)snprintf(out, PBS_USAGE_TRACE_MAX, "user=");
	for (p = (const unsigned char *)lease->user; *p != '\0'; p++) {
		if (*p > 0x20 && *p < 0x7f && *p != '%' && *p != '"' && *p != '\\') {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	snprintf(out + o, PBS_USAGE_TRACE_MAX - o, " lease=%s service=%s granted=%s", subject,
		 lease->service[0] ? lease->service : "-", pbs_text_time(lease->granted, when));
	return out;
}
