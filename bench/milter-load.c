/*
 * milter-load.c — load generator for a milter, speaking the protocol the way Postfix does:
 * CONCURRENCY threads, each running whole sessions back to back until SESSIONS are done.
 *
 *   milter-load [-c CONCURRENCY] [-n SESSIONS] [-r RCPTS] [-l LOCAL_RATIO] [-u AUTH_RATIO]
 *               [-a BASE_ADDR] [-A ADDR_COUNT] [-t TIMEOUT_MS] [-s SEED] [-q] SOCKET
 *
 * A session: connect from BASE_ADDR + (session % ADDR_COUNT) with Postfix's connect macros
 * (v = "Postfix 3.7.11"), HELO, MAIL (with {auth_authen} for AUTH_RATIO of the sessions),
 * RCPTS recipients, each local ({rcpt_mailer}=local) with probability LOCAL_RATIO, else relay
 * ({rcpt_mailer}=smtp), then QUIT. The draws depend only on SEED and the session number, so
 * two runs send the same traffic. Measured: per RCPT, from sending its macros to the answer
 * (p50_us ...); the connect phase, socket connect + OPTNEG + CONNECT answer (conn_*), which
 * is what a milter costs per SMTP session; the whole session (sess_*). max_inflight counts
 * sessions started and not finished, max_open those negotiated at the same moment.
 * Output: a readable report, then one line "RESULT key=value ..." for scripts (-q: only it).
 * Exit 0 when every session ran, 2 when any failed or setup failed, 1 on a usage error.
 */
#include "milter_client.h"
#include "samples.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_ERRORS_SHOWN 5
#define THREAD_STACK (256 * 1024)

/* What an RCPT got, for the counters. */
enum kind {
	K_CONTINUE,
	K_ACCEPT,
	K_REJECT,
	K_TEMPFAIL,
	K_REPLY4XX,
	K_REPLY5XX,
	K_DISCARD,
	K_NOREPLY,
	K_SKIPPED,
	K_NOTSENT,
	K_OTHER,
	K_COUNT
};
static const char *const kind_names[K_COUNT] = {"continue", "accept",   "reject",  "tempfail",
                                                "reply4xx", "reply5xx", "discard", "noreply",
                                                "skipped",  "notsent",  "other"};

enum rcpt_class { C_LOCAL, C_RELAY, C_COUNT };
static const char *const class_names[C_COUNT] = {"local", "relay"};

/* A growable array of latencies in nanoseconds. */
struct samples {
	uint64_t *v;
	size_t n, cap;
};

/* The run's settings and the state all workers share. */
struct load {
	const char *socket;
	int timeout_ms;
	long sessions;
	int concurrency;
	int rcpts;
	double local_ratio, auth_ratio;
	int family; /* AF_INET or AF_INET6 */
	unsigned char base[16];
	long addr_count;
	uint64_t seed;
	atomic_long next;    /* next session number to run */
	atomic_int open_now; /* sessions connected and negotiated */
	atomic_int open_max;
	atomic_int busy_now; /* sessions started and not finished (connecting included) */
	atomic_int busy_max;
	atomic_int stop;      /* a worker ran out of memory */
	pthread_mutex_t lock; /* start gate and error printing */
	pthread_cond_t go_cond;
	int go;
	int errors_shown;
};

/* One thread's results, merged at the end. */
struct worker {
	pthread_t tid;
	struct load *load;
	struct samples rcpt_lat, conn_lat, sess_lat;
	unsigned long kinds[C_COUNT][K_COUNT];
	unsigned long ok, errors, early, rcpts_sent;
};

/* Nanoseconds on the monotonic clock. */
static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64: a small, good generator; one stream per session keeps runs repeatable. */
static uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15u);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
	return z ^ (z >> 31);
}

/* A uniform draw in [0, 1). */
static double rng_unit(uint64_t *state)
{
	return (double)(rng_next(state) >> 11) / 9007199254740992.0;
}

/* Append one sample; -1 when memory runs out. */
static int samples_push(struct samples *s, uint64_t v)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		uint64_t *p = realloc(s->v, cap * sizeof(*p));

		if (p == NULL)
			return -1;
		s->v = p;
		s->cap = cap;
	}
	s->v[s->n++] = v;
	return 0;
}

