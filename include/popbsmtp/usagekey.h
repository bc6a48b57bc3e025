/*
 * usagekey.h — the one place that knows how usage and decision counters look in Redis:
 * the vocabulary of counted events (the reason tokens of pbs_policy_decide), the key of
 * each time bucket and day, and the hash fields inside them. Gates write through
 * usage.h, popbsmtpctl reads through these; docs/usage.md describes the same layout.
 *
 *   <prefix>stat:total               hash "<host>|<gate>|<verdict>|<reason>" -> count
 *   <prefix>stat:<YYYYMMDDTHHMM>     the same fields, for one 10-minute bucket (UTC)
 *   <prefix>usage:<YYYYMMDD>         hash "n:<user>" messages, "f:<user>" first time,
 *                                    "l:<user>" "<last time> <last client>" (UTC day)
 */
#ifndef POPBSMTP_USAGEKEY_H
#define POPBSMTP_USAGEKEY_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "popbsmtp/lease.h"
#include "popbsmtp/policy.h"

#define PBS_USAGEKEY_HOST_MAX 64  /* longest host name in a counter field */
#define PBS_USAGEKEY_GATE_MAX 16  /* "milter", "policy", "hook", "plugin" */
#define PBS_USAGEKEY_BUCKET 600   /* seconds per decision bucket */
#define PBS_USAGEKEY_BUCKET_KEEP (2 * 86400) /* a bucket lives this long: last day + slack */
/* "<host>|<gate>|<verdict>|<reason>" with the longest words of each. */
#define PBS_USAGEKEY_FIELD_MAX (PBS_USAGEKEY_HOST_MAX + PBS_USAGEKEY_GATE_MAX + 48)
/* "l:" + user name. */
#define PBS_USAGEKEY_USER_FIELD_MAX (PBS_USER_MAX + 3)

/* What a gate or a lease writer counts. Relay decisions first, then lease grants. */
enum pbs_usage_event {
	PBS_EV_ALLOWED_LEASE,
	PBS_EV_ALLOWED_AUTH,
	PBS_EV_ALLOWED_TRUSTED,
	PBS_EV_ALLOWED_LOCAL,
	PBS_EV_ALLOWED_STORE_ERROR, /* on_store_error = accept */
	PBS_EV_REFUSED_NO_LEASE,
	PBS_EV_REFUSED_NEVER_LEASE,
	PBS_EV_REFUSED_STORE_ERROR, /* on_store_error = reject */
	PBS_EV_DEFERRED_STORE_ERROR,
	PBS_EV_DEFERRED_RATE_LIMIT,  /* a relay limit reached (limits.*) */
	PBS_EV_REFUSED_SUSPENDED,    /* the lease's user is suspended */
	PBS_EV_REFUSED_SENDER_ADDRESS, /* lease.sender = address */
	PBS_EV_REFUSED_SENDER_DOMAIN,  /* lease.sender = domain */
	PBS_EV_SUSPENDED_RATE_LIMIT, /* a gate suspended a user (limits.suspend_after) */
	PBS_EV_GRANTED,             /* a lease written by the hook or plugin */
	PBS_EV_GRANT_REFUSED_NEVER, /* the client is in lease.never: no lease */
	PBS_EV_GRANT_REFUSED_SHARED,    /* lease.max_users_per_address others there already */
	PBS_EV_GRANT_REFUSED_SUSPENDED, /* the user is suspended (popbsmtpctl suspend) */
	PBS_EV_GRANT_FAILED_INPUT,  /* the login's address or user name cannot hold a lease */
	PBS_EV_GRANT_FAILED_STORE,  /* Redis unreachable or refusing (countable only by a
				       lease writer that keeps counts in memory: the plugin) */
	PBS_EV_USAGE_DROPPED,       /* per-user entries lost to the pending cap */
	PBS_EV_COUNT
};

/* The event for a relay decision: VERDICT and REASON as pbs_policy_decide gave them.
 * -1 for lookup-needed (not a decision). */
