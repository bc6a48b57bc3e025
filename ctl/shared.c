/*
 * shared.c — the users seen at each lease subject (<prefix>users:<subject>, a sorted set
 * the grant script keeps: each user's last login or refresh by the store's clock, over
 * lease.ttl): popbsmtpctl usage --shared lists the addresses with more than one, check
 * shows them for one address, metrics counts them (docs/abuse.md).
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "popbsmtp/text.h"

/* What a walk over the sets found. */
struct shared_state {
	long long shared;  /* subjects with more than one user */
	bool print;        /* list them (usage --shared), or only count (metrics) */
	long long oldest;  /* ms: logins before this no longer count (lease.ttl ago) */
};

/* The members of R (ZRANGE ... WITHSCORES) newer than OLDEST: how many. */
static long long live_members(const redisReply *r, long long oldest)
{
	long long n = 0;
	size_t i;

	for (i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
		if (r->element[i + 1]->type == REDIS_REPLY_STRING &&
		    strtoll(r->element[i + 1]->str, NULL, 10) >= oldest)
			n++;
	return n;
}

/* The users of R newer than OLDEST, as "user (time)" after each other, or JSON. */
static void print_members(const struct ctl *c, const redisReply *r, long long oldest)
{
	char when[PBS_TEXT_TIME_MAX], row[PBS_LOG_SAFE_MAX];
	bool first = true;
	size_t i;

	for (i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		long long ms = r->element[i + 1]->type == REDIS_REPLY_STRING
				   ? strtoll(r->element[i + 1]->str, NULL, 10)
				   : -1;

		if (ms < oldest || r->element[i]->type != REDIS_REPLY_STRING)
			continue;
		pbs_text_time(ms / 1000, when);
		if (c->json) {
			printf("%s{\"user\":", first ? "" : ",");
			ctl_json_string(stdout, r->element[i]->str);
			printf(",\"last\":\"%s\"}", when);
		} else {
			printf("%s%s (%s)", first ? "" : ", ",
			       pbs_text_row(r->element[i]->str, row, sizeof row), when);
		}
		first = false;
	}
}

/* ZRANGE KEY 0 -1 WITHSCORES, or NULL (reported). */
static redisReply *members_of(const struct ctl *c, const char *key)
{
	const char *argv[5] = {"ZRANGE", key, "0", "-1", "WITHSCORES"};
	redisReply *r = pbs_store_command(c->store, 5, argv, NULL);

	if (r == NULL || r->type == REDIS_REPLY_ERROR) {
		ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
		freeReplyObject(r);
		return NULL;
	}
	return r;
}

/* Logins before this (ms) no longer count: lease.ttl ago by this host's clock, the best
 * popbsmtpctl can do for a listing (the grant script prunes by the store's). */
static long long oldest_counted(const struct ctl *c)
{
	return ((long long)time(NULL) - c->cfg->lease.ttl) * 1000;
}

static int shared_batch(const struct ctl *c, char **keys, size_t n, void *arg)
{
	struct shared_state *st = arg;
	size_t plen = strlen(pbs_store_prefix(c->store)) + strlen("users:"), i;

	for (i = 0; i < n; i++) {
		redisReply *r = members_of(c, keys[i]);

		if (r == NULL)
			return CTL_STORE;
		if (live_members(r, st->oldest) > 1 && strlen(keys[i]) > plen) {
			if (st->print && c->json) {
				printf("%s{\"subject\":", st->shared > 0 ? "," : "");
				ctl_json_string(stdout, keys[i] + plen);
				printf(",\"count\":%lld,\"users\":[", live_members(r, st->oldest));
				print_members(c, r, st->oldest);
				printf("]}");
			} else if (st->print) {
				char row[PBS_LOG_SAFE_MAX];
				printf("%-40s %5lld ", pbs_text_row(keys[i] + plen, row, sizeof row),
				       live_members(r, st->oldest));
				print_members(c, r, st->oldest);
				printf("\n");
			}
			st->shared++;
		}
		freeReplyObject(r);
	}
	return CTL_OK;
}

int ctl_list_shared(struct ctl *c)
{
	struct shared_state st = {0, true, oldest_counted(c)};
	int rc;

	if (pbs_store_connect(c->store) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	if (c->json)
		printf("{\"shared\":[");
	else
		printf("%-40s %5s %s\n", "SUBJECT", "USERS", "WHO (LAST LOGIN)");
	rc = ctl_scan_keys(c, "users:", shared_batch, &st);
	if (c->json)
		printf("],\"count\":%lld}\n", st.shared);
	return rc;
}

int ctl_count_shared(const struct ctl *c, long long *shared)
{
	struct shared_state st = {0, false, oldest_counted(c)};
	int rc = ctl_scan_keys(c, "users:", shared_batch, &st);

	*shared = st.shared;
	return rc;
}

int ctl_print_users(const struct ctl *c, const char *subject)
{
	char key[PBS_KEY_MAX];
	redisReply *r;

	if (pbs_lease_users_key(pbs_store_prefix(c->store), subject, key) != 0)
		return ctl_fail(CTL_USAGE, "key too long");
	if ((r = members_of(c, key)) == NULL)
		return CTL_STORE;
	if (c->json) {
		printf("[");
		print_members(c, r, oldest_counted(c));
		printf("]");
	} else if (live_members(r, oldest_counted(c)) > 0) {
		printf("users seen at %s: ", subject);
		print_members(c, r, oldest_counted(c));
		printf("\n");
	}
	freeReplyObject(r);
	return CTL_OK;
}
