/*
 * imap-load.c — IMAP login load for bench/run's hook benchmark: CONCURRENCY threads, each
 * logging in over a fresh connection back to back until LOGINS are done. A login: connect
 * from source address BASE + (i % COUNT) (any 127.x.y.z works on Linux without setup), read
 * the greeting, "a LOGIN user pass", read up to the tagged answer, "b LOGOUT", read to the
 * end. Dovecot runs the post-login script between the password check and the tagged OK, so
 * the time to the OK includes it.
 *
 *   imap-load [-c CONCURRENCY] [-n LOGINS] [-a BASE_ADDR] [-A ADDR_COUNT] [-t TIMEOUT_MS]
 *             [-q] HOST PORT USER PASS
 *
 * Output: a summary, then "RESULT logins=N ok=N errors=N elapsed_s= logins_per_s= p50_us=
 * p90_us= p99_us= max_us=" (latency from connect to the tagged OK). -q: only the RESULT line.
 * Exit 0 when every login succeeded, 2 otherwise, 1 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"

struct load {
	struct sockaddr_in server;
	uint32_t base; /* host order */
	long addr_count, logins;
	int timeout_ms;
	char login_cmd[600];
	atomic_long next;
	pthread_mutex_t lock;
	int errors_shown;
};

struct worker {
	pthread_t tid;
	struct load *load;
	uint64_t *lat; /* ns, one per successful login */
	long n, cap, ok, errors;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Read from FD until BUF holds a line starting with PREFIX (at a line start) or, when
 * PREFIX is NULL, until the peer closes. Returns 0, or -1 on error/timeout/close. */
static int read_until(int fd, const char *prefix)
{
	char buf[4096];
	size_t len = 0;

	for (;;) {
		ssize_t got = read(fd, buf + len, sizeof buf - 1 - len);
		char *line;

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return prefix == NULL && got == 0 ? 0 : -1;
		len += (size_t)got;
		buf[len] = '\0';
		if (prefix == NULL) {
			len = 0;
			continue;
		}
		/* Look at every complete line; keep an incomplete last one. */
		for (line = buf;;) {
			char *nl = strchr(line, '\n');

			if (nl == NULL)
				break;
			if (strncmp(line, prefix, strlen(prefix)) == 0)
				return 0;
			if (line[0] != '*' && strchr(prefix, ' ') != NULL &&
			    strncmp(line, prefix, strchr(prefix, ' ') - prefix) == 0)
				return -1; /* the tag answered with NO or BAD */
			line = nl + 1;
		}
		len = strlen(line);
		memmove(buf, line, len + 1);
		if (len == sizeof buf - 1)
			len = 0; /* an absurdly long line: drop it */
	}
}

static int write_all(int fd, const char *s)
{
	size_t len = strlen(s);

	while (len > 0) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		s += n;
		len -= (size_t)n;
	}
	return 0;
}

static void failed(struct worker *w, long idx, const char *what)
{
	struct load *L = w->load;

	w->errors++;
	pthread_mutex_lock(&L->lock);
	if (L->errors_shown++ < 5)
		fprintf(stderr, "imap-load: login %ld: %s: %s\n", idx, what, strerror(errno));
	pthread_mutex_unlock(&L->lock);
}

/* One login; 0 or -1 (counted). */
static int one_login(struct worker *w, long idx)
{
	struct load *L = w->load;
	struct sockaddr_in src = {.sin_family = AF_INET};
	struct timeval tv = {L->timeout_ms / 1000, (L->timeout_ms % 1000) * 1000};
	uint64_t t0 = now_ns();
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0) {
		failed(w, idx, "socket");
		return -1;
	}
	src.sin_addr.s_addr = htonl(L->base + (uint32_t)(idx % L->addr_count));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
	    connect(fd, (struct sockaddr *)&L->server, sizeof L->server) != 0) {
		failed(w, idx, "connect");
		close(fd);
		return -1;
	}
	if (read_until(fd, "* OK") != 0 || write_all(fd, L->login_cmd) != 0 ||
	    read_until(fd, "a OK") != 0) {
		failed(w, idx, "login");
		close(fd);
		return -1;
	}
	if (w->n == w->cap) {
		long cap = w->cap ? w->cap * 2 : 1024;
		uint64_t *p = realloc(w->lat, (size_t)cap * sizeof *p);

		if (p == NULL) {
			close(fd);
			return -1;
		}
		w->lat = p;
		w->cap = cap;
	}
	w->lat[w->n++] = now_ns() - t0;
	if (write_all(fd, "b LOGOUT\r\n") != 0 || read_until(fd, NULL) != 0) {
		failed(w, idx, "logout");
		close(fd);
		return -1;
	}
	close(fd);
	w->ok++;
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	long idx;

	while ((idx = atomic_fetch_add(&w->load->next, 1)) < w->load->logins)
		one_login(w, idx);
	return NULL;
}

