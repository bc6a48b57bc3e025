/*
 * pool.h — Redis connections shared by libmilter's worker threads. A bounded number of
 * pbs_store handles; a caller waits at most timeout_ms for a free one. After a connection
 * failure the pool answers "down" at once for a short backoff, so a dead Redis costs
 * no thread more than one timeout, and service resumes by itself when Redis returns.
 */
#ifndef POPBSMTP_MILTER_POOL_H
#define POPBSMTP_MILTER_POOL_H

#include <stddef.h>

#include "popbsmtp/config.h"
#include "popbsmtp/store.h"

struct pbs_pool;

/* A pool of at most MAX connections for CFG (copied). NULL when out of memory. */
struct pbs_pool *pbs_pool_new(const struct pbs_redis_config *cfg, int max);

/* Close every idle connection and free the pool; callers must have returned theirs. */
void pbs_pool_free(struct pbs_pool *pool);

/* One relay recipient's lease check of SUBJECT (pbs_store_relay) through a pooled
 * connection. On STORE_ERROR, WHY (ERRLEN bytes) says what went wrong; on NONE it is
 * empty, or says which value was ignored. */
enum pbs_lease_state pbs_pool_relay(struct pbs_pool *pool, const char *subject,
				    const struct pbs_limits_config *limits,
				    const struct pbs_relay_sender *sender,
				    struct pbs_relay_check *check, char *why, size_t errlen);

/* Check Redis answers (PING); 0 or -1 with WHY filled. */
int pbs_pool_ping(struct pbs_pool *pool, char *why, size_t errlen);

#endif
