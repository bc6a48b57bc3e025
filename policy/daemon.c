/*
 * daemon.c — popbsmtp-policy --listen. Startup follows the milter's order: the
 * configuration, the socket opened as root with its mode and group set at creation
 * (lib/privsep.c, lib/listen.c), privileges dropped to policy.user, then serve. It never
 * forks: systemd (Type=simple) or a supervisor tracks the process.
 *
 * One thread and a poll() loop, not a thread per connection: each request costs at most
 * one Redis GET per message (bounded by redis.timeout_ms) and a few microseconds of
 * parsing, far less than the smtpd on the other side spends per recipient, so one thread
 * keeps up with every smtpd of a host (docs/performance.md) while the gate, its one Redis
 * connection and its counts need no locking and stay exactly the spawn(8) mode's code:
 * each connection gets its own pbs_gate_session, as each spawn(8) process has its own,
 * and pbs_gate_answer() decides and counts for both. The cost of this choice: while
 * Redis is slow, every client waits behind the lookup in progress, at most
 * redis.timeout_ms per message in the queue; Postfix waits 100 s for a policy answer.
 *
 * Bounds: policy.max_connections clients (one more is accepted and closed at once, so
 * its MTA applies its own failure action at once instead of waiting in the backlog); a
 * request of at most PBS_REQUEST_MAX bytes; a client gets policy.idle_timeout seconds
 * for each request, from its connection or its last answer (a client trickling bytes
 * gets no more). Memory is fixed per connection.
 */
/* accept4() and ppoll(): Linux and the BSDs have both. */
#define _GNU_SOURCE
#include "daemon.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gate.h"
#include "popbsmtp/config.h"
#include "popbsmtp/listen.h"
#include "popbsmtp/log.h"
#include "popbsmtp/privsep.h"
#include "popbsmtp/version.h"
#include "request.h"

#define BACKLOG 128

struct conn {
	int fd;
	struct pbs_request_parser parser;
	struct pbs_gate_session *session;
	char in[4096];
	size_t in_len, in_off; /* input read and not yet fed to the parser */
	/* A reply not yet written in full: pbs_gate_answer()'s text, which stays valid until
	 * the session's next request, and no request is read before it is written. */
	const char *out;
	size_t out_len, out_off;
	double deadline;         /* for the next request, on now_s()'s clock */
};

static volatile sig_atomic_t got_stop, got_reload;

/* Seconds on the monotonic clock. */
static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		got_reload = 1;
	else
		got_stop = 1;
}

/* Handlers for the stop and reload signals, which stay blocked except inside ppoll():
 * a signal is never lost between a check of the flags and the wait. */
static void catch_signals(sigset_t *during_poll)
{
	struct sigaction sa;
	sigset_t set;
	const int sigs[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
	size_t i;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&set);
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
		sigaction(sigs[i], &sa, NULL);
		sigaddset(&set, sigs[i]);
	}
	sigprocmask(SIG_BLOCK, &set, during_poll);
	for (i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigdelset(during_poll, sigs[i]);
	signal(SIGPIPE, SIG_IGN); /* a client or Redis that went away */
}

/* pbs_privsep_bind_fn: the socket of SPEC into the listener ARG. */
static int bind_policy(const struct pbs_socket_spec *spec, void *arg)
{
	return pbs_listen_open(spec->socket, BACKLOG, arg);
}

struct daemon {
	const char *config_path;
	pbs_config *cfg;
	struct pbs_gate *gate;
	struct pbs_listener listener;
	struct conn **conns; /* policy.max_connections slots, NULL when free */
	size_t max, count;
	time_t refused_said;  /* when a refused connection was last logged */
	double accept_after;  /* out of descriptors: the listener rests until then */
};

static void conn_close(struct daemon *d, size_t i)
{
	struct conn *c = d->conns[i];

	close(c->fd);
	pbs_gate_session_free(c->session);
	free(c);
	d->conns[i] = NULL;
	d->count--;
}