static int usage(void)
{
	fprintf(stderr, "usage: imap-load [-c CONCURRENCY] [-n LOGINS] [-a BASE_ADDR] "
	                "[-A ADDR_COUNT] [-t TIMEOUT_MS] [-q] HOST PORT USER PASS\n");
	return 1;
}

int main(int argc, char **argv)
{
	static struct load L;
	struct worker *ws;
	struct in_addr base;
	const char *base_text = "127.0.2.1";
	int opt, concurrency = 4, quiet = 0, i;
	long total = 0, ok = 0, errors = 0;
	uint64_t *all, t0, t1;
	double elapsed, p50, p90, p99, max;

	L.logins = 200;
	L.addr_count = 200;
	L.timeout_ms = 10000;
	while ((opt = getopt(argc, argv, "c:n:a:A:t:q")) != -1) {
		switch (opt) {
		case 'c':
			concurrency = atoi(optarg);
			break;
		case 'n':
			L.logins = atol(optarg);
			break;
		case 'a':
			base_text = optarg;
			break;
		case 'A':
			L.addr_count = atol(optarg);
			break;
		case 't':
			L.timeout_ms = atoi(optarg);
			break;
		case 'q':
			quiet = 1;
			break;
		default:
			return usage();
		}
	}
	if (argc - optind != 4 || concurrency < 1 || L.logins < 1 || L.addr_count < 1 ||
	    L.timeout_ms < 1 || inet_pton(AF_INET, base_text, &base) != 1)
		return usage();
	L.base = ntohl(base.s_addr);
	L.server.sin_family = AF_INET;
	L.server.sin_port = htons((uint16_t)atoi(argv[optind + 1]));
	if (inet_pton(AF_INET, argv[optind], &L.server.sin_addr) != 1)
		return usage();
	snprintf(L.login_cmd, sizeof L.login_cmd, "a LOGIN \"%s\" \"%s\"\r\n", argv[optind + 2],
	         argv[optind + 3]);
	pthread_mutex_init(&L.lock, NULL);
	if (concurrency > L.logins)
		concurrency = (int)L.logins;
	if ((ws = calloc((size_t)concurrency, sizeof *ws)) == NULL)
		return 2;
	t0 = now_ns();
	for (i = 0; i < concurrency; i++) {
		ws[i].load = &L;
		if (pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
			fprintf(stderr, "imap-load: cannot start thread %d\n", i);
			return 2;
		}
	}
	for (i = 0; i < concurrency; i++) {
		pthread_join(ws[i].tid, NULL);
		total += ws[i].n;
		ok += ws[i].ok;
		errors += ws[i].errors;
	}
	t1 = now_ns();
	elapsed = (double)(t1 - t0) / 1e9;
	if ((all = malloc((size_t)(total ? total : 1) * sizeof *all)) == NULL)
		return 2;
	total = 0;
	for (i = 0; i < concurrency; i++) {
		memcpy(all + total, ws[i].lat, (size_t)ws[i].n * sizeof *all);
		total += ws[i].n;
	}
	pbs_samples_sort(all, (size_t)total);
	p50 = pbs_samples_pct_us(all, (size_t)total, 50);
	p90 = pbs_samples_pct_us(all, (size_t)total, 90);
	p99 = pbs_samples_pct_us(all, (size_t)total, 99);
	max = pbs_samples_pct_us(all, (size_t)total, 100);
	if (!quiet)
		printf("imap-load: %ld logins, %ld failed, %.3f s: %.1f logins/s; to the OK: p50 "
		       "%.0f us, p90 %.0f, p99 %.0f, max %.0f\n",
		       ok, errors, elapsed, ok / elapsed, p50, p90, p99, max);
	printf("RESULT logins=%ld ok=%ld errors=%ld concurrency=%d elapsed_s=%.3f "
	       "logins_per_s=%.1f p50_us=%.0f p90_us=%.0f p99_us=%.0f max_us=%.0f\n",
	       L.logins, ok, errors, concurrency, elapsed, ok / elapsed, p50, p90, p99, max);
	return errors ? 2 : 0;
}