int pbs_usagekey_decision(enum pbs_verdict verdict, const char *reason);

/* The verdict and reason words of EVENT ("allowed", "lease"). */
const char *pbs_usagekey_verdict(enum pbs_usage_event event);
const char *pbs_usagekey_reason(enum pbs_usage_event event);

/* True when EVENT is about lease grants (hook, plugin), not relay decisions. */
bool pbs_usagekey_is_grant(enum pbs_usage_event event);

/* The event with these words, or -1. */
int pbs_usagekey_event(const char *verdict, const char *reason);

/* HOST as counters name it, into OUT (PBS_USAGEKEY_HOST_MAX + 1 bytes): CONFIGURED
 * when not empty, else gethostname(); bytes other than [A-Za-z0-9._-] become '_'. */
const char *pbs_usagekey_host(const char *configured, char out[PBS_USAGEKEY_HOST_MAX + 1]);

/* "<host>|<gate>|<verdict>|<reason>" of EVENT, into OUT (PBS_USAGEKEY_FIELD_MAX). */
void pbs_usagekey_field(const char *host, const char *gate, enum pbs_usage_event event,
			char out[PBS_USAGEKEY_FIELD_MAX]);

/* The field holding the time of a gate's last successful flush ("<host>|<gate>|flushed|time"). */
void pbs_usagekey_flushed_field(const char *host, const char *gate,
				char out[PBS_USAGEKEY_FIELD_MAX]);

/* A counter field split back into its parts (each into a buffer of the field's size).
 * Returns 0, or -1 when FIELD is not four '|'-separated words. */
struct pbs_usagekey_parts {
	char host[PBS_USAGEKEY_FIELD_MAX];
	char gate[PBS_USAGEKEY_FIELD_MAX];
	char verdict[PBS_USAGEKEY_FIELD_MAX];
	char reason[PBS_USAGEKEY_FIELD_MAX];
};
int pbs_usagekey_parse_field(const char *field, struct pbs_usagekey_parts *parts);

/* Keys into OUT (PBS_KEY_MAX bytes): the all-time counters; the bucket holding time T;
 * the per-user usage of the UTC day holding T. */
void pbs_usagekey_total(const char *prefix, char out[PBS_KEY_MAX]);
void pbs_usagekey_bucket(const char *prefix, time_t t, char out[PBS_KEY_MAX]);
void pbs_usagekey_day(const char *prefix, time_t t, char out[PBS_KEY_MAX]);

/* When the bucket / day key holding T must expire (Unix seconds): a bucket after
 * PBS_USAGEKEY_BUCKET_KEEP, a day RETENTION_DAYS after it ended. */
long long pbs_usagekey_bucket_expiry(time_t t);
long long pbs_usagekey_day_expiry(time_t t, int retention_days);

/* The per-user fields: KIND 'n' (messages), 'f' (first), 'l' (last and client). */
void pbs_usagekey_user_field(char kind, const char *user, char out[PBS_USAGEKEY_USER_FIELD_MAX]);

/* Split a per-user field into its kind and user. Returns the kind or 0 if malformed. */
char pbs_usagekey_parse_user_field(const char *field, const char **user);

/* The value of an "l:" field, "<time> <client>", and back. Parse returns 0, or -1 unless
 * the time is digits (0..LLONG_MAX) and the client fits into LEN bytes. */
void pbs_usagekey_last_value(long long when, const char *client, char *out, size_t len);
int pbs_usagekey_parse_last(const char *value, long long *when, char *client, size_t len);

/* A count or time as HINCRBY and HSET leave it: digits only, 0..LLONG_MAX. Anything else
 * another writer put there (a sign, letters, a number too big) gives -1: skip it. */
int pbs_usagekey_parse_count(const char *value, long long *n);

/* A + B for counts (both >= 0), LLONG_MAX where it would overflow. */
long long pbs_usagekey_sum(long long a, long long b);

#endif
