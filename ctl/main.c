/*
 * popbsmtpctl — the administrator's tool for leases: a table of subcommands sharing
 * one config, one Redis handle and one output style (text, or JSON with --json).
 */
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "popbsmtp/version.h"

struct command {
	const char *name;
	int (*run)(struct ctl *c, int argc, char **argv);
	const char *usage;
};

static const struct command commands[] = {
	{"list", ctl_cmd_list, "list [--user USER | --suspended]\n"
			       "                              every live lease, or every suspended user"},
	{"check", ctl_cmd_check, "check ADDR                  exit 0 if a lease covers ADDR, 1 if not"},
	{"grant", ctl_cmd_grant, "grant ADDR USER [--ttl N] [--service NAME]\n"
				 "                              write a lease by hand (service \"ctl\")"},
	{"revoke", ctl_cmd_revoke, "revoke ADDR | --user USER   remove a lease, or all of a user's"},
	{"explain", ctl_cmd_explain, "explain [--gate milter|policy] ADDR [DOMAIN]\n"
				     "                              what the relay gate would decide, and why"},
	{"stats", ctl_cmd_stats, "stats                       leases, Redis latency and memory, decisions"},
	{"flush", ctl_cmd_flush, "flush --yes                 remove every lease under the prefix"},
	{"usage", ctl_cmd_usage, "usage [--days N] [--user USER]\n"
				 "                              who relayed by lease, messages, first/last use"},
	{"metrics", ctl_cmd_metrics, "metrics                     the counters in Prometheus text format"},
	{"suspend", ctl_cmd_suspend, "suspend USER [--for DURATION] [--reason TEXT]\n"
				     "                              revoke USER's leases; no new one until it ends"},
	{"unsuspend", ctl_cmd_unsuspend, "unsuspend USER              lift a suspension"},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

int ctl_fail(int status, const char *fmt, ...)
{
	char line[PBS_LOG_LINE_MAX], safe[PBS_LOG_UNCTRL_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	/* One line on the terminal, whatever Redis, a sentinel or the arguments held. */
	fprintf(stderr, "popbsmtpctl: %s\n", pbs_log_unctrl(line, safe, sizeof safe));
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

/* The commands' own options (list --user, grant --ttl --service, flush --yes, explain
 * --gate): known here
 * only so that they and their values reach the command in place, wherever the global
 * options stand on the line. Their getopt codes index this table from CMD_OPTION. */
static const char *const command_options[] = {"--user", "--ttl", "--service", "--yes", "--gate"};
#define CMD_OPTION 0x100

/* The command line sorted into global options and the command's words, in their order. */
struct cmdline {
	const char *path;
	bool json, check;
	char **words; /* words[0] the command (NULL if none), then its arguments */
	int nwords;
};

/* Add WORD to the command's words: the first plain word names the command. */
static void add_word(struct cmdline *cl, char *word, bool plain)
{
	if (plain && cl->words[0] == NULL)
		cl->words[0] = word;
	else
		cl->words[cl->nwords++] = word;
}

/* Sort ARGV into CL. Global options count anywhere before "--" (popbsmtpctl list --json
 * as popbsmtpctl --json list); getopt's "-" mode hands over the other words in order.
 * Returns -1 to go on, or the exit status (--help, --version, a bad option). */
static int parse(int argc, char **argv, struct cmdline *cl)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
	    {"config", required_argument, NULL, 'c'}, {"version", no_argument, NULL, 'V'},
	    {"user", required_argument, NULL, CMD_OPTION},
	    {"ttl", required_argument, NULL, CMD_OPTION + 1},
	    {"service", required_argument, NULL, CMD_OPTION + 2},
	    {"yes", no_argument, NULL, CMD_OPTION + 3},
	    {"gate", required_argument, NULL, CMD_OPTION + 4},
	    {NULL, 0, NULL, 0}};
	int opt;

	opterr = 0; /* one line of our own instead of getopt's */
	while ((opt = getopt_long(argc, argv, "-:c:jhtV", longopts, NULL)) != -1) {
		const char *word = argv[optind - 1];

		switch (opt) {
		case 1:
			add_word(cl, optarg, true);
			break;
		case 'c':
			cl->path = optarg;
			break;
		case 'j':
			cl->json = true;
			break;
		case 't':
			cl->check = true;
			break;
		case 'h':
			usage(stdout);
			return CTL_OK;
		case 'V':
			printf("popbsmtpctl " PBS_VERSION "\n");
			return CTL_OK;
		case ':':
			if (word[1] != '-')
				return ctl_fail(CTL_USAGE, "-%c needs a value", optopt);
			return ctl_fail(CTL_USAGE, "%s needs a value", word);
		case '?':
			/* An unknown --word after the command is the command's to refuse, in its words. */
			if (optopt == 0 && cl->words[0] != NULL) {
				add_word(cl, argv[optind - 1], false);
				break;
			}
			if (optopt == 0) /* a long one: getopt has stepped past its word */
				return ctl_fail(CTL_USAGE, "unknown option '%s' (try --help)", word);
			if (strncmp(word, "--", 2) == 0 && strchr(word, '=') != NULL)
				return ctl_fail(CTL_USAGE, "option '%s' takes no value", word);
			return ctl_fail(CTL_USAGE, "unknown option '-%c' (try --help)", optopt);
		default:
			add_word(cl, (char *)command_options[opt - CMD_OPTION], false);
			if (optarg != NULL)
				add_word(cl, optarg, false);
		}
	}
	while (optind < argc) /* after "--": words only */
		add_word(cl, argv[optind++], true);
	return -1;
}

/* Load the config and run the command; returns its exit status. */
static int run(const struct cmdline *cl)
{
	const struct command *cmd;
	struct ctl c = {NULL, NULL, cl->json};
	pbs_config *cfg;
	int rc;

	if (cl->check)
		return pbs_config_check(cl->path);
	if (cl->words[0] == NULL) {
		usage(stderr);
		return CTL_USAGE;
	}
	if ((cmd = find_command(cl->words[0])) == NULL)
		return ctl_fail(CTL_USAGE, "unknown command '%s' (try --help)", cl->words[0]);
	if ((cfg = load(cl->path)) == NULL)
		return CTL_CONFIG;
	c.cfg = cfg;
	if ((c.store = pbs_store_new(&cfg->redis)) == NULL) {
		pbs_config_free(cfg);
		return ctl_fail(CTL_STORE, "out of memory");
	}
	rc = cmd->run(&c, cl->nwords, cl->words);
	pbs_store_free(c.store);
	pbs_config_free(cfg);
	return rc;
}

int main(int argc, char **argv)
{
	struct cmdline cl = {PBS_DEFAULT_CONFIG, false, false, NULL, 1};
	int rc;

	/* Each word may become two (--user=NAME), plus the terminating NULL. */
	if ((cl.words = calloc((size_t)argc * 2 + 1, sizeof *cl.words)) == NULL)
		return ctl_fail(CTL_USAGE, "out of memory");
	rc = parse(argc, argv, &cl);
	if (rc < 0)
		rc = run(&cl);
	free(cl.words);
	return rc;
}