/* The client address of session idx: BASE + idx % COUNT, as text. */
static void session_addr(const struct load *L, long idx, char *out, size_t outlen)
{
	unsigned char a[16];
	size_t len = L->family == AF_INET ? 4 : 16;
	unsigned long long add = (unsigned long long)(idx % L->addr_count);
	size_t i;

	memcpy(a, L->base, len);
	for (i = len; i-- > 0 && add != 0;) {
		unsigned long long sum = a[i] + (add & 0xff);

		a[i] = (unsigned char)sum;
		add = (add >> 8) + (sum >> 8);
	}
	if (inet_ntop(L->family, a, out, (socklen_t)outlen) == NULL)
		snprintf(out, outlen, "0.0.0.0");
}

/* Print one session failure (the first few only) and count it. */
static void session_failed(struct worker *w, long idx, const char *errstr)
{
	struct load *L = w->load;

	w->errors++;
	pthread_mutex_lock(&L->lock);
	if (L->errors_shown < MAX_ERRORS_SHOWN)
		fprintf(stderr, "milter-load: session %ld: %s\n", idx, errstr);
	else if (L->errors_shown == MAX_ERRORS_SHOWN)
		fprintf(stderr, "milter-load: further session errors not shown\n");
	L->errors_shown++;
	pthread_mutex_unlock(&L->lock);
}

/* Count one RCPT answer under its class. */
static void count_rcpt(struct worker *w, enum rcpt_class cls, const pbs_milter_reply *r)
{
	enum kind k = K_OTHER;

	switch (r->status) {
	case PBS_MILTER_NOREPLY:
		k = K_NOREPLY;
		break;
	case PBS_MILTER_SKIPPED:
		k = K_SKIPPED;
		break;
	case PBS_MILTER_NOTSENT:
		k = K_NOTSENT;
		break;
	case PBS_MILTER_REPLIED:
		switch (r->cmd) {
		case SMFIR_CONTINUE:
			k = K_CONTINUE;
			break;
		case SMFIR_ACCEPT:
			k = K_ACCEPT;
			break;
		case SMFIR_REJECT:
			k = K_REJECT;
			break;
		case SMFIR_TEMPFAIL:
			k = K_TEMPFAIL;
			break;
		case SMFIR_DISCARD:
			k = K_DISCARD;
			break;
		case SMFIR_REPLYCODE:
			k = r->text[0] == '4'   ? K_REPLY4XX
			    : r->text[0] == '5' ? K_REPLY5XX
			                        : K_OTHER;
			break;
		default:
			break;
		}
		break;
	}
	w->kinds[cls][k]++;
}

/* Count one more in *now and keep *max the highest value seen. */
static void gauge_up(atomic_int *now, atomic_int *max)
{
	int n = atomic_fetch_add(now, 1) + 1;
	int m = atomic_load(max);

	while (n > m && !atomic_compare_exchange_weak(max, &m, n))
		;
}

/* Connection-level macros, CONNECT (timed from t0, the socket connect) and HELO; 1 to go
 * on, 0 when the milter ended it, -1 on error, -2 out of memory. */
static int session_connect(struct worker *w, pbs_milter_client *c, long idx, uint64_t t0)
{
	const struct load *L = w->load;
	char addr[INET6_ADDRSTRLEN], host[INET6_ADDRSTRLEN + 2], any[INET6_ADDRSTRLEN + 12];
	pbs_milter_reply r;

	session_addr(L, idx, addr, sizeof(addr));
	snprintf(host, sizeof(host), "[%s]", addr);
	snprintf(any, sizeof(any), "unknown %s", host);
	if (pbs_milter_client_macro(c, PBS_MILTER_CONNECT, "j", "mx.example.org") != 0 ||
	    pbs_milter_client_macro(c, PBS_MILTER_CONNECT, "{daemon_name}", "smtpd") != 0 ||
	    pbs_milter_client_macro(c, PBS_MILTER_CONNECT, "{daemon_addr}", "127.0.0.1") != 0 ||
	    pbs_milter_client_macro(c, PBS_MILTER_CONNECT, "v", "Postfix 3.7.11") != 0 ||
	    pbs_milter_client_macro(c, PBS_MILTER_CONNECT, "_", any) != 0)
		return -1;
	if (pbs_milter_client_connect(c, host, L->family == AF_INET ? SMFIA_INET : SMFIA_INET6,
	                              (uint16_t)(1024 + idx % 64000), addr, &r) != 0)
		return -1;
	if (samples_push(&w->conn_lat, now_ns() - t0) != 0)
		return -2;
	if (r.status == PBS_MILTER_REPLIED && r.cmd != SMFIR_CONTINUE)
		return 0;
	if (pbs_milter_client_helo(c, "client.example", &r) != 0)
		return -1;
	return r.status == PBS_MILTER_REPLIED && r.cmd != SMFIR_CONTINUE ? 0 : 1;
}

