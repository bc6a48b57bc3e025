/*
 * usage.c — "popbsmtpctl usage": who relayed mail by lease in the last N days. Each day
 * is one hash (usagekey.h), read with HSCAN so a day of 100,000 users never blocks Redis;
 * the days are merged per user in a hash table and printed by last use, newest first.
 */
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "popbsmtp/text.h"
#include "popbsmtp/usagekey.h"

#define TABLE_SIZE 65536
#define SCAN_BATCH "1000"

/* One user's usage over the window. */
struct row {
	struct row *next;
	long long messages, first, last;
	char client[PBS_ADDR_STRLEN];
	char user[];
};

struct rows {
	struct row **table;
	size_t count;
};

/* The row of USER, made if new; NULL when out of memory. */
static struct row *row_of(struct rows *rs, const char *user)
{
	unsigned long long h = 1469598103934665603ULL;
	const char *p;
	struct row *r;
	size_t len = strlen(user);

	for (p = user; *p != '\0'; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ULL;
	for (r = rs->table[h % TABLE_SIZE]; r != NULL; r = r->next)
		if (strcmp(r->user, user) == 0)
			return r;
	if ((r = calloc(1, sizeof *r + len + 1)) == NULL)
		return NULL;
	memcpy(r->user, user, len + 1);
	r->next = rs->table[h % TABLE_SIZE];
	rs->table[h % TABLE_SIZE] = r;
	rs->count++;
	return r;
}

/* Merge one per-user field and its value into RS (ONLY: just this user, or NULL). A field
 * or value no gate writes (another writer's, or hostile) is skipped. */
static int add_field(struct rows *rs, const char *field, const char *value, const char *only)
{
	const char *user;
	char kind = pbs_usagekey_parse_user_field(field, &user), client[PBS_ADDR_STRLEN];
	long long v;
	struct row *r;

	if (kind == 0 || (only != NULL && strcmp(user, only) != 0))
		return 0;
	if (kind == 'l' ? pbs_usagekey_parse_last(value, &v, client, sizeof client) != 0
			: pbs_usagekey_parse_count(value, &v) != 0)
		return 0;
	if ((r = row_of(rs, user)) == NULL)
		return -1;
	if (kind == 'n')
		r->messages = pbs_usagekey_sum(r->messages, v);
	else if (kind == 'f' && (r->first == 0 || v < r->first))
		r->first = v;
	else if (kind == 'l' && v >= r->last) {
		r->last = v;
		memcpy(r->client, client, sizeof r->client);
	}
	return 0;
}

/* Every field of the day hash KEY, by HSCAN. CTL_OK or CTL_STORE (reported). */
static int scan_day(const struct ctl *c, const char *key, struct rows *rs, const char *only)
{
	char cursor[32] = "0";
	size_t i;

	do {
		const char *argv[] = {"HSCAN", key, cursor, "COUNT", SCAN_BATCH};
		redisReply *r = pbs_store_command(c->store, 5, argv, NULL);
		const redisReply *items;

		if (r != NULL && ctl_wrongtype(r)) {
			ctl_fail(CTL_OK, "%s is not a usage hash: skipped", key);
			freeReplyObject(r);
			return CTL_OK;
		}
		if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			if (r != NULL && r->type == REDIS_REPLY_ERROR)
				ctl_fail(CTL_STORE, "Redis at %s refused HSCAN: %s",
					 pbs_store_where(c->store), r->str);
			else
				ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
			freeReplyObject(r);
			return CTL_STORE;
		}
		snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
		items = r->element[1];
		for (i = 0; i + 1 < items->elements; i += 2) {
			if (add_field(rs, items->element[i]->str, items->element[i + 1]->str, only) !=
			    0) {
				freeReplyObject(r);
				return ctl_fail(CTL_STORE, "out of memory");
			}
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return CTL_OK;
}

/* One user's fields of DAYS day hashes in one round trip (--user). */
static int fetch_user(const struct ctl *c, char (*keys)[PBS_KEY_MAX], int days, const char *user,
		      struct rows *rs)
{
	char fields[3][PBS_USAGEKEY_USER_FIELD_MAX];
	const char **argvs = NULL, ***cmds = calloc((size_t)days, sizeof *cmds);
	int *argcs = calloc((size_t)days, sizeof *argcs), i, k, rc = CTL_OK;
	redisReply **replies = calloc((size_t)days, sizeof *replies);

	argvs = calloc((size_t)days * 5, sizeof *argvs);
	if (!cmds || !argcs || !replies || !argvs) {
		rc = ctl_fail(CTL_STORE, "out of memory");
		goto out;
	}
	for (k = 0; k < 3; k++)
		pbs_usagekey_user_field("nfl"[k], user, fields[k]);
	for (i = 0; i < days; i++) {
		const char **a = &argvs[i * 5];
		a[0] = "HMGET";
		a[1] = keys[i];
		a[2] = fields[0];
		a[3] = fields[1];
		a[4] = fields[2];
		cmds[i] = a;
		argcs[i] = 5;
	}
	if (pbs_store_pipeline(c->store, days, argcs, cmds, replies) != 0) {
		rc = ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
		goto out;
	}
	for (i = 0; i < days; i++) {
		for (k = 0; replies[i]->type == REDIS_REPLY_ARRAY && k < 3; k++)
			if (replies[i]->element[k]->type == REDIS_REPLY_STRING && rc == CTL_OK &&
			    add_field(rs, fields[k], replies[i]->element[k]->str, NULL) != 0)
				rc = ctl_fail(CTL_STORE, "out of memory");
		if (ctl_wrongtype(replies[i]))
			ctl_fail(CTL_OK, "%s is not a usage hash: skipped", keys[i]);
		else if (replies[i]->type == REDIS_REPLY_ERROR && rc == CTL_OK)
			rc = ctl_fail(CTL_STORE, "Redis at %s refused: %s", pbs_store_where(c->store),
				      replies[i]->str);
		freeReplyObject(replies[i]);
	}
out:
	free(cmds);
	free(argcs);
	free(replies);
	free(argvs);
	return rc;
}

/* Newest last use first; ties by user name. */
static int row_cmp(const void *a, const void *b)
{
	const struct row *x = *(const struct row *const *)a, *y = *(const struct row *const *)b;

	if (x->last != y->last)
		return x->last > y->last ? -1 : 1;
	return strcmp(x->user, y->user);
}

/* A Unix time as "YYYY-MM-DDTHH:MM:SSZ" ("-" for 0, "?" for what is no time). */
static const char *iso(long long when, char out[PBS_TEXT_TIME_MAX])
{
	return when == 0 ? strcpy(out, "-") : pbs_text_time(when, out);
}

static void print_row(const struct ctl *c, const struct row *r, bool first)
{
	char a[PBS_TEXT_TIME_MAX], b[PBS_TEXT_TIME_MAX], user[PBS_USER_MAX + 1];
	char client[PBS_LOG_SAFE_MAX];

	if (c->json) {
		printf("%s{\"user\":", first ? "" : ",");
		ctl_json_string(stdout, r->user);
		printf(",\"messages\":%lld,\"first\":%lld,\"last\":%lld,\"last_client\":", r->messages,
		       r->first, r->last);
		ctl_json_string(stdout, r->client);
		printf("}");
		return;
	}
	/* The client, like the user, is whatever the day's hash holds. */
	printf("%-24s %8lld %-20s %-20s %s\n", pbs_text_row(r->user, user, sizeof user), r->messages,
	       iso(r->first, a), iso(r->last, b), r->client[0] ? pbs_log_safe(r->client, client) : "-");
}

/* Free every row of RS. */
static void rows_free(struct rows *rs)
{
	size_t i;

	for (i = 0; i < TABLE_SIZE; i++) {
		while (rs->table[i] != NULL) {
			struct row *r = rs->table[i];
			rs->table[i] = r->next;
			free(r);
		}
	}
	free(rs->table);
}

/* Print RS sorted by last use. */
static int print_rows(const struct ctl *c, const struct rows *rs, int days)
{
	struct row **list = calloc(rs->count ? rs->count : 1, sizeof *list), *r;
	size_t i, n = 0;

	for (i = 0; i < TABLE_SIZE; i++) {
		for (r = rs->table[i]; r != NULL; r = r->next)
			if (list != NULL)
				list[n++] = r;
	}
	if (list == NULL)
		return ctl_fail(CTL_STORE, "out of memory");
	qsort(list, n, sizeof *list, row_cmp);
	if (c->json)
		printf("{\"days\":%d,\"users\":[", days);
	else
		printf("%-24s %8s %-20s %-20s %s\n", "USER", "MESSAGES", "FIRST", "LAST",
		       "LAST-CLIENT");
	for (i = 0; i < n; i++)
		print_row(c, list[i], i == 0);
	if (c->json)
		printf("],\"count\":%zu}\n", n);
	free(list);
	return CTL_OK;
}

/* Parse the arguments: --days N (1..3660) and --user USER. */
static int parse_args(int argc, char **argv, int *days, const char **user)
{
	char *end;
	long v;
	int i;

	for (i = 1; i < argc; i++) {
		if (i + 1 >= argc || (strcmp(argv[i], "--days") != 0 && strcmp(argv[i], "--user") != 0))
			return ctl_fail(CTL_USAGE,
					"usage: usage [--days N] [--user USER] | usage --shared");
		if (strcmp(argv[i], "--user") == 0) {
			*user = argv[++i];
			continue;
		}
		v = strtol(argv[++i], &end, 10);
		if (*argv[i] == '\0' || *end != '\0' || v < 1 || v > 3660)
			return ctl_fail(CTL_USAGE, "--days: '%s' is not 1..3660", argv[i]);
		*days = (int)v;
	}
	return CTL_OK;
}

int ctl_cmd_usage(struct ctl *c, int argc, char **argv)
{
	const char *user = NULL;
	int days = 30, i, rc;
	struct rows rs = {NULL, 0};
	char (*keys)[PBS_KEY_MAX];
	time_t now = time(NULL);

	if (argc == 2 && strcmp(argv[1], "--shared") == 0)
		return ctl_list_shared(c);
	if ((rc = parse_args(argc, argv, &days, &user)) != CTL_OK)
		return rc;
	if (pbs_store_connect(c->store) != 0)
		return ctl_fail(CTL_STORE, "%s", pbs_store_error(c->store));
	keys = calloc((size_t)days, sizeof *keys);
	rs.table = calloc(TABLE_SIZE, sizeof *rs.table);
	if (keys == NULL || rs.table == NULL) {
		free(keys);
		free(rs.table);
		return ctl_fail(CTL_STORE, "out of memory");
	}
	/* Today (UTC) and the N-1 days before it. */
	for (i = 0; i < days; i++)
		pbs_usagekey_day(pbs_store_prefix(c->store), now - (time_t)i * 86400, keys[i]);
	if (user != NULL)
		rc = fetch_user(c, keys, days, user, &rs);
	for (i = 0; user == NULL && rc == CTL_OK && i < days; i++)
		rc = scan_day(c, keys[i], &rs, NULL);
	if (rc == CTL_OK)
		rc = print_rows(c, &rs, days);
	rows_free(&rs);
	free(keys);
	return rc;
}
