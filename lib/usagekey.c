/*
 * usagekey.c — key names, hash fields and the counted vocabulary of the usage data.
 * Counter fields put every host of the fleet in the same hashes, so popbsmtpctl reads a
 * time window with one HGETALL per bucket and never has to discover hosts. Host names
 * are restricted to [A-Za-z0-9._-] and the words are fixed, so '|' can split a field.
 * Per-user fields start with a one-letter kind: the user is everything after "k:".
 */
#include "popbsmtp/usagekey.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "popbsmtp/text.h"

static const char *const words[PBS_EV_COUNT][2] = {
	[PBS_EV_ALLOWED_LEASE] = {"allowed", "lease"},
	[PBS_EV_ALLOWED_AUTH] = {"allowed", "auth"},
	[PBS_EV_ALLOWED_TRUSTED] = {"allowed", "trusted"},
	[PBS_EV_ALLOWED_LOCAL] = {"allowed", "local"},
	[PBS_EV_ALLOWED_STORE_ERROR] = {"allowed", "store-error"},
	[PBS_EV_REFUSED_NO_LEASE] = {"refused", "no-lease"},
	[PBS_EV_REFUSED_NEVER_LEASE] = {"refused", "never-lease"},
	[PBS_EV_REFUSED_STORE_ERROR] = {"refused", "store-error"},
	[PBS_EV_DEFERRED_STORE_ERROR] = {"deferred", "store-error"},
	[PBS_EV_DEFERRED_RATE_LIMIT] = {"deferred", "rate-limit"},
	[PBS_EV_REFUSED_SUSPENDED] = {"refused", "user-suspended"},
	[PBS_EV_REFUSED_SENDER_ADDRESS] = {"refused", "sender-address"},
	[PBS_EV_REFUSED_SENDER_DOMAIN] = {"refused", "sender-domain"},
	[PBS_EV_SUSPENDED_RATE_LIMIT] = {"suspended", "rate-limit"},
	[PBS_EV_GRANTED] = {"granted", "lease"},
	[PBS_EV_GRANT_REFUSED_NEVER] = {"refused", "never-lease"},
	[PBS_EV_GRANT_REFUSED_SHARED] = {"refused", "shared"},
	[PBS_EV_GRANT_REFUSED_SUSPENDED] = {"refused", "suspended"},
	[PBS_EV_GRANT_FAILED_INPUT] = {"failed", "bad-input"},
	[PBS_EV_GRANT_FAILED_STORE] = {"failed", "store-error"},
	[PBS_EV_USAGE_DROPPED] = {"dropped", "usage"},
};

int pbs_usagekey_decision(enum pbs_verdict verdict, const char *reason)
{
	const char *v = verdict == PBS_VERDICT_ALLOW	  ? "allowed"
			: verdict == PBS_VERDICT_REJECT	  ? "refused"
			: verdict == PBS_VERDICT_TEMPFAIL ? "deferred"
							  : NULL;
	int e;

	/* Only the relay decisions: the grant events share some words. */
	for (e = 0; v != NULL && e < PBS_EV_GRANTED; e++)
		if (strcmp(words[e][0], v) == 0 && strcmp(words[e][1], reason) == 0)
			return e;
	return -1;
}

const char *pbs_usagekey_verdict(enum pbs_usage_event event)
{
	return words[event][0];
}

const char *pbs_usagekey_reason(enum pbs_usage_event event)
{
	return words[event][1];
}

bool pbs_usagekey_is_grant(enum pbs_usage_event event)
{
	return event >= PBS_EV_GRANTED && event <= PBS_EV_GRANT_FAILED_STORE;
}

int pbs_usagekey_event(const char *verdict, const char *reason)
{
	int e;

	for (e = 0; e < PBS_EV_COUNT; e++)
		if (strcmp(words[e][0], verdict) == 0 && strcmp(words[e][1], reason) == 0)
			return e;
	return -1;
}