/* MAIL with Postfix's mail macros; 1 to go on, 0 when the milter refused it. */
static int session_mail(pbs_milter_client *c, const struct load *L, long idx, uint64_t *rng)
{
	char user[32], sender[64];
	const char *argv[2] = {sender, NULL};
	pbs_milter_reply r;

	snprintf(user, sizeof(user), "user%ld", idx % 1000);
	snprintf(sender, sizeof(sender), "<%s@client.example>", user);
	if (rng_unit(rng) < L->auth_ratio &&
	    (pbs_milter_client_macro(c, PBS_MILTER_MAIL, "{auth_type}", "PLAIN") != 0 ||
	     pbs_milter_client_macro(c, PBS_MILTER_MAIL, "{auth_authen}", user) != 0))
		return -1;
	if (pbs_milter_client_macro(c, PBS_MILTER_MAIL, "{mail_addr}", sender + 1) != 0 ||
	    pbs_milter_client_macro(c, PBS_MILTER_MAIL, "{mail_host}", "client.example") != 0 ||
	    pbs_milter_client_macro(c, PBS_MILTER_MAIL, "{mail_mailer}", "smtp") != 0)
		return -1;
	if (pbs_milter_client_mail(c, argv, &r) != 0)
		return -1;
	return r.status == PBS_MILTER_REPLIED && r.cmd != SMFIR_CONTINUE ? 0 : 1;
}

/* The recipients, each timed from its macros to the answer. -1 on error. */
static int session_rcpts(struct worker *w, pbs_milter_client *c, long idx, uint64_t *rng)
{
	const struct load *L = w->load;
	int j;

	for (j = 0; j < L->rcpts; j++) {
		enum rcpt_class cls = rng_unit(rng) < L->local_ratio ? C_LOCAL : C_RELAY;
		const char *domain = cls == C_LOCAL ? "local.example" : "remote.example";
		char addr[96], arg[100];
		const char *argv[2] = {arg, NULL};
		pbs_milter_reply r;
		uint64_t t0;

		snprintf(addr, sizeof(addr), "u%ld.%d@%s", idx, j, domain);
		snprintf(arg, sizeof(arg), "<%s>", addr);
		t0 = now_ns();
		if (pbs_milter_client_macro(c, PBS_MILTER_RCPT, "{rcpt_addr}", addr) != 0 ||
		    pbs_milter_client_macro(c, PBS_MILTER_RCPT, "{rcpt_host}", domain) != 0 ||
		    pbs_milter_client_macro(c, PBS_MILTER_RCPT, "{rcpt_mailer}",
		                            cls == C_LOCAL ? "local" : "smtp") != 0 ||
		    pbs_milter_client_rcpt(c, argv, &r) != 0)
			return -1;
		if (r.status == PBS_MILTER_REPLIED) {
			if (samples_push(&w->rcpt_lat, now_ns() - t0) != 0)
				return -2;
		}
		if (r.status != PBS_MILTER_NOTSENT && r.status != PBS_MILTER_SKIPPED)
			w->rcpts_sent++;
		count_rcpt(w, cls, &r);
	}
	return 0;
}

/* One whole session; failures are counted, not fatal. */
static void run_session(struct worker *w, pbs_milter_client *c, long idx)
{
	struct load *L = w->load;
	uint64_t rng = L->seed ^ ((uint64_t)idx * 0x2545f4914f6cdd1du);
	uint64_t t0 = now_ns();
	int rc;

	gauge_up(&L->busy_now, &L->busy_max);
	if (pbs_milter_client_open(c, L->socket) != 0) {
		atomic_fetch_sub(&L->busy_now, 1);
		session_failed(w, idx, c->errstr);
		return;
	}
	gauge_up(&L->open_now, &L->open_max);
	if ((rc = session_connect(w, c, idx, t0)) > 0 && (rc = session_mail(c, L, idx, &rng)) > 0)
		rc = session_rcpts(w, c, idx, &rng);
	else if (rc == 0)
		w->early++;
	if (rc == 0 && pbs_milter_client_quit(c) != 0)
		rc = -1;
	atomic_fetch_sub(&L->open_now, 1);
	atomic_fetch_sub(&L->busy_now, 1);
	if (rc == -2) {
		atomic_store(&L->stop, 1);
		pbs_milter_client_close(c);
		return;
	}
	if (rc < 0) {
		session_failed(w, idx, c->errstr);
		pbs_milter_client_close(c);
		return;
	}
	w->ok++;
	if (samples_push(&w->sess_lat, now_ns() - t0) != 0)
		atomic_store(&L->stop, 1);
}

