/*
 * flush.h — the milter's usage counters and the thread that writes them to Redis every
 * usage.flush_interval seconds, and once more at shutdown.
 */
#ifndef POPBSMTP_MILTER_FLUSH_H
#define POPBSMTP_MILTER_FLUSH_H

#include "popbsmtp/usage.h"

/* Make the counters and start the flush thread (call with the signals blocked, after the
 * first pbs_runtime_install). Returns 0, or -1 (logged): the milter then counts nothing. */
int pbs_flush_start(void);

/* Stop the thread and write what is left (one try, bounded by redis.timeout_ms). */
void pbs_flush_stop(void);

/* The counters the callbacks add to; NULL when counting is off (pbs_usage_* accept it). */
pbs_usage *pbs_flush_usage(void);

#endif
