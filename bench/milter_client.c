/*
 * milter_client.c — an MTA-side milter protocol client (version 6), modelled on Postfix's
 * milter8.c. A packet is a 4-byte big-endian length (command byte included), the command
 * byte, then data; strings are NUL-terminated. Per session: OPTNEG, then per stage an
 * optional SMFIC_MACRO packet followed by the stage's command, one reply for each (unless
 * the milter negotiated SMFIP_NR_* for it), ABORT and QUIT get none.
 *
 * The socket is non-blocking; every wait is a poll() against a deadline of timeout_ms.
 * After any I/O or protocol error the socket is closed, as Postfix does, because replies
 * may be in flight and the two sides can no longer be trusted to agree.
 */
#include "milter_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Session states, after milter8.c's MILTER8_STAT_*. */
enum client_state {
	ST_CLOSED,     /* no connection */
	ST_READY,      /* negotiated, CONNECT not yet sent */
	ST_ENVELOPE,   /* events flow normally */
	ST_ACCEPT_MSG, /* accept/discard for this message: no more MAIL-stage events until abort */
	ST_ENDED,      /* a connection-level decision: socket closed, nothing more is sent */
	ST_ERROR       /* I/O or protocol error: socket closed */
};

static const char stage_cmd[PBS_MILTER_NSTAGES] = {SMFIC_CONNECT, SMFIC_HELO, SMFIC_MAIL,
                                                   SMFIC_RCPT};
static const uint32_t stage_no[PBS_MILTER_NSTAGES] = {SMFIP_NOCONNECT, SMFIP_NOHELO, SMFIP_NOMAIL,
                                                      SMFIP_NORCPT};
static const uint32_t stage_nr[PBS_MILTER_NSTAGES] = {SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_MAIL,
                                                      SMFIP_NR_RCPT};
static const char *const stage_label[PBS_MILTER_NSTAGES] = {"CONNECT", "HELO", "MAIL", "RCPT"};

/* Milliseconds on the monotonic clock. */
static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Record an error with errno's text if errnum != 0; fatal errors also drop the connection. */
__attribute__((format(printf, 5, 6))) static int client_error(pbs_milter_client *c, int fatal,
                                                              enum pbs_milter_error err, int errnum,
                                                              const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(c->errstr, sizeof(c->errstr), fmt, ap);
	va_end(ap);
	n = strlen(c->errstr);
	if (errnum != 0 && n + 2 < sizeof(c->errstr)) {
		char text[128];

		if (strerror_r(errnum, text, sizeof(text)) != 0)
			snprintf(text, sizeof(text), "error %d", errnum);
		snprintf(c->errstr + n, sizeof(c->errstr) - n, ": %s", text);
	}
	c->err = err;
	if (fatal) {
		if (c->fd >= 0)
			close(c->fd);
		c->fd = -1;
		c->state = ST_ERROR;
		c->in_mail = 0;
		c->out.len = 0;
		c->out.failed = 0;
	}
	return -1;
}

/* Make room for more bytes; on failure mark the buffer so the send reports it. */
static int buf_reserve(pbs_milter_buf *b, size_t more)
{
	size_t cap;
	unsigned char *p;

	if (b->failed)
		return -1;
	if (more > SIZE_MAX - b->len) {
		b->failed = 1;
		return -1;
	}
	if (b->len + more <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < b->len + more)
		cap = cap > SIZE_MAX / 2 ? b->len + more : cap * 2;
	if ((p = realloc(b->data, cap)) == NULL) {
		b->failed = 1;
		return -1;
	}
	b->data = p;
	b->cap = cap;
	return 0;
}

/* Append n raw bytes. */
static void buf_put(pbs_milter_buf *b, const void *p, size_t n)
{
	if (n == 0 || buf_reserve(b, n) != 0)
		return;
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* Append a 32-bit number in network order. */
static void buf_put_u32(pbs_milter_buf *b, uint32_t v)
{
	unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};

	buf_put(b, p, 4);
}