/* Write what is left of C's reply. 0 when all is written or must wait, -1 on error. */
static int conn_flush(struct conn *c)
{
	ssize_t n;

	while (c->out_off < c->out_len) {
		n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (n <= 0)
			return -1;
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

/* Feed C's unread input to its parser and answer each request, as long as no earlier
 * reply waits to be written (the replies stay in order). 0, or -1 to close C. */
static int conn_work(struct daemon *d, struct conn *c)
{
	const char *reply;
	bool complete;
	size_t used;

	while (c->in_off < c->in_len && c->out_len == 0) {
		used = pbs_request_feed(&c->parser, c->in + c->in_off, c->in_len - c->in_off,
					&complete);
		c->in_off += used;
		if (c->parser.bytes > PBS_REQUEST_MAX) {
			pbs_log(LOG_WARNING, "bad policy request: longer than %d bytes; "
				"connection closed", PBS_REQUEST_MAX);
			return -1;
		}
		if (!complete)
			continue;
		reply = pbs_gate_answer(d->gate, c->session, &c->parser.req);
		c->out = reply;
		c->out_len = strlen(reply);
		c->deadline = now_s() + d->cfg->policy.idle_timeout;
		pbs_request_begin(&c->parser);
		if (conn_flush(c) != 0)
			return -1;
	}
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
	return 0;
}

/* C is readable: read, then answer. 0, or -1 to close C. */
static int conn_read(struct daemon *d, struct conn *c)
{
	ssize_t n = recv(c->fd, c->in, sizeof c->in, 0);

	if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (n <= 0) {
		if (n == 0 && pbs_request_partial(&c->parser))
			pbs_log(LOG_WARNING, "bad policy request: cut short when the client "
				"closed (no empty line); not answered");
		return -1;
	}
	c->in_len = (size_t)n;
	c->in_off = 0;
	return conn_work(d, c);
}

/* Accept every client waiting; beyond policy.max_connections, close them at once. */
static void accept_clients(struct daemon *d)
{
	struct conn *c;
	size_t i;
	int fd;

	while ((fd = accept4(d->listener.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
		if (d->count >= d->max) {
			close(fd);
			if (time(NULL) - d->refused_said >= 60) {
				d->refused_said = time(NULL);
				pbs_log(LOG_WARNING, "%zu clients connected (policy.max_connections): "
					"a new one was closed at once", d->count);
			}
			continue;
		}
		if ((c = calloc(1, sizeof *c)) == NULL ||
		    (c->session = pbs_gate_session_new()) == NULL) {
			free(c);
			close(fd);
			pbs_log(LOG_ERR, "out of memory: a new client was closed at once");
			continue;
		}
		c->fd = fd;
		c->deadline = now_s() + d->cfg->policy.idle_timeout;
		pbs_request_begin(&c->parser);
		for (i = 0; d->conns[i] != NULL; i++)
			;
		d->conns[i] = c;
		d->count++;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return;
	/* EMFILE and the like: the client stays in the backlog, and polling the listener
	 * again at once would spin; rest it a little. */
	d->accept_after = now_s() + 0.1;
	if (time(NULL) - d->refused_said >= 60) {
		d->refused_said = time(NULL);
		pbs_log(LOG_WARNING, "accept: %s", strerror(errno));
	}
}

/* Room for policy.max_connections clients and a few descriptors of our own, up to the hard
 * limit; say so when that is too little (accept then fails, and clients wait). */
static void raise_fd_limit(size_t max)
{
	rlim_t want = (rlim_t)max + 32;
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
		pbs_log(LOG_WARNING, "policy.max_connections %zu needs %llu file descriptors; the "
			"limit is %llu", max, (unsigned long long)want,
			(unsigned long long)rl.rlim_cur);
}

/* SIGUSR1: the file again; the old configuration stays when the new one is bad. */
static void reload(struct daemon *d)
{
	pbs_config *cfg = pbs_config_load_logged(d->config_path);
	struct pbs_gate *gate;

	if (cfg == NULL) {
		pbs_log(LOG_ERR, "reload of %s failed; keeping the previous configuration",
			d->config_path);
		return;
	}
	if ((gate = pbs_gate_new(cfg)) == NULL) {
		pbs_log(LOG_ERR, "reload: out of memory; keeping the previous configuration");
		pbs_config_free(cfg);
		return;
	}
	if (strcmp(cfg->policy.listen, d->cfg->policy.listen) != 0 ||
	    strcmp(cfg->policy.user, d->cfg->policy.user) != 0 ||
	    strcmp(cfg->policy.socket_group, d->cfg->policy.socket_group) != 0 ||
	    cfg->policy.socket_mode != d->cfg->policy.socket_mode ||
	    cfg->policy.max_connections != d->cfg->policy.max_connections)
		pbs_log(LOG_WARNING, "policy.listen, policy.user, policy.socket_group, "
			"policy.socket_mode and policy.max_connections changes take effect only "
			"after a restart");
	cfg->policy.max_connections = d->cfg->policy.max_connections;
	/* The old gate's counts are written as it goes; the sessions do not point into it. */
	pbs_gate_free(d->gate);
	pbs_config_free(d->cfg);
	d->gate = gate;
	d->cfg = cfg;
	pbs_log(LOG_INFO, "configuration reloaded from %s", d->config_path);
}

/* How long poll() may wait: until the earliest client deadline (or the listener's rest),
 * at most a second (the
 * counts are flushed between requests, pbs_gate_idle). */
static struct timespec poll_timeout(const struct daemon *d, double now)
{
	double first = now + 1, left;
	size_t i;

	for (i = 0; i < d->max; i++)
		if (d->conns[i] != NULL && d->conns[i]->deadline < first)
			first = d->conns[i]->deadline;
	if (d->accept_after > now && d->accept_after < first)
		first = d->accept_after;
	left = first > now ? first - now : 0;
	return (struct timespec){.tv_sec = (time_t)left,
				 .tv_nsec = (long)((left - (double)(time_t)left) * 1e9)};
}

/* The loop: until a stop signal. */
static void serve(struct daemon *d, const sigset_t *during_poll)
{
	struct pollfd *fds = calloc(d->max + 1, sizeof *fds);
	size_t *slot = calloc(d->max + 1, sizeof *slot);
	size_t i, n;
	struct timespec ts;
	double now;
	struct conn *c;

	if (fds == NULL || slot == NULL) {
		pbs_log(LOG_ERR, "out of memory");
		free(fds);
		free(slot);
		return;
	}
	while (!got_stop) {
		if (got_reload) {
			got_reload = 0;
			reload(d);
		}
		now = now_s();
		fds[0] = (struct pollfd){.fd = now >= d->accept_after ? d->listener.fd : -1,
					 .events = POLLIN};
		for (i = 0, n = 1; i < d->max; i++) {
			if ((c = d->conns[i]) == NULL)
				continue;
			if (c->deadline <= now) {
				pbs_log(LOG_INFO, "policy client idle for %d s: closed",
					d->cfg->policy.idle_timeout);
				conn_close(d, i);
				continue;
			}
			fds[n] = (struct pollfd){.fd = c->fd,
						 .events = c->out_len > 0 ? POLLOUT : POLLIN};
			slot[n++] = i;
		}
		ts = poll_timeout(d, now);
		if (ppoll(fds, n, &ts, during_poll) < 0) {
			if (errno != EINTR)
				pbs_log(LOG_ERR, "poll: %s", strerror(errno));
			continue;
		}
		for (i = 1; i < n; i++) {
			if (fds[i].revents == 0)
				continue;
			c = d->conns[slot[i]];
			if ((fds[i].revents & POLLOUT) != 0
				? conn_flush(c) != 0 || conn_work(d, c) != 0
				: conn_read(d, c) != 0)
				conn_close(d, slot[i]);
		}
		if (fds[0].revents & POLLIN)
			accept_clients(d);
		pbs_gate_idle(d->gate);
	}
	free(fds);
	free(slot);
}

/* Open the socket and drop privileges: everything root is needed for. 0 or -1. */
static int start(struct daemon *d, const char *listen)
{
	const struct pbs_socket_spec spec = {"policy", listen, d->cfg->policy.socket_group,
					     d->cfg->policy.socket_mode};

	if (!pbs_listen_valid(listen)) {
		pbs_log(LOG_ERR, "bad socket '%s' (unix:/path or inet:port@host)", listen);
		return -1;
	}
	if (pbs_privsep_open_socket(&spec, bind_policy, &d->listener) != 0)
		return -1;
	return pbs_privsep_drop(d->cfg->policy.user, "policy");
}

int pbs_daemon_run(const char *config_path, const char *listen)
{
	struct daemon d = {.config_path = config_path, .listener = {.fd = -1}};
	sigset_t during_poll;
	char spec[128];
	size_t i;
	int rc = 71;

	catch_signals(&during_poll);
	pbs_log_open("popbsmtp-policy", LOG_DEBUG);
	if ((d.cfg = pbs_config_load_logged(config_path)) == NULL)
		return PBS_EX_CONFIG;
	snprintf(spec, sizeof spec, "%s", listen != NULL ? listen : d.cfg->policy.listen);
	d.max = (size_t)d.cfg->policy.max_connections;
	raise_fd_limit(d.max);
	if (start(&d, spec) != 0)
		goto out;
	if ((d.conns = calloc(d.max, sizeof *d.conns)) == NULL ||
	    (d.gate = pbs_gate_new(d.cfg)) == NULL) {
		pbs_log(LOG_ERR, "out of memory");
		goto out;
	}
	pbs_log(LOG_INFO, "popbsmtp-policy %s serving on %s", PBS_VERSION, spec);
	serve(&d, &during_poll);
	pbs_log(LOG_INFO, "stopping");
	rc = 0;
out:
	for (i = 0; d.conns != NULL && i < d.max; i++)
		if (d.conns[i] != NULL)
			conn_close(&d, i);
	free(d.conns);
	pbs_listen_close(&d.listener);
	pbs_gate_free(d.gate); /* the counts so far */
	pbs_config_free(d.cfg);
	return rc;
}