/* A worker thread: wait for the start, then take session numbers until none are left. */
static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct load *L = w->load;
	pbs_milter_client c;
	long idx;

	pthread_mutex_lock(&L->lock);
	while (!L->go)
		pthread_cond_wait(&L->go_cond, &L->lock);
	pthread_mutex_unlock(&L->lock);
	pbs_milter_client_init(&c, L->timeout_ms);
	while (!atomic_load(&L->stop) && (idx = atomic_fetch_add(&L->next, 1)) < L->sessions)
		run_session(w, &c, idx);
	pbs_milter_client_free(&c);
	return NULL;
}

/* Nearest-rank percentile P of sorted samples S, in microseconds. */
static double pct_us(const struct samples *s, double p)
{
	return pbs_samples_pct_us(s->v, s->n, p);
}

/* Merge every worker's samples of one kind into a sorted array. -1 on no memory. */
static int merge_sorted(struct worker *ws, int n, size_t off, struct samples *out)
{
	size_t total = 0;
	int i;

	for (i = 0; i < n; i++)
		total += ((struct samples *)((char *)&ws[i] + off))->n;
	out->n = 0;
	out->cap = total;
	if ((out->v = malloc((total ? total : 1) * sizeof(uint64_t))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		struct samples *s = (struct samples *)((char *)&ws[i] + off);

		if (s->n > 0)
			memcpy(out->v + out->n, s->v, s->n * sizeof(uint64_t));
		out->n += s->n;
	}
	pbs_samples_sort(out->v, out->n);
	return 0;
}

/* Parse a number in [min, max]; -1 if it is not one. */
static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;

	errno = 0;
	*out = strtol(s, &end, 10);
	return errno != 0 || end == s || *end != '\0' || *out < min || *out > max ? -1 : 0;
}

/* Parse a ratio in [0, 1]; -1 if it is not one. */
static int parse_ratio(const char *s, double *out)
{
	char *end;

	errno = 0;
	*out = strtod(s, &end);
	return errno != 0 || end == s || *end != '\0' || !(*out >= 0.0 && *out <= 1.0) ? -1 : 0;
}

/* Print the usage message and return the usage exit code. */
static int usage(void)
{
	fprintf(
	    stderr,
	    "usage: milter-load [-c CONCURRENCY] [-n SESSIONS] [-r RCPTS] [-l LOCAL_RATIO]\n"
	    "                   [-u AUTH_RATIO] [-a BASE_ADDR] [-A ADDR_COUNT] [-t TIMEOUT_MS]\n"
	    "                   [-s SEED] [-q] SOCKET\n"
	    "  defaults: -c 20 -n 1000 -r 4 -l 0.5 -u 0 -a 127.0.1.1 -A 254 -t 10000 -s 1\n");
	return 1;
}

/* Complain about one option; returns -1 for parse_args. */
static int arg_error(const char *what)
{
	fprintf(stderr, "milter-load: %s\n", what);
	return -1;
}