const char *pbs_usagekey_host(const char *configured, char out[PBS_USAGEKEY_HOST_MAX + 1])
{
	char *p;

	if (configured != NULL && configured[0] != '\0')
		snprintf(out, PBS_USAGEKEY_HOST_MAX + 1, "%s", configured);
	else if (gethostname(out, PBS_USAGEKEY_HOST_MAX + 1) != 0 || out[0] == '\0')
		snprintf(out, PBS_USAGEKEY_HOST_MAX + 1, "unknown");
	out[PBS_USAGEKEY_HOST_MAX] = '\0';
	/* '|' would split the field wrongly; label values stay plain too. */
	for (p = out; *p != '\0'; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_'))
			*p = '_';
	return out;
}

void pbs_usagekey_field(const char *host, const char *gate, enum pbs_usage_event event,
			char out[PBS_USAGEKEY_FIELD_MAX])
{
	snprintf(out, PBS_USAGEKEY_FIELD_MAX, "%s|%s|%s|%s", host, gate, words[event][0],
		 words[event][1]);
}

void pbs_usagekey_flushed_field(const char *host, const char *gate,
				char out[PBS_USAGEKEY_FIELD_MAX])
{
	snprintf(out, PBS_USAGEKEY_FIELD_MAX, "%s|%s|flushed|time", host, gate);
}

/* Copy the word at *P up to '|' or the end into OUT; advance past it. -1 if empty. */
static int field_word(const char **p, char out[PBS_USAGEKEY_FIELD_MAX], bool last)
{
	size_t n = strcspn(*p, "|");

	if (n == 0 || n >= PBS_USAGEKEY_FIELD_MAX || (last != ((*p)[n] == '\0')))
		return -1;
	memcpy(out, *p, n);
	out[n] = '\0';
	*p += n + (last ? 0 : 1);
	return 0;
}

int pbs_usagekey_parse_field(const char *field, struct pbs_usagekey_parts *parts)
{
	const char *p = field;

	if (field_word(&p, parts->host, false) != 0 || field_word(&p, parts->gate, false) != 0 ||
	    field_word(&p, parts->verdict, false) != 0 || field_word(&p, parts->reason, true) != 0)
		return -1;
	return 0;
}

/* "<prefix><what><strftime of T in UTC>" into OUT. */
static void time_key(const char *prefix, const char *what, const char *fmt, time_t t,
		     char out[PBS_KEY_MAX])
{
	char stamp[PBS_TEXT_TIME_MAX];

	pbs_text_utc(fmt, (long long)t, stamp, sizeof stamp);
	snprintf(out, PBS_KEY_MAX, "%s%s%s", prefix, what, stamp);
}

void pbs_usagekey_total(const char *prefix, char out[PBS_KEY_MAX])
{
	snprintf(out, PBS_KEY_MAX, "%sstat:total", prefix);
}

void pbs_usagekey_bucket(const char *prefix, time_t t, char out[PBS_KEY_MAX])
{
	time_key(prefix, "stat:", "%Y%m%dT%H%M", t - t % PBS_USAGEKEY_BUCKET, out);
}

void pbs_usagekey_day(const char *prefix, time_t t, char out[PBS_KEY_MAX])
{
	time_key(prefix, "usage:", "%Y%m%d", t, out);
}

long long pbs_usagekey_bucket_expiry(time_t t)
{
	return (long long)(t - t % PBS_USAGEKEY_BUCKET) + PBS_USAGEKEY_BUCKET +
	       PBS_USAGEKEY_BUCKET_KEEP;
}

long long pbs_usagekey_day_expiry(time_t t, int retention_days)
{
	return (long long)(t - t % 86400) + 86400 + (long long)retention_days * 86400;
}

void pbs_usagekey_user_field(char kind, const char *user, char out[PBS_USAGEKEY_USER_FIELD_MAX])
{
	snprintf(out, PBS_USAGEKEY_USER_FIELD_MAX, "%c:%s", kind, user);
}

char pbs_usagekey_parse_user_field(const char *field, const char **user)
{
	if ((field[0] != 'n' && field[0] != 'f' && field[0] != 'l') || field[1] != ':' ||
	    field[2] == '\0')
		return 0;
	*user = field + 2;
	return field[0];
}

void pbs_usagekey_last_value(long long when, const char *client, char *out, size_t len)
{
	snprintf(out, len, "%lld %s", when, client);
}

/* A count or a time at VALUE: digits only, up to LLONG_MAX, ending at *END. -1 if none. */
static int usagekey_number(const char *value, long long *n, char **end)
{
	if (value[0] < '0' || value[0] > '9')
		return -1;
	errno = 0;
	*n = strtoll(value, end, 10);
	return errno == 0 ? 0 : -1;
}

int pbs_usagekey_parse_last(const char *value, long long *when, char *client, size_t len)
{
	char *end;

	if (usagekey_number(value, when, &end) != 0 || *end != ' ' || strlen(end + 1) >= len)
		return -1;
	snprintf(client, len, "%s", end + 1);
	return 0;
}

int pbs_usagekey_parse_count(const char *value, long long *n)
{
	char *end;

	return usagekey_number(value, n, &end) == 0 && *end == '\0' ? 0 : -1;
}

long long pbs_usagekey_sum(long long a, long long b)
{
	return a > LLONG_MAX - b ? LLONG_MAX : a + b;
}
