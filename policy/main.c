/*
 * popbsmtp-policy — the Postfix SMTPD access policy gate, in two modes. By default
 * Postfix's spawn(8) starts it with the policy connection on stdin and stdout (and
 * stderr: never written to while serving, it is the same socket) and it answers request
 * after request until Postfix closes the connection. One process serves one smtpd over
 * many SMTP sessions and keeps one Redis connection, made at the first lookup and re-made
 * after a failure. With --listen (daemon.c) one process serves every client on a socket
 * of its own: all smtpd processes as a standalone policy service, or Exim's readsocket.
 * Failing to start is safe: Postfix then answers smtpd_policy_service_default_action
 * (451 4.3.5), Exim's ACL defers; neither relays.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "gate.h"
#include "popbsmtp/config.h"
#include "popbsmtp/log.h"
#include "popbsmtp/version.h"
#include "request.h"

#define PROG "popbsmtp-policy"

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [-c FILE] [-t | -H | -L | -l SOCKET] [-V]\n"
			"  -c FILE  configuration file (default " PBS_DEFAULT_CONFIG ")\n"
			"  -t       check the configuration and exit (0 OK, 78 errors)\n"
			"  -H       print Postfix header_checks lines for usage.trace_secret\n"
			"  -L       serve on policy.listen, in the foreground\n"
			"  -l SOCKET, --listen SOCKET\n"
			"           serve on SOCKET (unix:/path or inet:port@host) instead\n"
			"  -V       print the version\n"
			"Without -L or -l: run by Postfix's spawn(8), policy requests on stdin, replies\n"
			"on stdout.\n");
}

/* Log lines go to syslog; a copy goes to stderr only when stderr is not a socket: under
 * spawn(8) it is the policy connection itself, and a stray line would break the protocol. */
static void open_log(void)
{
	struct stat st;
	bool socket = fstat(STDERR_FILENO, &st) != 0 || S_ISSOCK(st.st_mode);

	pbs_log_open(PROG, socket ? PBS_LOG_NO_STDERR : LOG_DEBUG);
}

/* Write all of TEXT to stdout. Returns 0, or -1 when Postfix has gone. */
static int reply(const char *text)
{
	size_t left = strlen(text);
	ssize_t n;

	while (left > 0) {
		n = write(STDOUT_FILENO, text, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			pbs_log(LOG_ERR, "cannot write the reply: %s", strerror(errno));
			return -1;
		}
		text += n;
		left -= (size_t)n;
	}
	return 0;
}

/* -H: the header_checks lines for the configuration at PATH, on stdout. Returns the exit
 * status: 0, or 78 when the configuration is bad or has no usage.trace_secret. */
static int print_header_checks(const char *path)
{
	pbs_config *cfg;
	int rc = 0;

	pbs_log_open(PROG, LOG_DEBUG);
	if ((cfg = pbs_config_load_logged(path)) == NULL)
		return PBS_EX_CONFIG;
	if (pbs_gate_header_checks(cfg, stdout) != 0) {
		pbs_log(LOG_ERR, "%s: usage.trace_secret is not set: nothing to print", path);
		rc = PBS_EX_CONFIG;
	} else if (fflush(stdout) != 0 || ferror(stdout)) {
		pbs_log(LOG_ERR, "cannot write the header_checks lines: %s", strerror(errno));
		rc = 1;
	}
	pbs_config_free(cfg);
	return rc;
}

/* Seconds on the monotonic clock. */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* At EOF: say when Postfix closed the connection right after its first and only request.
 * That is what smtpd_policy_service_request_limit = 1 does to every connection, and it
 * costs the gate its state between the requests of one message (the lease asked once, the
 * relay counted once, the trace header at DATA). Otherwise smtpd keeps the connection for
 * its next request until it idles out, seconds later at the least; an smtpd that exits
 * right after its first policy request (max_use, a reload) makes a rare false alarm. */
static void note_request_limit(unsigned long requests, double last_answer)
{
	if (requests == 1 && now_s() - last_answer < 1.0)
		pbs_log(LOG_WARNING, "Postfix closed the policy connection right after its first "
			"request: with smtpd_policy_service_request_limit = 1 every request is a new "
			"process, so the lease is looked up and the relay counted per recipient and "
			"no trace header is added; set request_limit=0 for this service "
			"(docs/postfix.md)");
}

/* Answer every request on stdin until EOF. Returns the exit status. */
static int serve(struct pbs_gate *gate, struct pbs_gate_session *session)
{
	static struct pbs_request_parser parser;
	char buf[16384];
	ssize_t n;
	size_t off, used;
	bool complete;
	unsigned long requests = 0;
	double last_answer = 0;

	pbs_request_begin(&parser);
	for (;;) {
		n = read(STDIN_FILENO, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			pbs_log(LOG_ERR, "cannot read requests: %s", strerror(errno));
			return 1;
		}
		if (n == 0)
			break;
		for (off = 0; off < (size_t)n; off += used) {
			used = pbs_request_feed(&parser, buf + off, (size_t)n - off, &complete);
			if (!complete)
				continue;
			if (reply(pbs_gate_answer(gate, session, &parser.req)) != 0)
				return 1;
			requests++;
			last_answer = now_s();
			pbs_gate_idle(gate);
			pbs_request_begin(&parser);
		}
	}
	/* A reply now would reach nobody: Postfix only closes between requests. */
	if (pbs_request_partial(&parser))
		pbs_log(LOG_WARNING, "bad policy request: cut short at end of input (no empty "
				     "line); not answered");
	else
		note_request_limit(requests, last_answer);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {{"listen", required_argument, NULL, 'l'},
						 {NULL, 0, NULL, 0}};
	const char *config_path = PBS_DEFAULT_CONFIG, *listen = NULL;
	struct pbs_gate *gate;
	struct pbs_gate_session *session;
	pbs_config *cfg;
	char *absolute;
	int opt, check = 0, header_checks = 0, daemon = 0, rc;

	while ((opt = getopt_long(argc, argv, "c:tHLl:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'L':
			daemon = 1;
			break;
		case 'l':
			daemon = 1;
			listen = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'H':
			header_checks = 1;
			break;
		case 'V':
			printf(PROG " " PBS_VERSION "\n");
			return 0;
		case 'h':
			usage();
			return 0;
		default:
			usage();
			return 64;
		}
	}
	if (optind != argc) {
		usage();
		return 64;
	}
	if (check)
		return pbs_config_check(config_path);
	if (header_checks)
		return print_header_checks(config_path);
	if (daemon) {
		/* A reload must still find a relative -c file. */
		if ((absolute = realpath(config_path, NULL)) != NULL)
			config_path = absolute;
		rc = pbs_daemon_run(config_path, listen);
		free(absolute);
		return rc;
	}
	open_log();
	if ((cfg = pbs_config_load_logged(config_path)) == NULL)
		return PBS_EX_CONFIG;
	/* hiredis writes to a socket Redis may have closed. */
	signal(SIGPIPE, SIG_IGN);
	if ((gate = pbs_gate_new(cfg)) == NULL || (session = pbs_gate_session_new()) == NULL) {
		pbs_log(LOG_ERR, "out of memory");
		pbs_gate_free(gate);
		pbs_config_free(cfg);
		return 71;
	}
	rc = serve(gate, session);
	pbs_gate_session_free(session);
	pbs_gate_free(gate);
	pbs_config_free(cfg);
	return rc;
}
