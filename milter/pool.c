/*
 * pool.c — a mutex-protected stack of idle pbs_store handles. Handles reconnect lazily
 * by themselves (store.c), so a handle whose connection broke goes back to the stack
 * and is simply reused. The backoff after a connection failure keeps a black-holed
 * Redis from holding every worker thread for a full timeout each.
 */
#include "pool.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pbs_pool {
	pthread_mutex_t lock;
	pthread_cond_t freed;
	struct pbs_redis_config cfg; /* borrowed strings: the owning config outlives us */
	pbs_store **idle;
	int nidle, total, max;
	long long down_until_ms; /* fail fast until then, after a connection failure */
	char down_why[256];
};

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct pbs_pool *pbs_pool_new(const struct pbs_redis_config *cfg, int max)
{
	struct pbs_pool *p = calloc(1, sizeof *p);

	if (p == NULL)
		return NULL;
	p->idle = calloc((size_t)max, sizeof *p->idle);
	if (p->idle == NULL) {
		free(p);
		return NULL;
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->freed, NULL);
	p->cfg = *cfg;
	p->max = max;
	return p;
}

void pbs_pool_free(struct pbs_pool *p)
{
	int i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nidle; i++)
		pbs_store_free(p->idle[i]);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->freed);
	free(p->idle);
	free(p);
}

/* Take an idle handle, make a new one under the limit, or wait up to timeout_ms.
 * Returns NULL with WHY filled when none can be had (backoff, exhausted, no memory). */
static pbs_store *pool_take(struct pbs_pool *p, char *why, size_t len)
{
	struct timespec deadline;
	pbs_store *s = NULL;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += p->cfg.timeout_ms / 1000;
	deadline.tv_nsec += (long)(p->cfg.timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&p->lock);
	for (;;) {
		if (now_ms() < p->down_until_ms) {
			snprintf(why, len, "%s (retrying shortly)", p->down_why);
			break;
		}
		if (p->nidle > 0) {
			s = p->idle[--p->nidle];
			break;
		}
		if (p->total < p->max) {
			if ((s = pbs_store_new(&p->cfg)) != NULL)
				p->total++;
			else
				snprintf(why, len, "out of memory");
			break;
		}
		if (pthread_cond_timedwait(&p->freed, &p->lock, &deadline) == ETIMEDOUT) {
			snprintf(why, len, "all %d Redis connections busy for %d ms", p->max,
				 p->cfg.timeout_ms);
			break;
		}
	}
	pthread_mutex_unlock(&p->lock);
	return s;
}

/* Return S to the pool. A failure that cost the connection starts the backoff. */
static void pool_give(struct pbs_pool *p, pbs_store *s, bool connection_lost)
{
	pthread_mutex_lock(&p->lock);
	if (connection_lost) {
		/* Long enough to spare threads, short enough that recovery is prompt. */
		int backoff = p->cfg.timeout_ms < 500 ? 500 : p->cfg.timeout_ms;
		p->down_until_ms = now_ms() + backoff;
		snprintf(p->down_why, sizeof p->down_why, "%s", pbs_store_error(s));
	}
	p->idle[p->nidle++] = s;
	pthread_cond_signal(&p->freed);
	pthread_mutex_unlock(&p->lock);
}

enum pbs_lease_state pbs_pool_relay(struct pbs_pool *p, const char *subject,
				    const struct pbs_limits_config *limits,
				    const struct pbs_relay_sender *sender,
				    struct pbs_relay_check *check, char *why, size_t len)
{
	pbs_store *s = pool_take(p, why, len);
	enum pbs_lease_state result;

	if (s == NULL)
		return PBS_LEASE_STORE_ERROR;
	/* No second try on failure: a reply that came too late may be of a script that ran
	 * and counted. An idle connection a Redis restart closed is found and replaced before
	 * anything is sent on it (pbs_store_connect). */
	result = pbs_store_relay(s, subject, limits, sender, check);
	if (result != PBS_LEASE_LIVE)
		snprintf(why, len, "%s", pbs_store_error(s));
	pool_give(p, s, result == PBS_LEASE_STORE_ERROR && !pbs_store_connected(s));
	return result;
}

int pbs_pool_ping(struct pbs_pool *p, char *why, size_t len)
{
	pbs_store *s = pool_take(p, why, len);
	redisReply *r;
	int rc = -1;

	if (s == NULL)
		return -1;
	r = pbs_store_command(s, 1, (const char *[]){"PING"}, NULL);
	if (r != NULL && r->type != REDIS_REPLY_ERROR)
		rc = 0;
	else
		snprintf(why, len, "%s", pbs_store_error(s));
	freeReplyObject(r);
	pool_give(p, s, false);
	return rc;
}
