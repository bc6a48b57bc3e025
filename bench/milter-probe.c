/*
 * milter-probe.c — drive one milter session from the command line, the way Postfix would,
 * and print one line per answer so shell tests can assert what the milter decides:
 *
 *   milter-probe [-t TIMEOUT_MS] SOCKET STEP...
 *
 *   STEP: connect:ADDR  (IPv4, IPv6, "unix" for AF_UNIX, "unspec" for an unknown family)
 *         macro:STAGE:NAME=VALUE  (STAGE connect|helo|mail|rcpt; sent before that stage)
 *         helo:NAME  mail:ARG  rcpt:ARG  abort  quit
 *         run:COMMAND  (a shell command run there, between two events: what happens to the
 *                       lease in the middle of a session; its failure ends the probe)
 *
 * Output: "negotiated actions=0x.. steps=0x.. version=N skipped=... noreply=..." first, then
 * "STEP ANSWER" for every stage step, ANSWER being continue, accept, reject, tempfail,
 * discard, replycode TEXT, skipped (negotiated away), noreply (SMFIP_NR_*) or not-sent (an
 * earlier decision ended filtering); STEP is echoed as given ("connect:10.0.0.1 continue").
 * Control bytes print as \xNN, a backslash as \\. A macro goes out once, with the next event
 * of its stage; libmilter keeps the old value until a new one for that stage arrives, so give
 * each RCPT its own {rcpt_mailer}.
 * A session without "quit" ends with one anyway. Exit 0 when the session ran, 1 on a usage
 * error, 2 when the milter could not be reached or broke the protocol (message on stderr).
 */
#include "milter_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_TIMEOUT_MS 10000

enum step_kind {
	STEP_CONNECT,
	STEP_MACRO,
	STEP_HELO,
	STEP_MAIL,
	STEP_RCPT,
	STEP_ABORT,
	STEP_QUIT,
	STEP_RUN
};

struct step {
	enum step_kind kind;
	const char *text;            /* the argument as given, echoed in the output */
	const char *arg;             /* after "kind:" (for a macro: the value) */
	char family;                 /* connect */
	enum pbs_milter_stage stage; /* macro */
	char name[128];              /* macro */
};

static const char *const stage_names[PBS_MILTER_NSTAGES] = {"connect", "helo", "mail", "rcpt"};

/* Print the usage message and return the usage exit code. */
static int usage(void)
{
	fprintf(stderr, "usage: milter-probe [-t TIMEOUT_MS] SOCKET STEP...\n"
	                "  SOCKET: unix:/path | inet:PORT@HOST | inet6:PORT@HOST\n"
	                "  STEP:   connect:ADDR (IPv4, IPv6, unix, unspec) | "
	                "macro:STAGE:NAME=VALUE (STAGE connect|helo|mail|rcpt)\n"
	                "          helo:NAME | mail:<ADDR> | rcpt:<ADDR> | abort | quit | "
	                "run:COMMAND\n");
	return 1;
}

/* Write s with control bytes and backslashes escaped, so every answer stays on one line. */
static void print_escaped(const char *s)
{
	for (; *s != '\0'; s++) {
		unsigned char u = (unsigned char)*s;

		if (u == '\\')
			fputs("\\\\", stdout);
		else if (u < 0x20 || u == 0x7f)
			printf("\\x%02x", u);
		else
			putchar(u);
	}
}

