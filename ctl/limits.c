/*
 * limits.c — what the relay limits (limits.*, docs/abuse.md) have counted this hour for a
 * lease and its user, for popbsmtpctl check: the hour of the store's clock as the relay
 * script reads it (Redis TIME, never less than <prefix>clock), and the two counters.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"

/* The store's time in ms from the replies to TIME and GET <prefix>clock. -1 if TIME is
 * not what Redis answers; a clock that is not a time is ignored, as the scripts do. */
static long long store_ms(const redisReply *time_r, const redisReply *clock_r)
{
	long long now, last;

	if (time_r->type != REDIS_REPLY_ARRAY || time_r->elements != 2 ||
	    time_r->element[0]->type != REDIS_REPLY_STRING ||
	    time_r->element[1]->type != REDIS_REPLY_STRING)
		return -1;
	now = strtoll(time_r->element[0]->str, NULL, 10) * 1000 +
	      strtoll(time_r->element[1]->str, NULL, 10) / 1000;
	if (clock_r->type == REDIS_REPLY_STRING && clock_r->len > 0 && clock_r->len <= 15 &&
	    strspn(clock_r->str, "0123456789") == clock_r->len) {
		last = strtoll(clock_r->str, NULL, 10);
		if (last > now)
			now = last;
	}
	return now;
}

/* A counter's reply as a count: none is 0, and what is no number -1 (over, to the gates). */
static long long count_of(const redisReply *r)
{
	char *end;
	long long n;

	if (r->type == REDIS_REPLY_NIL)
		return 0;
	if (r->type != REDIS_REPLY_STRING)
		return -1;
	n = strtoll(r->str, &end, 10);
	return end == r->str || *end != '\0' || n < 0 ? -1 : n;
}

/* Print one count against its LIMIT: "12 of 300", "off", "not a number". */
static void print_count(const char *label, long long n, int limit, bool json)
{
	if (json) {
		printf("\"%s\":%lld,\"%s_limit\":%d", label, n, label, limit);
		return;
	}
	if (limit == 0)
		printf("%s off", label);
	else if (n < 0)
		printf("%s not a number (counts as over)", label);
	else
		printf("%s %lld of %d", label, n, limit);
}

int ctl_print_relayed(const struct ctl *c, const char *subject, const char *user)
{
	const struct pbs_limits_config *lim = &c->cfg->limits;
	const char *prefix = pbs_store_prefix(c->store);
	char clock[PBS_KEY_MAX], ukey[PBS_KEY_MAX], lkey[PBS_KEY_MAX], safe[PBS_LOG_SAFE_MAX];
	const char *tv[1] = {"TIME"}, *cv[2] = {"GET", clock}, *uv[2] = {"GET", ukey},
		   *lv[2] = {"GET", lkey};
	redisReply *r[4];
	long long now, hour;
	int i;

	if (!pbs_config_limits_on(lim))
		return CTL_OK;
	if (pbs_lease_clock_key(prefix, clock) != 0)
		return ctl_fail(CTL_USAGE, "key too long");
	if (pbs_store_pipeline(c->store, 2, (const int[]){1, 2}, (const char **const[]){tv, cv},
			       r) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	now = store_ms(r[0], r[1]);
	freeReplyObject(r[0]);
	freeReplyObject(r[1]);
	if (now < 0)
		return ctl_fail(CTL_STORE, "Redis gave no time");
	hour = now / 3600000;
	if (pbs_lease_limit_key(prefix, "user", hour, user, ukey) != 0 ||
	    pbs_lease_limit_key(prefix, "lease", hour, subject, lkey) != 0)
		return ctl_fail(CTL_USAGE, "key too long");
	if (pbs_store_pipeline(c->store, 2, (const int[]){2, 2}, (const char **const[]){uv, lv},
			       r) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (c->json) {
		printf("{");
		print_count("user", count_of(r[0]), lim->user_recipients_per_hour, true);
		printf(",");
		print_count("lease", count_of(r[1]), lim->lease_recipients_per_hour, true);
		printf("}");
	} else {
		printf("relayed by lease this hour: ");
		print_count(pbs_log_safe(user, safe), count_of(r[0]), lim->user_recipients_per_hour,
			    false);
		printf(", ");
		print_count("this lease", count_of(r[1]), lim->lease_recipients_per_hour, false);
		printf("\n");
	}
	for (i = 0; i < 2; i++)
		freeReplyObject(r[i]);
	return CTL_OK;
}
