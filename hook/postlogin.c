/*
 * popbsmtp-postlogin — Dovecot post-login hook (script-login). Reads IP and USER from
 * the environment, writes a lease to Redis, then execs the rest of its argv so the
 * login goes on. It must never break or stall a login: every failure is logged in one
 * line and the exec still happens; a timer execs anyway if Redis takes too long.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "popbsmtp/config.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/policy.h"
#include "popbsmtp/store.h"
#include "popbsmtp/usage.h"
#include "popbsmtp/version.h"

#define PROG "popbsmtp-postlogin"

/* The command to exec once done; the SIGALRM handler uses it too. */
static char **next_argv;

/* The signal state the hook was started with: the login gets it back unchanged. */
static struct sigaction start_pipe, start_alrm;
static sigset_t start_mask;

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [-c FILE] [-s SERVICE] [-t] [command [args...]]\n");
}

/* Record the signal state we were started with; then ignore SIGPIPE (a write to a dead
 * Redis must not kill the login) and let SIGALRM through even if it came in blocked, or
 * the deadline could never fire. */
static void signals_take(void)
{
	struct sigaction ignore = {.sa_handler = SIG_IGN};
	sigset_t alrm;

	sigemptyset(&ignore.sa_mask);
	sigemptyset(&alrm);
	sigaddset(&alrm, SIGALRM);
	sigprocmask(SIG_UNBLOCK, &alrm, &start_mask);
	sigaction(SIGALRM, NULL, &start_alrm);
	sigaction(SIGPIPE, &ignore, &start_pipe);
}

/* Give back the signal state we were started with, so the login inherits what Dovecot
 * gave us, not our SIGPIPE or a mask blocking SIGALRM. Async-signal-safe: the deadline
 * handler calls it too. */
static void signals_give_back(void)
{
	sigaction(SIGPIPE, &start_pipe, NULL);
	sigaction(SIGALRM, &start_alrm, NULL);
	sigprocmask(SIG_SETMASK, &start_mask, NULL);
}

/* Continue the login. Only returns if exec failed (the login is then lost anyway). */
static void continue_login(void)
{
	if (next_argv == NULL || next_argv[0] == NULL)
		return;
	signals_give_back();
	execv(next_argv[0], next_argv);
	pbs_log(LOG_ERR, "cannot exec %s: %s", next_argv[0], strerror(errno));
}

/* What on_deadline says; built before the timer is armed (no formatting in a handler). */
static char deadline_msg[160];

/* Hard bound on the hook's time: exec the login now, whatever Redis is doing. Every
 * socket the store opens is close-on-exec from its creation, so nothing leaks; the timer
 * is one-shot and has just fired, so none is left armed for the login. write, sigaction,
 * sigprocmask and execv are async-signal-safe. */
static void on_deadline(int sig)
{
	(void)sig;
	if (write(STDERR_FILENO, deadline_msg, strlen(deadline_msg)) < 0)
		deadline_msg[0] = '\0'; /* nothing more can be done about a lost log line */
	if (next_argv != NULL && next_argv[0] != NULL) {
		/* Unblocks SIGALRM too: the kernel blocked it while this handler runs. */
		signals_give_back();
		execv(next_argv[0], next_argv);
	}
	_exit(75);
}

/* Arm the deadline at three times the Redis timeout: connect, then the two round trips of
 * a grant (the store's clock, then the grant itself). */
static void arm_deadline(int timeout_ms)
{
	struct itimerval it = {{0, 0}, {0, 0}};
	struct sigaction act = {.sa_handler = on_deadline};
	long ms = 3L * timeout_ms;

	snprintf(deadline_msg, sizeof deadline_msg,
		 PROG ": no lease granted: Redis gave no answer within %ld ms\n", ms);
	it.it_value.tv_sec = ms / 1000;
	it.it_value.tv_usec = (ms % 1000) * 1000;
	sigemptyset(&act.sa_mask);
	sigaction(SIGALRM, &act, NULL);
	setitimer(ITIMER_REAL, &it, NULL);
}

/* Stop the deadline: an interval timer would survive the exec into the login. */
static void disarm_deadline(void)
{
	struct itimerval it = {{0, 0}, {0, 0}};

	setitimer(ITIMER_REAL, &it, NULL);
}

/* Load the config; on any problem log it in one line and return NULL. */
static pbs_config *load_config(const char *path)
{
	pbs_config_report report = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg = pbs_config_load(path, &report);

	if (cfg == NULL)
		pbs_log(LOG_ERR, "no lease granted: bad configuration: %s%s",
			report.errors.count ? report.errors.items[0] : path,
			report.errors.count > 1 ? " (and more; run with -t)" : "");
	pbs_config_report_free(&report);
	return cfg;
}

