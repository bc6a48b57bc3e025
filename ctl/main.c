/*
 * popbsmtpctl — the administrator's tool for leases: a table of subcommands sharing
 * one config, one Redis handle and one output style (text, or JSON with --json).
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "popbsmtp/version.h"

struct command {
	const char *name;
	int (*run)(struct ctl *c, int argc, char **argv);
	const char *usage;
};

static const struct command commands[] = {
	{"list", ctl_cmd_list, "list [--user USER]          every live lease"},
	{"check", ctl_cmd_check, "check ADDR                  exit 0 if a lease covers ADDR, 1 if not"},
	{"grant", ctl_cmd_grant, "grant ADDR USER [--ttl N] [--service NAME]\n"
				 "                              write a lease by hand (service \"ctl\")"},
	{"revoke", ctl_cmd_revoke, "revoke ADDR | --user USER   remove a lease, or all of a user's"},
	{"explain", ctl_cmd_explain, "explain ADDR [DOMAIN]       what the milter would decide, and why"},
	{"stats", ctl_cmd_stats, "stats                       leases, Redis latency and memory, decisions"},
	{"flush", ctl_cmd_flush, "flush --yes                 remove every lease under the prefix"},
	{"usage", ctl_cmd_usage, "usage [--days N] [--user USER]\n"
				 "                              who relayed by lease, messages, first/last use"},
	{"metrics", ctl_cmd_metrics, "metrics                     the counters in Prometheus text format"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

int ctl_fail(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("popbsmtpctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return status;
}

static void usage(FILE *out)
{
	size_t i;

	fprintf(out, "usage: popbsmtpctl [-c FILE] [--json] COMMAND [ARGS]\n\ncommands:\n");
	for (i = 0; i < NCOMMANDS; i++)
		fprintf(out, "  %s\n", commands[i].usage);
	fprintf(out, "\nexit status: 0 ok, 1 no lease / nothing done, 2 usage or bad input, "
		     "3 Redis error, 78 configuration error\n");
}

static const struct command *find_command(const char *name)
{
	size_t i;

	for (i = 0; i < NCOMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

/* Load the config; every problem goes to stderr. */
static pbs_config *load(const char *path)
{
	pbs_config_report report = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg = pbs_config_load(path, &report);

	pbs_config_report_print(&report);
	pbs_config_report_free(&report);
	return cfg;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
						 {"help", no_argument, NULL, 'h'},
						 {"config", required_argument, NULL, 'c'},
						 {"version", no_argument, NULL, 'V'},
						 {NULL, 0, NULL, 0}};
	const char *path = PBS_DEFAULT_CONFIG;
	const struct command *cmd;
	struct ctl c = {NULL, NULL, false};
	pbs_config *cfg;
	int opt, rc, check = 0;

	opterr = 0; /* one line of our own instead of getopt's */
	while ((opt = getopt_long(argc, argv, "+c:jhtV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 'j':
			c.json = true;
			break;
		case 't':
			check = 1;
			break;
		case 'h':
			usage(stdout);
			return CTL_OK;
		case 'V':
			printf("popbsmtpctl " PBS_VERSION "\n");
			return CTL_OK;
		default:
			return ctl_fail(CTL_USAGE, "unknown option '%s' (try --help)",
					argv[optind - 1]);
		}
	}
	if (check)
		return pbs_config_check(path);
	if (optind >= argc) {
		usage(stderr);
		return CTL_USAGE;
	}
	if ((cmd = find_command(argv[optind])) == NULL)
		return ctl_fail(CTL_USAGE, "unknown command '%s' (try --help)", argv[optind]);
	if ((cfg = load(path)) == NULL)
		return CTL_CONFIG;
	c.cfg = cfg;
	if ((c.store = pbs_store_new(&cfg->redis)) == NULL) {
		pbs_config_free(cfg);
		return ctl_fail(CTL_STORE, "out of memory");
	}
	rc = cmd->run(&c, argc - optind, argv + optind);
	pbs_store_free(c.store);
	pbs_config_free(cfg);
	return rc;
}