/* Append a string with its NUL terminator. */
static void buf_put_str(pbs_milter_buf *b, const char *s)
{
	buf_put(b, s, strlen(s) + 1);
}

/* Decode a 32-bit number in network order. */
static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Start a packet: a length placeholder and the command byte. Returns where it starts. */
static size_t packet_begin(pbs_milter_buf *b, char cmd)
{
	size_t at = b->len;

	buf_put_u32(b, 0);
	buf_put(b, &cmd, 1);
	return at;
}

/* Fill in the length of the packet that starts at `at`. */
static void packet_end(pbs_milter_buf *b, size_t at)
{
	size_t n;

	if (b->failed)
		return;
	n = b->len - at - 4;
	if (n > UINT32_MAX) {
		b->failed = 1;
		return;
	}
	b->data[at] = (unsigned char)(n >> 24);
	b->data[at + 1] = (unsigned char)(n >> 16);
	b->data[at + 2] = (unsigned char)(n >> 8);
	b->data[at + 3] = (unsigned char)n;
}

/* Wait for poll events until the deadline: 1 ready, 0 timed out, -1 poll failed. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = {.fd = fd, .events = events};
		int64_t left = deadline - now_ms();
		int n;

		if (left <= 0)
			return 0;
		n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			return 1;
		if (n < 0 && errno != EINTR)
			return -1;
	}
}

/* Write every queued packet before the deadline. */
static int flush_out(pbs_milter_client *c, int64_t deadline)
{
	size_t off = 0;

	if (c->out.failed)
		return client_error(c, 1, PBS_MILTER_ENOMEM, 0,
		                    "cannot build packet: out of memory or too long");
	while (off < c->out.len) {
		ssize_t n = send(c->fd, c->out.data + off, c->out.len - off, MSG_NOSIGNAL);
		int w;

		if (n >= 0) {
			off += (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return client_error(c, 1, PBS_MILTER_EIO, errno, "write to milter");
		if ((w = wait_fd(c->fd, POLLOUT, deadline)) == 0)
			return client_error(c, 1, PBS_MILTER_ETIMEOUT, 0,
			                    "write to milter: no progress within %d ms",
			                    c->timeout_ms);
		if (w < 0)
			return client_error(c, 1, PBS_MILTER_EIO, errno, "poll");
	}
	c->out.len = 0;
	return 0;
}

/* Have at least n unread bytes in the input buffer before the deadline. */
static int fill_in(pbs_milter_client *c, size_t n, int64_t deadline, const char *what)
{
	if (c->in_end - c->in_start >= n)
		return 0;
	if (c->in_cap - c->in_start < n) {
		if (c->in_start > 0)
			memmove(c->in, c->in + c->in_start, c->in_end - c->in_start);
		c->in_end -= c->in_start;
		c->in_start = 0;
		if (c->in_cap < n) {
			size_t cap = n < 4096 ? 4096 : n;
			unsigned char *p = realloc(c->in, cap);

			if (p == NULL)
				return client_error(c, 1, PBS_MILTER_ENOMEM, 0,
				                    "out of memory reading %s", what);
			c->in = p;
			c->in_cap = cap;
		}
	}
	while (c->in_end - c->in_start < n) {
		ssize_t got;
		int w;

		/* Poll first: right after a command the answer is almost never there yet. */
		if ((w = wait_fd(c->fd, POLLIN, deadline)) == 0)
			return client_error(c, 1, PBS_MILTER_ETIMEOUT, 0,
			                    "no %s from the milter within %d ms", what,
			                    c->timeout_ms);
		if (w < 0)
			return client_error(c, 1, PBS_MILTER_EIO, errno, "poll");
		got = recv(c->fd, c->in + c->in_end, c->in_cap - c->in_end, 0);
		if (got > 0)
			c->in_end += (size_t)got;
		else if (got == 0)
			return client_error(
			    c, 1, PBS_MILTER_EIO, 0,
			    "the milter closed the connection while we waited for %s", what);
		else if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)
			return client_error(c, 1, PBS_MILTER_EIO, errno, "read %s", what);
	}
	return 0;
}

/* Read one packet; *data points into the input buffer until the next read. */
static int read_packet(pbs_milter_client *c, char *cmd, const unsigned char **data, size_t *len,
                       int64_t deadline, const char *what)
{
	uint32_t n;

	if (fill_in(c, 4, deadline, what) != 0)
		return -1;
	n = get_u32(c->in + c->in_start);
	if (n < 1 || n > PBS_MILTER_MAX_PACKET)
		return client_error(c, 1, PBS_MILTER_EPROTO, 0, "bad packet length %lu in %s",
		                    (unsigned long)n, what);
	if (fill_in(c, 4 + (size_t)n, deadline, what) != 0)
		return -1;
	*cmd = (char)c->in[c->in_start + 4];
	*data = c->in + c->in_start + 5;
	*len = n - 1;
	c->in_start += 4 + (size_t)n;
	if (c->in_start == c->in_end)
		c->in_start = c->in_end = 0;
	return 0;
}

/* A command byte as text for messages. */
static const char *cmd_text(char cmd, char buf[8])
{
	unsigned char u = (unsigned char)cmd;

	if (isprint(u))
		snprintf(buf, 8, "'%c'", cmd);
	else
		snprintf(buf, 8, "0x%02x", u);
	return buf;
}

/* The checks milter8.c applies to SMFIR_REPLYCODE: "4xx 4" or "5xx 5" (or '-' for multi-line). */
static int postfix_accepts(const char *t)
{
	return (t[0] == '4' || t[0] == '5') && isdigit((unsigned char)t[1]) &&
	       isdigit((unsigned char)t[2]) && (t[3] == ' ' || t[3] == '-') && t[4] == t[0];
}

/* Keep a copy of a REPLYCODE text (the milter sends it NUL-terminated). */
static int keep_text(pbs_milter_client *c, const unsigned char *data, size_t len)
{
	size_t n = strnlen((const char *)data, len);

	if (n + 1 > c->text_cap) {
		char *p = realloc(c->text, n + 1);

		if (p == NULL)
			return client_error(c, 1, PBS_MILTER_ENOMEM, 0, "out of memory for reply");
		c->text = p;
		c->text_cap = n + 1;
	}
	memcpy(c->text, data, n);
	c->text[n] = '\0';
	return 0;
}

/* Read the milter's answer to a stage, skipping progress notes. */
static int read_reply(pbs_milter_client *c, enum pbs_milter_stage st, pbs_milter_reply *r)
{
	int64_t deadline = now_ms() + c->timeout_ms;
	char what[32], cb[8];

	snprintf(what, sizeof(what), "reply to %s", stage_label[st]);
	for (;;) {
		const unsigned char *data;
		size_t len;
		char cmd;

		if (read_packet(c, &cmd, &data, &len, deadline, what) != 0)
			return -1;
		switch (cmd) {
		case SMFIR_REPLYCODE:
			if (len == 0)
				return client_error(c, 1, PBS_MILTER_EPROTO, 0,
				                    "empty REPLYCODE in %s", what);
			if (keep_text(c, data, len) != 0)
				return -1;
			r->status = PBS_MILTER_REPLIED;
			r->cmd = cmd;
			r->text = c->text;
			r->malformed = !postfix_accepts(c->text);
			return 0;
		case SMFIR_PROGRESS: /* still working: restart the clock, as Postfix's per-read
		                        timeout */
		case SMFIR_CONTINUE:
		case SMFIR_ACCEPT:
		case SMFIR_REJECT:
		case SMFIR_TEMPFAIL:
		case SMFIR_DISCARD:
		case SMFIR_SKIP:
		case SMFIR_SHUTDOWN:
		case SMFIR_CONN_FAIL:
			if (len != 0)
				return client_error(c, 1, PBS_MILTER_EPROTO, 0,
				                    "%s %s carries %zu unexpected data bytes", what,
				                    cmd_text(cmd, cb), len);
			if (cmd == SMFIR_PROGRESS) {
				deadline = now_ms() + c->timeout_ms;
				continue;
			}
			r->status = PBS_MILTER_REPLIED;
			r->cmd = cmd;
			return 0;
		default:
			/* Modification requests are only valid at end of message. */
			return client_error(c, 1, PBS_MILTER_EPROTO, 0, "unexpected %s %s", what,
			                    cmd_text(cmd, cb));
		}
	}
}

/* Connect one address with a deadline; a full unix listen queue is retried. fd or -1. */
static int connect_addr(const struct sockaddr *sa, socklen_t salen, int64_t deadline, int *errnum)
{
	int fd, flags, soerr = 0;
	socklen_t len = sizeof(soerr);

	if ((fd = socket(sa->sa_family, SOCK_STREAM, 0)) < 0) {
		*errnum = errno;
		return -1;
	}
	if ((flags = fcntl(fd, F_GETFL)) < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 ||
	    fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		goto fail;
	for (;;) {
		if (connect(fd, sa, salen) == 0)
			break;
		if (errno == EINPROGRESS || errno == EINTR) {
			int w = wait_fd(fd, POLLOUT, deadline);

			if (w <= 0) {
				errno = w == 0 ? ETIMEDOUT : errno;
				goto fail;
			}
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
				goto fail;
			if (soerr != 0) {
				errno = soerr;
				goto fail;
			}
			break;
		}
		/* Linux answers EAGAIN, not EINPROGRESS, when a unix listener's queue is full. */
		if (errno == EAGAIN && sa->sa_family == AF_UNIX && now_ms() < deadline) {
			struct timespec ms = {0, 1000000};

			nanosleep(&ms, NULL);
			continue;
		}
		if (errno == EAGAIN)
			errno = ETIMEDOUT;
		goto fail;
	}
	if (sa->sa_family != AF_UNIX) {
		int one = 1;

		/* Small request/reply packets: do not let Nagle hold them back. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd;
fail:
	*errnum = errno;
	close(fd);
	return -1;
}

/* Open the socket named by a libmilter-style spec. */
static int open_socket(pbs_milter_client *c, const char *spec, int64_t deadline)
{
	const char *rest;
	int errnum = 0;

	if (strncmp(spec, "unix:", 5) == 0 || strncmp(spec, "local:", 6) == 0 || spec[0] == '/') {
		struct sockaddr_un sun;

		rest = spec[0] == '/' ? spec : strchr(spec, ':') + 1;
		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (strlen(rest) >= sizeof(sun.sun_path) || rest[0] == '\0')
			return client_error(c, 1, PBS_MILTER_EUSAGE, 0,
			                    "bad unix socket path in \"%s\"", spec);
		memcpy(sun.sun_path, rest, strlen(rest));
		if ((c->fd =
		         connect_addr((struct sockaddr *)&sun, sizeof(sun), deadline, &errnum)) < 0)
			return client_error(
			    c, 1, errnum == ETIMEDOUT ? PBS_MILTER_ETIMEOUT : PBS_MILTER_ECONNECT,
			    errnum, "cannot connect to %s", spec);
		return 0;
	}
	if (strncmp(spec, "inet:", 5) == 0 || strncmp(spec, "inet6:", 6) == 0) {
		int v6 = spec[4] == '6';
		char port[16], host[256];
		const char *at;
		struct addrinfo hints, *res, *ai;
		size_t plen, hlen;
		int rc;

		rest = spec + (v6 ? 6 : 5);
		at = strchr(rest, '@');
		plen = at ? (size_t)(at - rest) : strlen(rest);
		if (plen == 0 || plen >= sizeof(port) || strspn(rest, "0123456789") != plen)
			return client_error(c, 1, PBS_MILTER_EUSAGE, 0,
			                    "bad port in \"%s\" (want inet:PORT@HOST)", spec);
		memcpy(port, rest, plen);
		port[plen] = '\0';
		/* No host: libmilter then listens on every interface; loopback reaches it. */
		snprintf(host, sizeof(host), "%s", at ? at + 1 : v6 ? "::1" : "127.0.0.1");
		hlen = strlen(host);
		if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
			memmove(host, host + 1, hlen - 2);
			host[hlen - 2] = '\0';
		}
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = v6 ? AF_INET6 : AF_INET;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_NUMERICSERV;
		if ((rc = getaddrinfo(host, port, &hints, &res)) != 0)
			return client_error(c, 1, PBS_MILTER_ECONNECT, 0, "cannot resolve %s: %s",
			                    spec, gai_strerror(rc));
		for (ai = res; ai != NULL && c->fd < 0; ai = ai->ai_next)
			c->fd = connect_addr(ai->ai_addr, ai->ai_addrlen, deadline, &errnum);
		freeaddrinfo(res);
		if (c->fd < 0)
			return client_error(
			    c, 1, errnum == ETIMEDOUT ? PBS_MILTER_ETIMEOUT : PBS_MILTER_ECONNECT,
			    errnum, "cannot connect to %s", spec);
		return 0;
	}
	return client_error(c, 1, PBS_MILTER_EUSAGE, 0,
	                    "unknown socket \"%s\" (want unix:/path or inet:PORT@HOST)", spec);
}

/* Send OPTNEG and take the milter's answer: version, actions, steps, macro lists. */
static int negotiate(pbs_milter_client *c, int64_t deadline)
{
	const unsigned char *data;
	size_t at, len;
	char cmd, cb[8];

	at = packet_begin(&c->out, SMFIC_OPTNEG);
	buf_put_u32(&c->out, PBS_MILTER_VERSION);
	buf_put_u32(&c->out, PBS_MILTER_ACTIONS);
	buf_put_u32(&c->out, PBS_MILTER_STEPS);
	packet_end(&c->out, at);
	if (flush_out(c, deadline) != 0 ||
	    read_packet(c, &cmd, &data, &len, deadline, "option negotiation") != 0)
		return -1;
	if (cmd != SMFIC_OPTNEG)
		return client_error(c, 1, PBS_MILTER_EPROTO, 0,
		                    "unexpected reply %s to option negotiation", cmd_text(cmd, cb));
	if (len < 12)
		return client_error(c, 1, PBS_MILTER_EPROTO, 0,
		                    "option negotiation reply too short (%zu bytes)", len);
	c->version = get_u32(data);
	c->actions = get_u32(data + 4);
	c->steps = get_u32(data + 8);
	if (c->version < 2 || c->version > PBS_MILTER_VERSION)
		return client_error(c, 1, PBS_MILTER_EPROTO, 0,
		                    "milter speaks protocol version %lu, we speak 2..%d",
		                    (unsigned long)c->version, PBS_MILTER_VERSION);
	if ((c->actions & ~PBS_MILTER_ACTIONS) != 0)
		return client_error(c, 1, PBS_MILTER_EPROTO, 0,
		                    "milter wants actions 0x%lx, offered were 0x%x",
		                    (unsigned long)c->actions, PBS_MILTER_ACTIONS);
	/* Steps we did not offer are kept as sent: Postfix only logs them too. */
	data += 12;
	len -= 12;
	/* Then, with SMFIF_SETSYMLIST: (32-bit SMFIM_* class, "macro list\0") pairs. */
	while (len > 0) {
		uint32_t cls;
		size_t n;

		if (len < 5 || (n = strnlen((const char *)data + 4, len - 4)) == len - 4)
			return client_error(c, 1, PBS_MILTER_EPROTO, 0,
			                    "malformed macro list in option negotiation");
		cls = get_u32(data);
		if (cls < sizeof(c->symlist) / sizeof(c->symlist[0])) {
			free(c->symlist[cls]);
			if ((c->symlist[cls] = strdup((const char *)data + 4)) == NULL)
				return client_error(c, 1, PBS_MILTER_ENOMEM, 0, "out of memory");
		}
		data += 4 + n + 1;
		len -= 4 + n + 1;
	}
	return 0;
}

/* Forget the per-connection state; keep the buffers for the next session. */
static void client_reset(pbs_milter_client *c)
{
	size_t i;

	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = ST_CLOSED;
	c->in_mail = 0;
	c->version = c->actions = c->steps = 0;
	for (i = 0; i < sizeof(c->symlist) / sizeof(c->symlist[0]); i++) {
		free(c->symlist[i]);
		c->symlist[i] = NULL;
	}
	for (i = 0; i < PBS_MILTER_NSTAGES; i++)
		c->macros[i].len = c->macros[i].failed = 0;
	c->out.len = c->out.failed = 0;
	c->in_start = c->in_end = 0;
}

void pbs_milter_client_init(pbs_milter_client *c, int timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->state = ST_CLOSED;
	c->timeout_ms = timeout_ms > 0 ? timeout_ms : 1;
}

int pbs_milter_client_open(pbs_milter_client *c, const char *spec)
{
	int64_t deadline = now_ms() + c->timeout_ms;

	client_reset(c);
	c->err = PBS_MILTER_OK;
	c->errstr[0] = '\0';
	if (open_socket(c, spec, deadline) != 0 || negotiate(c, deadline) != 0)
		return -1;
	c->state = ST_READY;
	return 0;
}

void pbs_milter_client_close(pbs_milter_client *c)
{
	client_reset(c);
}

void pbs_milter_client_free(pbs_milter_client *c)
{
	size_t i;

	client_reset(c);
	for (i = 0; i < PBS_MILTER_NSTAGES; i++)
		free(c->macros[i].data);
	free(c->out.data);
	free(c->in);
	free(c->text);
	pbs_milter_client_init(c, c->timeout_ms);
}

int pbs_milter_client_macro(pbs_milter_client *c, enum pbs_milter_stage stage, const char *name,
                            const char *value)
{
	pbs_milter_buf *m;

	if ((unsigned)stage >= PBS_MILTER_NSTAGES || name == NULL || name[0] == '\0' ||
	    value == NULL)
		return client_error(c, 0, PBS_MILTER_EUSAGE, 0, "bad macro");
	m = &c->macros[stage];
	buf_put_str(m, name);
	buf_put_str(m, value);
	if (m->failed)
		return client_error(c, 0, PBS_MILTER_ENOMEM, 0, "out of memory for macro %s", name);
	return 0;
}

/* The connection is over from the MTA's side (accept/reject at CONNECT or HELO, shutdown):
 * Postfix closes the milter socket, libmilter would otherwise keep the session going. */
static void end_connection(pbs_milter_client *c)
{
	client_reset(c);
	c->state = ST_ENDED;
}

/* Track what the MTA may still send after this answer, as milter8.c does. */
static void after_reply(pbs_milter_client *c, enum pbs_milter_stage st, char cmd)
{
	int conn_level = st == PBS_MILTER_CONNECT || st == PBS_MILTER_HELO;

	switch (cmd) {
	case SMFIR_SHUTDOWN:
	case SMFIR_CONN_FAIL:
		end_connection(c);
		break;
	case SMFIR_ACCEPT:
	case SMFIR_REJECT:
	case SMFIR_TEMPFAIL:
	case SMFIR_REPLYCODE:
		if (conn_level) {
			end_connection(c);
		} else if (cmd == SMFIR_ACCEPT) {
			/* libmilter went back to HELO state and would drop a RCPT unanswered. */
			c->state = ST_ACCEPT_MSG;
			c->in_mail = 0;
		} else if (st == PBS_MILTER_MAIL) {
			c->in_mail = 0; /* MAIL refused: the SMTP client gets no transaction */
		}
		break;
	case SMFIR_DISCARD:
		if (!conn_level) { /* at CONNECT/HELO Postfix ignores it */
			c->state = ST_ACCEPT_MSG;
			c->in_mail = 0;
		}
		break;
	default: /* continue, skip, or no reply at all */
		if (st == PBS_MILTER_MAIL)
			c->in_mail = 1;
		break;
	}
}

/* Queue an ABORT: the transaction is over, libmilter calls xxfi_abort. */
static void queue_abort(pbs_milter_client *c)
{
	packet_end(&c->out, packet_begin(&c->out, SMFIC_ABORT));
	c->state = ST_ENVELOPE;
	c->in_mail = 0;
}

/* Before a stage: decide whether it goes out and queue its macros. 1 send, 0 not (*r says
 * why), -1 error. Macros are queued even for a skipped stage, as milter8_event() does. */
static int event_begin(pbs_milter_client *c, enum pbs_milter_stage st, pbs_milter_reply *r)
{
	pbs_milter_buf *m = &c->macros[st];
	int sendable;

	r->status = PBS_MILTER_NOTSENT;
	r->cmd = 0;
	r->text = "";
	r->malformed = 0;
	if (c->state == ST_ERROR)
		return -1;
	if (c->state == ST_CLOSED)
		return client_error(c, 0, PBS_MILTER_EUSAGE, 0, "%s: not connected",
		                    stage_label[st]);
	if (c->state == ST_READY && st != PBS_MILTER_CONNECT)
		return client_error(c, 0, PBS_MILTER_EUSAGE, 0, "%s before CONNECT",
		                    stage_label[st]);
	if (c->state != ST_READY && st == PBS_MILTER_CONNECT && c->state != ST_ENDED)
		return client_error(c, 0, PBS_MILTER_EUSAGE, 0, "CONNECT sent twice");
	switch (st) {
	case PBS_MILTER_CONNECT:
		sendable = c->state == ST_READY;
		break;
	case PBS_MILTER_RCPT:
		sendable = c->state == ST_ENVELOPE && c->in_mail;
		break;
	default:
		sendable = c->state == ST_ENVELOPE || c->state == ST_ACCEPT_MSG;
		break;
	}
	if (!sendable) {
		m->len = m->failed = 0;
		return 0;
	}
	if (st == PBS_MILTER_CONNECT)
		c->state = ST_ENVELOPE;
	if (st == PBS_MILTER_MAIL && (c->state == ST_ACCEPT_MSG || c->in_mail))
		queue_abort(c); /* a new MAIL means the old transaction ended */
	if (m->len > 0 || m->failed) {
		size_t at = packet_begin(&c->out, SMFIC_MACRO);

		buf_put(&c->out, &stage_cmd[st], 1);
		buf_put(&c->out, m->data, m->len);
		packet_end(&c->out, at);
		c->out.failed |= m->failed;
		m->len = m->failed = 0;
	}
	if (c->steps & stage_no[st]) {
		r->status = PBS_MILTER_SKIPPED;
		after_reply(c, st, SMFIR_CONTINUE);
		return 0; /* queued macros go out with the next packet */
	}
	return 1;
}

/* After a stage's packet is queued: send everything and read the answer if one comes. */
static int event_end(pbs_milter_client *c, enum pbs_milter_stage st, size_t at, pbs_milter_reply *r)
{
	packet_end(&c->out, at);
	if (flush_out(c, now_ms() + c->timeout_ms) != 0)
		return -1;
	if (c->steps & stage_nr[st]) {
		r->status = PBS_MILTER_NOREPLY;
		after_reply(c, st, SMFIR_CONTINUE);
		return 0;
	}
	if (read_reply(c, st, r) != 0)
		return -1;
	after_reply(c, st, r->cmd);
	return 0;
}

int pbs_milter_client_connect(pbs_milter_client *c, const char *hostname, char family,
                              uint16_t port, const char *addr, pbs_milter_reply *r)
{
	unsigned char nport[2] = {(unsigned char)(port >> 8), (unsigned char)port};
	size_t at;
	int rc;

	if (family != SMFIA_INET && family != SMFIA_INET6 && family != SMFIA_UNIX &&
	    family != SMFIA_UNKNOWN)
		return client_error(c, 0, PBS_MILTER_EUSAGE, 0, "bad address family");
	if ((rc = event_begin(c, PBS_MILTER_CONNECT, r)) <= 0)
		return rc;
	at = packet_begin(&c->out, SMFIC_CONNECT);
	buf_put_str(&c->out, hostname ? hostname : "");
	buf_put(&c->out, &family, 1);
	if (family != SMFIA_UNKNOWN) {
		buf_put(&c->out, nport, 2);
		buf_put_str(&c->out, addr ? addr : "");
	}
	return event_end(c, PBS_MILTER_CONNECT, at, r);
}

int pbs_milter_client_helo(pbs_milter_client *c, const char *name, pbs_milter_reply *r)
{
	size_t at;
	int rc;

	if ((rc = event_begin(c, PBS_MILTER_HELO, r)) <= 0)
		return rc;
	at = packet_begin(&c->out, SMFIC_HELO);
	buf_put_str(&c->out, name ? name : "");
	return event_end(c, PBS_MILTER_HELO, at, r);
}

/* MAIL and RCPT: the command with its argv of NUL-terminated strings. */
static int client_argv_event(pbs_milter_client *c, enum pbs_milter_stage st,
                             const char *const *argv, pbs_milter_reply *r)
{
	size_t at;
	int rc;

	if (argv == NULL || argv[0] == NULL)
		return client_error(c, 0, PBS_MILTER_EUSAGE, 0, "%s without address",
		                    stage_label[st]);
	if ((rc = event_begin(c, st, r)) <= 0)
		return rc;
	at = packet_begin(&c->out, stage_cmd[st]);
	for (; *argv != NULL; argv++)
		buf_put_str(&c->out, *argv);
	return event_end(c, st, at, r);
}

int pbs_milter_client_mail(pbs_milter_client *c, const char *const *argv, pbs_milter_reply *r)
{
	return client_argv_event(c, PBS_MILTER_MAIL, argv, r);
}

int pbs_milter_client_rcpt(pbs_milter_client *c, const char *const *argv, pbs_milter_reply *r)
{
	return client_argv_event(c, PBS_MILTER_RCPT, argv, r);
}

int pbs_milter_client_abort(pbs_milter_client *c)
{
	if (c->state == ST_ERROR)
		return -1;
	/* Postfix sends nothing before CONNECT or once the connection was decided. */
	if (c->state != ST_ENVELOPE && c->state != ST_ACCEPT_MSG)
		return 0;
	queue_abort(c);
	return flush_out(c, now_ms() + c->timeout_ms);
}

int pbs_milter_client_quit(pbs_milter_client *c)
{
	int rc;

	if (c->state == ST_ERROR)
		return -1;
	if (c->fd < 0) {
		client_reset(c);
		return 0;
	}
	packet_end(&c->out, packet_begin(&c->out, SMFIC_QUIT));
	rc = flush_out(c, now_ms() + c->timeout_ms);
	if (rc == 0)
		client_reset(c);
	return rc;
}

const char *pbs_milter_reply_name(const pbs_milter_reply *r)
{
	switch (r->status) {
	case PBS_MILTER_NOREPLY:
		return "noreply";
	case PBS_MILTER_SKIPPED:
		return "skipped";
	case PBS_MILTER_NOTSENT:
		return "not-sent";
	case PBS_MILTER_REPLIED:
		break;
	}
	switch (r->cmd) {
	case SMFIR_CONTINUE:
		return "continue";
	case SMFIR_ACCEPT:
		return "accept";
	case SMFIR_REJECT:
		return "reject";
	case SMFIR_TEMPFAIL:
		return "tempfail";
	case SMFIR_REPLYCODE:
		return "replycode";
	case SMFIR_DISCARD:
		return "discard";
	case SMFIR_SKIP:
		return "skip";
	case SMFIR_SHUTDOWN:
		return "shutdown";
	case SMFIR_CONN_FAIL:
		return "connfail";
	default:
		return "unknown";
	}
}

uint32_t pbs_milter_stage_nobit(enum pbs_milter_stage stage)
{
	return (unsigned)stage < PBS_MILTER_NSTAGES ? stage_no[stage] : 0;
}

uint32_t pbs_milter_stage_nrbit(enum pbs_milter_stage stage)
{
	return (unsigned)stage < PBS_MILTER_NSTAGES ? stage_nr[stage] : 0;
}
