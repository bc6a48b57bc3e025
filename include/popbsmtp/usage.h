/*
 * usage.h — what a gate counts: its relay decisions, and which user relayed by lease,
 * kept in memory and written to Redis in batches (one pipelined MULTI/EXEC per flush),
 * never one write per decision. Counting is thread-safe and cheap (an atomic add, or a
 * short mutex for the first message of a user in a flush interval). A flush that fails
 * puts its counts back to be sent with the next one; per-user entries are capped.
 *
 * A threaded gate (the milter) flushes from a thread of its own; a single-threaded gate
 * calls pbs_usage_maybe_flush between requests and pbs_usage_flush before it exits.
 * Lease writers (hook, plugin) call pbs_usage_grant_commands to count a grant in the
 * round trip that writes the lease. Key and field layout: usagekey.h.
 */
#ifndef POPBSMTP_USAGE_H
#define POPBSMTP_USAGE_H

#include <stddef.h>
#include <time.h>

#include "popbsmtp/config.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/store.h"
#include "popbsmtp/usagekey.h"

/* Per-user entries a gate holds between flushes (and after failed ones) at most. */
#define PBS_USAGE_MAX_USERS 10000

/* The longest trace header value pbs_usage_trace_value writes, with its NUL. */
#define PBS_USAGE_TRACE_MAX (3 * PBS_USER_MAX + PBS_ADDR_STRLEN + PBS_SERVICE_MAX + 64)

/* The name of the trace header. */
#define PBS_USAGE_TRACE_HEADER "X-PopBeforeSMTP"

typedef struct pbs_usage pbs_usage;

/* Counts for GATE ("milter", "policy"), holding at most MAX_USERS per-user entries.
 * NULL when out of memory; every function below accepts NULL and then does nothing. */
pbs_usage *pbs_usage_new(const char *gate, size_t max_users);

/* Free U; counts not flushed are lost (flush first). */
void pbs_usage_free(pbs_usage *u);

/* Count one EVENT (an atomic add). */
void pbs_usage_count(pbs_usage *u, enum pbs_usage_event event);

/* Count one message USER relayed by lease from CLIENT (canonical address text) at NOW. */
void pbs_usage_relay(pbs_usage *u, const char *user, const char *client, time_t now);

/* Write everything counted since the last flush to STORE (one round trip), with the
 * keys' expiry from CFG. On failure the counts stay for the next flush and the reason is
 * logged once per run of failures. Returns 0, or -1 when nothing could be written. */
int pbs_usage_flush(pbs_usage *u, pbs_store *store, const struct pbs_usage_config *cfg,
		    time_t now);

/* pbs_usage_flush when CFG->flush_interval has passed since the last try, else nothing.
 * For a gate without a flush thread: call it between requests. Returns 0 or -1. */
int pbs_usage_maybe_flush(pbs_usage *u, pbs_store *store, const struct pbs_usage_config *cfg,
			  time_t now);

/* Per-user entries waiting for the next flush. */
size_t pbs_usage_pending_users(pbs_usage *u);

/* EVENT's count waiting for the next flush. */
long long pbs_usage_pending(pbs_usage *u, enum pbs_usage_event event);

/* Messages of USER on the day holding NOW waiting for the next flush (0 if none). */
long long pbs_usage_pending_messages(pbs_usage *u, const char *user, time_t now);

/* Commands that count one EVENT of a lease writer SOURCE ("hook", "plugin") at NOW, to
 * send in the round trip that writes the lease. Owns its strings. */
struct pbs_usage_batch {
	int count;
	int argcs[4];
	const char **argvs[4];
	const char *words[4][4];
	char keys[2][PBS_KEY_MAX];
	char field[PBS_USAGEKEY_FIELD_MAX];
	char expiry[2][24];
};
void pbs_usage_grant_commands(struct pbs_usage_batch *b, const char *prefix,
			      const struct pbs_usage_config *cfg, const char *source,
			      enum pbs_usage_event event, time_t now);

/* A login's grant of LEASE for SUBJECT with TTL seconds and at most MAX_USERS users at the
 * address (pbs_store_login), the grant of SOURCE ("hook", "plugin") counted in the same
 * script when the lease is written, and a refusal for a suspension or a shared address
 * counted after it. *LOGIN_MS: the store's time of the grant. */
enum pbs_grant pbs_usage_grant(pbs_store *store, const struct pbs_usage_config *cfg,
			       const char *source, const char *subject, const pbs_lease *lease,
			       int ttl, int max_users, long long *login_ms);

/* Count one EVENT of a lease writer SOURCE at NOW on its own (one pipelined round trip):
 * for what could not be counted with the SET, such as a grant that failed because Redis
 * was unreachable, once Redis answers again. Returns 0 or -1. */
int pbs_usage_count_grant(pbs_store *store, const struct pbs_usage_config *cfg,
			  const char *source, enum pbs_usage_event event, time_t now);

/* The trace header's value for a message relayed on LEASE (covering SUBJECT):
 * "user=U lease=SUBJECT service=S granted=ISO-8601", the user with every byte that is not
 * printable ASCII, or is a space, '%', '"' or '\\', as %HH. OUT has PBS_USAGE_TRACE_MAX. */
const char *pbs_usage_trace_value(const pbs_lease *lease, const char *subject, char *out);

#endif