/* Parse one STEP argument; 0 or -1 with a message on stderr. */
static int parse_step(const char *text, struct step *st)
{
	const char *colon = strchr(text, ':');
	size_t klen = colon ? (size_t)(colon - text) : strlen(text);
	unsigned char ip[16];

	memset(st, 0, sizeof(*st));
	st->text = text;
	st->arg = colon ? colon + 1 : "";
	if (colon == NULL && strcmp(text, "abort") == 0) {
		st->kind = STEP_ABORT;
	} else if (colon == NULL && strcmp(text, "quit") == 0) {
		st->kind = STEP_QUIT;
	} else if (colon != NULL && klen == 7 && strncmp(text, "connect", 7) == 0) {
		st->kind = STEP_CONNECT;
		if (strcmp(st->arg, "unix") == 0)
			st->family = SMFIA_UNIX;
		else if (strcmp(st->arg, "unspec") == 0)
			st->family = SMFIA_UNKNOWN;
		else if (inet_pton(AF_INET, st->arg, ip) == 1)
			st->family = SMFIA_INET;
		else if (inet_pton(AF_INET6, st->arg, ip) == 1)
			st->family = SMFIA_INET6;
		else {
			fprintf(stderr,
			        "milter-probe: %s: not an IPv4/IPv6 address, unix or unspec\n",
			        text);
			return -1;
		}
	} else if (colon != NULL && klen == 4 && strncmp(text, "helo", 4) == 0) {
		st->kind = STEP_HELO;
	} else if (colon != NULL && klen == 4 && strncmp(text, "mail", 4) == 0) {
		st->kind = STEP_MAIL;
	} else if (colon != NULL && klen == 4 && strncmp(text, "rcpt", 4) == 0) {
		st->kind = STEP_RCPT;
	} else if (colon != NULL && klen == 3 && strncmp(text, "run", 3) == 0) {
		st->kind = STEP_RUN;
	} else if (colon != NULL && klen == 5 && strncmp(text, "macro", 5) == 0) {
		const char *sc = strchr(st->arg, ':'), *eq;
		size_t slen, nlen;
		int i;

		st->kind = STEP_MACRO;
		if (sc == NULL || (eq = strchr(sc + 1, '=')) == NULL || eq == sc + 1) {
			fprintf(stderr, "milter-probe: %s: want macro:STAGE:NAME=VALUE\n", text);
			return -1;
		}
		slen = (size_t)(sc - st->arg);
		for (i = 0; i < PBS_MILTER_NSTAGES; i++)
			if (strlen(stage_names[i]) == slen &&
			    strncmp(st->arg, stage_names[i], slen) == 0)
				break;
		if (i == PBS_MILTER_NSTAGES) {
			fprintf(stderr,
			        "milter-probe: %s: stage must be connect, helo, mail or rcpt\n",
			        text);
			return -1;
		}
		st->stage = (enum pbs_milter_stage)i;
		nlen = (size_t)(eq - (sc + 1));
		if (nlen >= sizeof(st->name)) {
			fprintf(stderr, "milter-probe: %s: macro name too long\n", text);
			return -1;
		}
		memcpy(st->name, sc + 1, nlen);
		st->name[nlen] = '\0';
		st->arg = eq + 1;
	} else {
		fprintf(stderr, "milter-probe: %s: unknown step\n", text);
		return -1;
	}
	return 0;
}

/* Append the names of the set bits to the line, or "none". */
static void print_bits(const char *label, uint32_t bits, const uint32_t *masks,
                       const char *const *names, size_t n)
{
	size_t i;
	int any = 0;

	printf(" %s=", label);
	for (i = 0; i < n; i++) {
		if (bits & masks[i]) {
			printf("%s%s", any ? "," : "", names[i]);
			any = 1;
		}
	}
	if (!any)
		fputs("none", stdout);
}

/* The "negotiated" line, then the macro lists the milter asked for, if any. */
static void print_negotiated(const pbs_milter_client *c)
{
	static const uint32_t no_bits[] = {SMFIP_NOCONNECT, SMFIP_NOHELO, SMFIP_NOMAIL,
	                                   SMFIP_NORCPT,    SMFIP_NODATA, SMFIP_NOHDRS,
	                                   SMFIP_NOEOH,     SMFIP_NOBODY, SMFIP_NOUNKNOWN};
	static const char *const no_names[] = {"connect", "helo", "mail", "rcpt",   "data",
	                                       "header",  "eoh",  "body", "unknown"};
	static const uint32_t nr_bits[] = {SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_MAIL,
	                                   SMFIP_NR_RCPT, SMFIP_NR_DATA, SMFIP_NR_HDR,
	                                   SMFIP_NR_EOH,  SMFIP_NR_BODY, SMFIP_NR_UNKN};
	static const char *const classes[] = {"connect", "helo", "mail", "rcpt",
	                                      "data",    "eom",  "eoh"};
	size_t i;

	printf("negotiated actions=0x%lx steps=0x%lx version=%lu", (unsigned long)c->actions,
	       (unsigned long)c->steps, (unsigned long)c->version);
	print_bits("skipped", c->steps, no_bits, no_names, sizeof(no_bits) / sizeof(no_bits[0]));
	print_bits("noreply", c->steps, nr_bits, no_names, sizeof(nr_bits) / sizeof(nr_bits[0]));
	putchar('\n');
	for (i = 0; i < sizeof(classes) / sizeof(classes[0]); i++) {
		if (c->symlist[i] != NULL) {
			printf("symlist %s ", classes[i]);
			print_escaped(c->symlist[i]);
			putchar('\n');
		}
	}
}

