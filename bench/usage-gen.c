/*
 * usage-gen.c — per-user usage in Redis exactly as a gate writes it (lib/usage.c through
 * pbs_usage_flush), for bench/usage-mem: COUNT users relay one message each by lease today,
 * flushed in batches of BATCH users (a busy gate's flush interval).
 *
 *   usage-gen -n COUNT [-b BATCH] [-d DOMAIN] [-P PORT] [-p PREFIX]
 *
 * User i is "user<i>@DOMAIN" (default example.org) from 10.x.y.z. Exit 0, 1 on a usage
 * error, 2 when a flush failed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "popbsmtp/config.h"
#include "popbsmtp/log.h"
#include "popbsmtp/usage.h"

int main(int argc, char **argv)
{
	long count = 0, batch = 10000, i;
	const char *domain = "example.org";
	pbs_config *cfg = pbs_config_defaults();
	char user[300], client[32];
	pbs_usage *u;
	pbs_store *store;
	time_t now = time(NULL);
	int opt;

	if (cfg == NULL)
		return 2;
	while ((opt = getopt(argc, argv, "n:b:d:P:p:")) != -1) {
		switch (opt) {
		case 'n': count = atol(optarg); break;
		case 'b': batch = atol(optarg); break;
		case 'd': domain = optarg; break;
		case 'P': cfg->redis.port = atoi(optarg); break;
		case 'p': free(cfg->redis.prefix); cfg->redis.prefix = strdup(optarg); break;
		default: return 1;
		}
	}
	if (count <= 0 || batch <= 0) {
		fprintf(stderr, "usage: usage-gen -n COUNT [-b BATCH] [-d DOMAIN] [-P PORT] [-p PREFIX]\n");
		return 1;
	}
	pbs_log_open("usage-gen", LOG_WARNING);
	cfg->redis.timeout_ms = 10000;
	u = pbs_usage_new("milter", (size_t)batch);
	store = pbs_store_new(&cfg->redis);
	if (u == NULL || store == NULL)
		return 2;
	for (i = 0; i < count; i++) {
		snprintf(user, sizeof user, "user%ld@%s", i, domain);
		snprintf(client, sizeof client, "10.%ld.%ld.%ld", (i >> 16) & 255, (i >> 8) & 255,
			 i & 255);
		pbs_usage_count(u, PBS_EV_ALLOWED_LEASE);
		pbs_usage_relay(u, user, client, now);
		if ((i + 1) % batch == 0 || i + 1 == count)
			if (pbs_usage_flush(u, store, &cfg->usage, now) != 0)
				return 2;
	}
	pbs_store_free(store);
	pbs_usage_free(u);
	pbs_config_free(cfg);
	return 0;
}