/* Parse the command line into L; 0 or -1 after a message. */
static int parse_args(int argc, char **argv, struct load *L, int *quiet)
{
	const char *base = "127.0.1.1";
	long v;
	int opt;

	L->concurrency = 20;
	L->sessions = 1000;
	L->rcpts = 4;
	L->local_ratio = 0.5;
	L->auth_ratio = 0.0;
	L->addr_count = 254;
	L->timeout_ms = 10000;
	L->seed = 1;
	while ((opt = getopt(argc, argv, "c:n:r:l:u:a:A:t:s:q")) != -1) {
		switch (opt) {
		case 'c':
			if (parse_long(optarg, 1, 10000, &v) != 0)
				return arg_error("bad -c");
			L->concurrency = (int)v;
			break;
		case 'n':
			if (parse_long(optarg, 1, LONG_MAX / 2, &L->sessions) != 0)
				return arg_error("bad -n");
			break;
		case 'r':
			if (parse_long(optarg, 0, 1000, &v) != 0)
				return arg_error("bad -r");
			L->rcpts = (int)v;
			break;
		case 'l':
			if (parse_ratio(optarg, &L->local_ratio) != 0)
				return arg_error("bad -l (0..1)");
			break;
		case 'u':
			if (parse_ratio(optarg, &L->auth_ratio) != 0)
				return arg_error("bad -u (0..1)");
			break;
		case 'a':
			base = optarg;
			break;
		case 'A':
			if (parse_long(optarg, 1, LONG_MAX / 2, &L->addr_count) != 0)
				return arg_error("bad -A");
			break;
		case 't':
			if (parse_long(optarg, 1, 86400000, &v) != 0)
				return arg_error("bad -t (ms)");
			L->timeout_ms = (int)v;
			break;
		case 's':
			if (parse_long(optarg, 0, LONG_MAX, &v) != 0)
				return arg_error("bad -s");
			L->seed = (uint64_t)v;
			break;
		case 'q':
			*quiet = 1;
			break;
		default:
			return -1;
		}
	}
	if (optind != argc - 1)
		return -1;
	L->socket = argv[optind];
	if (inet_pton(AF_INET, base, L->base) == 1) {
		uint32_t b = (uint32_t)L->base[0] << 24 | (uint32_t)L->base[1] << 16 |
		             (uint32_t)L->base[2] << 8 | L->base[3];

		L->family = AF_INET;
		if ((unsigned long long)L->addr_count - 1 > (unsigned long long)(UINT32_MAX - b))
			return arg_error("-a/-A run past 255.255.255.255");
	} else if (inet_pton(AF_INET6, base, L->base) == 1) {
		L->family = AF_INET6;
	} else {
		return arg_error("-a (not an IP address)");
	}
	return 0;
}

/* Print the report and the RESULT line. */
static void report(const struct load *L, struct worker *ws, double elapsed, struct samples *rl,
                   struct samples *cl, struct samples *sl, int quiet)
{
	unsigned long ok = 0, errors = 0, early = 0, sent = 0, kinds[C_COUNT][K_COUNT] = {{0}};
	unsigned long decisions;
	int i, k, cls;

	for (i = 0; i < L->concurrency; i++) {
		ok += ws[i].ok;
		errors += ws[i].errors;
		early += ws[i].early;
		sent += ws[i].rcpts_sent;
		for (cls = 0; cls < C_COUNT; cls++)
			for (k = 0; k < K_COUNT; k++)
				kinds[cls][k] += ws[i].kinds[cls][k];
	}
	decisions = (unsigned long)rl->n;
	if (!quiet) {
		printf("milter-load: %s, %d workers: at most %d sessions in progress, %d "
		       "negotiated at once\n",
		       L->socket, L->concurrency, atomic_load(&L->busy_max),
		       atomic_load(&L->open_max));
		printf("sessions:   %lu ok, %lu failed, %lu ended early by the milter, %.3f s\n",
		       ok, errors, early, elapsed);
		printf("rate:       %.1f sessions/s, %.1f decisions/s (RCPT answers: %lu)\n",
		       ok / elapsed, decisions / elapsed, decisions);
		printf("rcpt  us:   p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", pct_us(rl, 50),
		       pct_us(rl, 90), pct_us(rl, 99), pct_us(rl, 100));
		printf(
		    "connect us: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f  (socket+OPTNEG+CONNECT)\n",
		    pct_us(cl, 50), pct_us(cl, 90), pct_us(cl, 99), pct_us(cl, 100));
		printf("session us: p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", pct_us(sl, 50),
		       pct_us(sl, 90), pct_us(sl, 99), pct_us(sl, 100));
		for (cls = 0; cls < C_COUNT; cls++) {
			int any = 0;

			printf("%-6s     ", class_names[cls]);
			for (k = 0; k < K_COUNT; k++) {
				if (kinds[cls][k] != 0) {
					printf(" %s=%lu", kind_names[k], kinds[cls][k]);
					any = 1;
				}
			}
			puts(any ? "" : " (none)");
		}
	}
	printf("RESULT sessions=%ld ok=%lu errors=%lu early=%lu concurrency=%d max_inflight=%d "
	       "max_open=%d elapsed_s=%.3f sessions_per_s=%.1f rcpts_sent=%lu decisions=%lu "
	       "decisions_per_s=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f",
	       L->sessions, ok, errors, early, L->concurrency, atomic_load(&L->busy_max),
	       atomic_load(&L->open_max), elapsed, ok / elapsed, sent, decisions,
	       decisions / elapsed, pct_us(rl, 50), pct_us(rl, 90), pct_us(rl, 99),
	       pct_us(rl, 100));
	printf(" conn_p50_us=%.1f conn_p90_us=%.1f conn_p99_us=%.1f conn_max_us=%.1f",
	       pct_us(cl, 50), pct_us(cl, 90), pct_us(cl, 99), pct_us(cl, 100));
	printf(" sess_p50_us=%.1f sess_p90_us=%.1f sess_p99_us=%.1f sess_max_us=%.1f",
	       pct_us(sl, 50), pct_us(sl, 90), pct_us(sl, 99), pct_us(sl, 100));
	for (k = 0; k < K_COUNT; k++)
		printf(" %s=%lu", kind_names[k], kinds[C_LOCAL][k] + kinds[C_RELAY][k]);
	for (cls = 0; cls < C_COUNT; cls++)
		for (k = 0; k < K_COUNT; k++)
			printf(" %s_%s=%lu", class_names[cls], kind_names[k], kinds[cls][k]);
	putchar('\n');
}