/* Run one step; 0, or -1 after the client reported an error. */
static int run_step(pbs_milter_client *c, const struct step *st)
{
	pbs_milter_reply r;
	const char *argv[2] = {st->arg, NULL};
	int rc;

	switch (st->kind) {
	case STEP_MACRO:
		return pbs_milter_client_macro(c, st->stage, st->name, st->arg);
	case STEP_ABORT:
		return pbs_milter_client_abort(c);
	case STEP_QUIT:
		return pbs_milter_client_quit(c);
	case STEP_RUN:
		fflush(stdout);
		if (system(st->arg) == 0)
			return 0;
		fprintf(stderr, "milter-probe: %s: failed\n", st->text);
		return -1;
	case STEP_CONNECT:
		if (st->family == SMFIA_UNIX || st->family == SMFIA_UNKNOWN) {
			rc = pbs_milter_client_connect(c, "localhost", st->family, 0, "localhost",
			                               &r);
		} else {
			/* Postfix's form for a client without a verified name: [address]. */
			char host[64];

			snprintf(host, sizeof(host), "[%s]", st->arg);
			rc = pbs_milter_client_connect(c, host, st->family, 0, st->arg, &r);
		}
		break;
	case STEP_HELO:
		rc = pbs_milter_client_helo(c, st->arg, &r);
		break;
	case STEP_MAIL:
		rc = pbs_milter_client_mail(c, argv, &r);
		break;
	case STEP_RCPT:
		rc = pbs_milter_client_rcpt(c, argv, &r);
		break;
	default:
		return -1;
	}
	if (rc != 0)
		return -1;
	print_escaped(st->text);
	printf(" %s", pbs_milter_reply_name(&r));
	if (r.status == PBS_MILTER_REPLIED && r.cmd == SMFIR_REPLYCODE) {
		putchar(' ');
		print_escaped(r.text);
		if (r.malformed)
			fprintf(stderr,
			        "milter-probe: warning: %s: Postfix would reject this reply as "
			        "malformed and apply milter_default_action\n",
			        st->text);
	}
	putchar('\n');
	return 0;
}

int main(int argc, char **argv)
{
	pbs_milter_client c;
	struct step *steps;
	long timeout = DEFAULT_TIMEOUT_MS;
	int i, nsteps, first = 1, status = 0;

	if (argc > 2 && strcmp(argv[1], "-t") == 0) {
		char *end;

		errno = 0;
		timeout = strtol(argv[2], &end, 10);
		if (errno != 0 || *end != '\0' || end == argv[2] || timeout < 1 ||
		    timeout > 86400000) {
			fprintf(stderr, "milter-probe: bad timeout \"%s\" (milliseconds)\n",
			        argv[2]);
			return usage();
		}
		first = 3;
	}
	if (argc - first < 2)
		return usage();
	nsteps = argc - first - 1;
	if ((steps = calloc((size_t)nsteps, sizeof(*steps))) == NULL) {
		fprintf(stderr, "milter-probe: out of memory\n");
		return 2;
	}
	for (i = 0; i < nsteps; i++) {
		if (parse_step(argv[first + 1 + i], &steps[i]) != 0) {
			free(steps);
			return usage();
		}
		if (i > 0 && steps[i - 1].kind == STEP_QUIT) {
			fprintf(stderr, "milter-probe: %s: step after quit\n", steps[i].text);
			free(steps);
			return usage();
		}
	}

	pbs_milter_client_init(&c, (int)timeout);
	if (pbs_milter_client_open(&c, argv[first]) != 0) {
		fprintf(stderr, "milter-probe: %s\n", c.errstr);
		status = c.err == PBS_MILTER_EUSAGE ? 1 : 2;
	} else {
		print_negotiated(&c);
		for (i = 0; i < nsteps && status == 0; i++) {
			if (run_step(&c, &steps[i]) != 0) {
				fflush(stdout);
				fprintf(stderr, "milter-probe: %s: %s\n", steps[i].text, c.errstr);
				/* A step out of order (e.g. helo before connect) is the caller's.
				 */
				status = c.err == PBS_MILTER_EUSAGE ? 1 : 2;
			}
		}
		if (status != 2 && pbs_milter_client_quit(&c) != 0) {
			fprintf(stderr, "milter-probe: quit: %s\n", c.errstr);
			status = 2;
		}
	}
	pbs_milter_client_free(&c);
	free(steps);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "milter-probe: write error on stdout\n");
		return 2;
	}
	return status;
}
