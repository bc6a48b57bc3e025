/*
 * fuzz_config.c — libFuzzer target for the config loader in lib/config.c. The input is a
 * whole popbsmtp.conf; pbs_config_load() reads files only, so each input is written to
 * one file in a private directory made once per process (no file is created per run,
 * which keeps the fuzzer fast and leaves at most one directory behind). A relative
 * @include therefore names files of that directory, i.e. the input itself.
 * Whatever loads must respect the key table's bounds; whatever fails must say why; the
 * report and the config are freed every time, so LeakSanitizer sees any leak.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "popbsmtp/config.h"
#include "popbsmtp/lease.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz_config"
#include "fuzz_check.h"

static char dir[4096];
static char path[4200];

static void remove_files(void)
{
	unlink(path);
	rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *tmp = getenv("TMPDIR");

	(void)argc;
	(void)argv;
	snprintf(dir, sizeof dir, "%s/pbs-fuzz-config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (mkdtemp(dir) == NULL) {
		fprintf(stderr, "fuzz_config: mkdtemp %s: %s\n", dir, strerror(errno));
		exit(1);
	}
	snprintf(path, sizeof path, "%s/fuzz.conf", dir);
	atexit(remove_files);
	return 0;
}

/* Replace the file's contents with DATA. */
static void write_input(const uint8_t *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	size_t done = 0;
	ssize_t n;

	CHECK(fd >= 0, "%s: %s", path, strerror(errno));
	while (done < size) {
		n = write(fd, data + done, size - done);
		CHECK(n > 0, "%s: %s", path, strerror(errno));
		done += (size_t)n;
	}
	close(fd);
}

static void check_cidrs(const pbs_cidr_list *list, const char *key)
{
	size_t i;

	for (i = 0; i < list->count; i++) {
		const pbs_cidr *c = &list->items[i];
		CHECK(c->net.family == AF_INET || c->net.family == AF_INET6, "%s[%zu] family", key,
		      i);
		CHECK(c->bits <= pbs_addr_width(&c->net), "%s[%zu]: %u bits", key, i, c->bits);
	}
}

static void check_strings(const pbs_strlist *list, const char *key)
{
	size_t i;

	for (i = 0; i < list->count; i++)
		CHECK(list->items[i] != NULL, "%s[%zu] is NULL", key, i);
}

/* A config the loader accepted: every value within the bounds the table promises. */
static void check_config(const pbs_config *cfg)
{
	const struct pbs_redis_config *r = &cfg->redis;
	const struct pbs_lease_config *l = &cfg->lease;
	const struct pbs_milter_config *m = &cfg->milter;

	CHECK(cfg->path != NULL && strcmp(cfg->path, path) == 0, "path");
	CHECK(r->socket == NULL || r->host == NULL, "both host and socket");
	CHECK(r->port >= 1 && r->port <= 65535, "redis.port %d", r->port);
	CHECK(r->database >= 0, "redis.database %d", r->database);
	CHECK(r->timeout_ms >= 1 && r->timeout_ms <= 60000, "redis.timeout_ms %d", r->timeout_ms);
	CHECK(r->password != NULL && r->username != NULL && r->prefix != NULL, "redis strings");
	CHECK(strlen(r->prefix) <= PBS_PREFIX_MAX, "redis.prefix of %zu bytes", strlen(r->prefix));
	CHECK(r->sentinel_master != NULL && r->sentinel_password != NULL, "sentinel strings");
	check_strings(&r->sentinel_nodes, "redis.sentinel.nodes");
	CHECK(l->ttl >= 1 && l->ttl <= 31 * 86400, "lease.ttl %d", l->ttl);
	CHECK(l->ipv4_prefix >= 0 && l->ipv4_prefix <= 32, "lease.ipv4_prefix %d", l->ipv4_prefix);
	CHECK(l->ipv6_prefix >= 0 && l->ipv6_prefix <= 128, "lease.ipv6_prefix %d", l->ipv6_prefix);
	check_cidrs(&l->never, "lease.never");
	CHECK(m->socket != NULL && m->socket_group != NULL && m->user != NULL &&
	          m->pidfile != NULL && m->reject_text != NULL,
	      "milter strings");
	CHECK(m->socket_mode >= 0 && m->socket_mode <= 0777, "milter.socket_mode %o",
	      (unsigned)m->socket_mode);
	check_cidrs(&m->trusted, "milter.trusted");
	check_strings(&m->relay_mailers, "milter.relay_mailers");
	check_strings(&m->local_mailers, "milter.local_mailers");
	check_strings(&m->local_domains, "milter.local_domains");
	CHECK(m->on_store_error >= PBS_ON_ERROR_TEMPFAIL &&
	          m->on_store_error <= PBS_ON_ERROR_ACCEPT,
	      "milter.on_store_error %d", m->on_store_error);
	CHECK(m->pool_size >= 1 && m->pool_size <= 1024, "milter.pool_size %d", m->pool_size);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	pbs_config_report report = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg;
	size_t i;

	write_input(data, size);
	cfg = pbs_config_load(path, &report);
	if (cfg != NULL) {
		CHECK(report.errors.count == 0, "loaded despite %zu errors", report.errors.count);
		check_config(cfg);
	} else {
		CHECK(report.errors.count > 0, "refused without saying why");
	}
	for (i = 0; i < report.errors.count; i++)
		CHECK(report.errors.items[i] != NULL && report.errors.items[i][0] != '\0',
		      "empty error %zu", i);
	pbs_config_report_free(&report);
	pbs_config_free(cfg);
	return 0;
}