/* Write the lease for IP/USER. Returns 0 when written, -1 when not (already logged). */
static int grant(const pbs_config *cfg, const char *ip, const char *user, const char *service)
{
	char safe_user[PBS_LOG_SAFE_MAX], safe_ip[PBS_LOG_SAFE_MAX], subject[PBS_ADDR_STRLEN];
	const char *problem;
	pbs_store *store;
	pbs_lease lease;
	pbs_addr addr;
	long long login_ms;
	enum pbs_grant result;

	pbs_log_safe(user, safe_user);
	pbs_log_safe(ip, safe_ip);
	if (pbs_addr_parse(ip, &addr) != 0) {
		pbs_log(LOG_WARNING, "no lease granted: IP '%s' is not an address (user %s)",
			safe_ip, safe_user);
		return -1;
	}
	/* Under lease.sender = address or domain a user name that is no address could never
	 * relay: say so at the login, where it can be fixed, rather than at every message. */
	if ((problem = pbs_lease_make(&lease, user, service, (long long)time(NULL))) != NULL ||
	    (problem = pbs_policy_sender_problem((enum pbs_sender_rule)cfg->lease.sender, user)) !=
		NULL) {
		pbs_log(LOG_WARNING, "no lease granted: %s (user '%s', ip %s)", problem, safe_user,
			safe_ip);
		return -1;
	}
	if (pbs_cidr_list_contains(&cfg->lease.never, &addr)) {
		pbs_log(LOG_INFO, "no lease granted: %s is in lease.never (user %s)", safe_ip,
			safe_user);
		return 0;
	}
	pbs_lease_subject(&addr, (unsigned)cfg->lease.ipv4_prefix, (unsigned)cfg->lease.ipv6_prefix,
			  subject);
	if ((store = pbs_store_new(&cfg->redis)) == NULL) {
		pbs_log(LOG_ERR, "no lease granted: out of memory");
		return -1;
	}
	result = pbs_usage_grant(store, &cfg->usage, "hook", subject, &lease, cfg->lease.ttl,
				 cfg->lease.max_users_per_address, &login_ms);
	if (result == PBS_GRANT_WRITTEN)
		pbs_log(LOG_INFO, "lease granted: %s user=%s service=%s ttl=%d", subject, safe_user,
			service[0] ? service : "-", cfg->lease.ttl);
	else if (result == PBS_GRANT_REVOKED || result == PBS_GRANT_SUSPENDED ||
		 result == PBS_GRANT_SHARED)
		/* A revoke, a suspension or a bound working: worth seeing, not trouble. */
		pbs_log(LOG_WARNING, "no lease granted: %s (user %s, %s)", pbs_store_error(store),
			safe_user, subject);
	else
		pbs_log(LOG_ERR, "no lease granted: %s (user %s, %s)", pbs_store_error(store),
			safe_user, subject);
	pbs_store_free(store);
	return result == PBS_GRANT_ERROR || result == PBS_GRANT_LATE ? -1 : 0;
}

int main(int argc, char **argv)
{
	const char *path = PBS_DEFAULT_CONFIG, *service = "";
	pbs_config *cfg;
	int opt, check = 0, rc = -1;

	/* Stop at the first non-option: it is the command Dovecot wants us to exec. */
	while ((opt = getopt(argc, argv, "+c:s:tV")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 's':
			service = optarg;
			break;
		case 't':
			check = 1;
			break;
		case 'V':
			fprintf(stderr, PROG " " PBS_VERSION "\n");
			return 0;
		default:
			usage();
			/* A bad option must not refuse the login: go on with what is left. */
			break;
		}
	}
	if (check)
		return pbs_config_check(path);
	next_argv = argv + optind;
	/* stdout is the client's socket: never write there. Dovecot logs every stderr line
	 * as an error, so only trouble goes there; syslog gets every line. */
	pbs_log_open(PROG, LOG_WARNING);
	signals_take();
	if (pbs_lease_service_problem(service) != NULL)
		service = "";
	if ((cfg = load_config(path)) != NULL) {
		arm_deadline(cfg->redis.timeout_ms);
		rc = grant(cfg, getenv("IP"), getenv("USER"), service);
		disarm_deadline();
		pbs_config_free(cfg);
	}
	continue_login();
	return rc == 0 ? 0 : 1;
}
