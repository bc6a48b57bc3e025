/*
 * popbsmtp-milter — the relay gate. Startup order matters and follows milter-regex and
 * the OpenBSD daemons: check the config, open the socket (as root, so it can live in
 * /run), daemonize and write the pidfile, drop privileges, check Redis (warn only), serve.
 * Errors before serving are fatal; after that, everything is logged and survived.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libmilter/mfapi.h>

#include "callbacks.h"
#include "flush.h"
#include "popbsmtp/config.h"
#include "popbsmtp/log.h"
#include "popbsmtp/privsep.h"
#include "popbsmtp/version.h"
#include "runtime.h"

#define PROG "popbsmtp-milter"
#define DRAIN_SECONDS 10

static const char *config_path = PBS_DEFAULT_CONFIG;
static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static bool stopping; /* guarded by reload_lock */

static void usage(void)
{
	fprintf(stderr, "usage: " PROG " [-c FILE] [-f] [-t] [-V]\n"
			"  -c FILE  configuration file (default " PBS_DEFAULT_CONFIG ")\n"
			"  -f       stay in the foreground, log to stderr too, no pidfile\n"
			"  -t       check the configuration and exit (0 OK, 78 errors)\n"
			"  -V       print the version\n");
}

/* SIGUSR1: read the file again; keep serving with the old config if the new one is bad. */
static void reload_now(void)
{
	struct pbs_runtime *old = pbs_runtime_acquire();
	pbs_config *cfg = pbs_config_load_logged(config_path);

	if (cfg == NULL) {
		pbs_log(LOG_ERR, "reload of %s failed; keeping the previous configuration",
			config_path);
	} else {
		if (strcmp(cfg->milter.socket, old->cfg->milter.socket) != 0 ||
		    strcmp(cfg->milter.user, old->cfg->milter.user) != 0 ||
		    cfg->usage.trace_header != old->cfg->usage.trace_header)
			pbs_log(LOG_WARNING, "milter.socket, milter.user and usage.trace_header "
					     "changes take effect only after a restart");
		if (pbs_runtime_install(cfg) == 0)
			pbs_log(LOG_INFO, "configuration reloaded from %s", config_path);
		else
			pbs_config_free(cfg);
	}
	pbs_runtime_release(old);
}

/* Reload unless the milter is stopping: shutdown drops the runtime a reload works on. */
static void reload(void)
{
	pthread_mutex_lock(&reload_lock);
	if (!stopping)
		reload_now();
	pthread_mutex_unlock(&reload_lock);
}

/* No reload from now on; waits for one in progress to finish. */
static void stop_reloads(void)
{
	pthread_mutex_lock(&reload_lock);
	stopping = true;
	pthread_mutex_unlock(&reload_lock);
}

/* The reload thread: waits for SIGUSR1, which every other thread blocks. */
static void *reload_thread(void *arg)
{
	sigset_t set;
	int sig;

	(void)arg;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	for (;;)
		if (sigwait(&set, &sig) == 0 && sig == SIGUSR1)
			reload();
	return NULL;
}

/* Block the signals libmilter's own thread waits for (SIGHUP/TERM/INT) and ours (USR1)
 * first thing, so none of them takes its default action (death) during start-up and no
 * thread ever takes one: they wait until smfi_main and the reload thread sigwait. */
static void block_signals(void)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
}

/* Give up before serving (EX_OSERR); the reason was logged where it was found. */
static int startup_failed(pbs_config *cfg)
{
	pbs_config_free(cfg);
	return 71;
}

/* Say at start whether Redis answers (a dead Redis is survivable, so only warn), then
 * that the milter serves on SOCKET. The snapshot is acquired: a reload may already have
 * replaced the configuration main installed. */
static void announce(const char *socket)
{
	struct pbs_runtime *rt = pbs_runtime_acquire();
	char why[512];

	if (pbs_pool_ping(rt->pool, why, sizeof why) != 0)
		pbs_log(LOG_WARNING, "Redis not reachable at start (%s); relays will be deferred "
				     "until it is", why);
	pbs_runtime_release(rt);
	pbs_log(LOG_INFO, "%s %s serving on %s", PROG, PBS_VERSION, socket);
}

/* pbs_privsep_bind_fn for libmilter: it removes a stale unix socket and binds. */
static int bind_milter(const struct pbs_socket_spec *spec, void *arg)
{
	(void)spec;
	(void)arg;
	return smfi_opensocket(true) == MI_SUCCESS ? 0 : -1;
}

/* Open the listening socket with the configured ownership and mode. */
static int open_socket(const pbs_config *cfg)
{
	const struct pbs_socket_spec spec = {"milter", cfg->milter.socket, cfg->milter.socket_group,
					     cfg->milter.socket_mode};
	char *conn = strdup(cfg->milter.socket); /* smfi_setconn wants it writable; it copies */
	int rc = conn != NULL ? smfi_setconn(conn) : MI_FAILURE;

	free(conn);
	if (rc != MI_SUCCESS) {
		pbs_log(LOG_ERR, "bad milter.socket '%s'", cfg->milter.socket);
		return -1;
	}
	if (smfi_register(pbs_callbacks_desc(cfg)) != MI_SUCCESS) {
		pbs_log(LOG_ERR, "smfi_register failed");
		return -1;
	}
	return pbs_privsep_open_socket(&spec, bind_milter, NULL);
}

int main(int argc, char **argv)
{
	pbs_config *cfg;
	pthread_t reloader;
	int opt, foreground = 0, check = 0, rc, left;
	char *absolute, socket[256]; /* milter.socket is at most 255 bytes */

	block_signals();
	while ((opt = getopt(argc, argv, "c:ftVh")) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'f':
			foreground = 1;
			break;
		case 't':
			check = 1;
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
	/* The daemon works from "/": a reload must still find a relative -c file. */
	if ((absolute = realpath(config_path, NULL)) != NULL)
		config_path = absolute;
	pbs_log_open(PROG, LOG_DEBUG);
	if ((cfg = pbs_config_load_logged(config_path)) == NULL)
		return PBS_EX_CONFIG;
	if (open_socket(cfg) != 0 ||
	    (!foreground && pbs_privsep_daemonize(cfg->milter.pidfile) != 0))
		return startup_failed(cfg);
	pbs_log_open(PROG, foreground ? LOG_DEBUG : PBS_LOG_NO_STDERR);
	if (pbs_privsep_drop(cfg->milter.user, "milter") != 0)
		return startup_failed(cfg);
	/* cfg goes to the runtime, and a reload may free it at any moment from then on. */
	snprintf(socket, sizeof socket, "%s", cfg->milter.socket);
	if (pbs_runtime_install(cfg) != 0) {
		pbs_log(LOG_ERR, "out of memory");
		return startup_failed(cfg);
	}
	if (pthread_create(&reloader, NULL, reload_thread, NULL) != 0) {
		pbs_log(LOG_ERR, "cannot start the reload thread: %s", strerror(errno));
		return 71;
	}
	pbs_flush_start();
	announce(socket);
	rc = smfi_main();
	stop_reloads();
	left = pbs_runtime_drain(DRAIN_SECONDS);
	pbs_flush_stop(); /* the counts so far, before the runtime goes */
	pbs_log(LOG_INFO, "stopping%s", left ? " with sessions still open" : "");
	if (!foreground)
		pbs_privsep_remove_pidfile();
	if (left == 0)
		pbs_runtime_shutdown();
	return rc == MI_SUCCESS ? 0 : 1;
}