int main(int argc, char **argv)
{
	static struct load L;
	struct worker *ws;
	struct samples rl = {0}, cl = {0}, sl = {0};
	pthread_attr_t attr;
	uint64_t t0, t1;
	unsigned long failed = 0;
	int i, started = 0, quiet = 0, status = 0;

	if (parse_args(argc, argv, &L, &quiet) != 0)
		return usage();
	if (L.concurrency > L.sessions)
		L.concurrency = (int)L.sessions;
	pthread_mutex_init(&L.lock, NULL);
	pthread_cond_init(&L.go_cond, NULL);
	if ((ws = calloc((size_t)L.concurrency, sizeof(*ws))) == NULL) {
		fprintf(stderr, "milter-load: out of memory\n");
		return 2;
	}
	if (pthread_attr_init(&attr) != 0 || pthread_attr_setstacksize(&attr, THREAD_STACK) != 0) {
		fprintf(stderr, "milter-load: cannot set up thread attributes\n");
		free(ws);
		return 2;
	}
	for (i = 0; i < L.concurrency; i++) {
		int rc;

		ws[i].load = &L;
		if ((rc = pthread_create(&ws[i].tid, &attr, worker_main, &ws[i])) != 0) {
			fprintf(stderr, "milter-load: cannot start thread %d of %d: %s\n", i + 1,
			        L.concurrency, strerror(rc));
			atomic_store(&L.stop, 1);
			status = 2;
			break;
		}
		started++;
	}
	pthread_attr_destroy(&attr);
	/* Release every thread at once so all sessions start together. */
	pthread_mutex_lock(&L.lock);
	L.go = 1;
	t0 = now_ns();
	pthread_cond_broadcast(&L.go_cond);
	pthread_mutex_unlock(&L.lock);
	for (i = 0; i < started; i++)
		pthread_join(ws[i].tid, NULL);
	t1 = now_ns();
	if (status == 0) {
		if (atomic_load(&L.stop)) {
			fprintf(stderr, "milter-load: out of memory for latency samples\n");
			status = 2;
		} else if (merge_sorted(ws, L.concurrency, offsetof(struct worker, rcpt_lat),
		                        &rl) ||
		           merge_sorted(ws, L.concurrency, offsetof(struct worker, conn_lat),
		                        &cl) ||
		           merge_sorted(ws, L.concurrency, offsetof(struct worker, sess_lat),
		                        &sl)) {
			fprintf(stderr, "milter-load: out of memory merging samples\n");
			status = 2;
		} else {
			double elapsed = (double)(t1 - t0) / 1e9;

			report(&L, ws, elapsed > 0 ? elapsed : 1e-9, &rl, &cl, &sl, quiet);
			for (i = 0; i < L.concurrency; i++)
				failed += ws[i].errors;
			if (failed > 0)
				status = 2;
		}
	}
	for (i = 0; i < L.concurrency; i++) {
		free(ws[i].rcpt_lat.v);
		free(ws[i].conn_lat.v);
		free(ws[i].sess_lat.v);
	}
	free(rl.v);
	free(cl.v);
	free(sl.v);
	free(ws);
	pthread_cond_destroy(&L.go_cond);
	pthread_mutex_destroy(&L.lock);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "milter-load: write error on stdout\n");
		return 2;
	}
	return status;
}
