/*
 * request.c — the policy request parser, push style: the caller reads whatever the
 * socket gives and feeds it here, so the parser never blocks, never allocates, and is
 * the same code under test, under the fuzzer and under Postfix. Every protocol error is
 * recorded (the first one wins) and the request is read to its empty line regardless,
 * so one bad request costs one DUNNO and the next request is read in step.
 */
#include "request.h"

#include <stdio.h>
#include <string.h>

/* The kept attributes: where each goes, and whether a longer value may be cut (values
 * only logged or only tested for being set) or makes the request malformed. */
static const struct attr {
	const char *name;
	size_t offset, size;
	bool may_cut;
} attrs[] = {
#define ATTR(field, cut) {#field, offsetof(struct pbs_request, field), \
			  sizeof(((struct pbs_request *)0)->field), cut}
	ATTR(request, false),
	ATTR(protocol_state, false),
	ATTR(client_address, false),
	ATTR(sasl_username, true),
	ATTR(recipient, true),
	/* Cut, it is longer than any address lease.sender accepts: still refused. */
	ATTR(sender, true),
	ATTR(queue_id, true),
	ATTR(instance, false),
	ATTR(popbsmtp_gate, false),
#undef ATTR
};

#define NATTRS (sizeof attrs / sizeof attrs[0])

/* A size limit as text, for the messages. */
#define LIMIT_TEXT(n) #n
#define LIMIT(n) LIMIT_TEXT(n)

void pbs_request_begin(struct pbs_request_parser *p)
{
	size_t i;

	for (i = 0; i < NATTRS; i++)
		((char *)&p->req + attrs[i].offset)[0] = '\0';
	p->req.seen = 0;
	p->req.problem[0] = '\0';
	p->line_len = 0;
	p->line_too_long = false;
	p->bytes = 0;
}

/* Record the first protocol error of the request; later ones add nothing useful. */
static void problem(struct pbs_request *req, const char *fmt, const char *arg)
{
	char safe[PBS_LOG_SAFE_MAX];

	if (req->problem[0] == '\0')
		snprintf(req->problem, sizeof req->problem, fmt, pbs_log_safe(arg, safe));
}

/* The attribute called NAME (LEN bytes), or NULL. */
static const struct attr *find_attr(const char *name, size_t len)
{
	size_t i;

	for (i = 0; i < NATTRS; i++)
		if (strlen(attrs[i].name) == len && memcmp(attrs[i].name, name, len) == 0)
			return &attrs[i];
	return NULL;
}

/* One complete line of LEN bytes (no newline, not empty) of the current request. */
static void take_line(struct pbs_request *req, const char *line, size_t len)
{
	const char *eq = memchr(line, '=', len);
	const struct attr *a;
	char name[64];
	size_t vlen;

	if (memchr(line, '\0', len) != NULL) {
		problem(req, "a line holds a NUL byte%s", "");
		return;
	}
	if (eq == NULL || eq == line) {
		snprintf(name, sizeof name, "%.*s", (int)(len < 40 ? len : 40), line);
		problem(req, eq ? "a line without a name: '%s'" : "a line without '=': '%s'", name);
		return;
	}
	if ((a = find_attr(line, (size_t)(eq - line))) == NULL)
		return;
	if (req->seen & (1u << (a - attrs))) {
		problem(req, "attribute %s given twice", a->name);
		return;
	}
	vlen = len - (size_t)(eq - line) - 1;
	if (vlen >= a->size) {
		if (!a->may_cut) {
			problem(req, "attribute %s too long", a->name);
			return;
		}
		vlen = a->size - 1;
	}
	memcpy((char *)req + a->offset, eq + 1, vlen);
	((char *)req + a->offset)[vlen] = '\0';
	req->seen |= 1u << (a - attrs);
}

/* The end of a line: the empty line ends the request (returns true). */
static bool end_line(struct pbs_request_parser *p)
{
	bool empty = p->line_len == 0 && !p->line_too_long;

	if (p->line_too_long)
		problem(&p->req, "a line longer than " LIMIT(PBS_REQUEST_LINE_MAX) " bytes%s", "");
	else if (empty && p->bytes == 1)
		problem(&p->req, "an empty request%s", "");
	else if (!empty && p->bytes <= PBS_REQUEST_MAX)
		take_line(&p->req, p->line, p->line_len);
	p->line_len = 0;
	p->line_too_long = false;
	return empty;
}

size_t pbs_request_feed(struct pbs_request_parser *p, const char *data, size_t len,
			bool *complete)
{
	size_t i;

	*complete = false;
	for (i = 0; i < len; i++) {
		if (p->bytes < (size_t)-1)
			p->bytes++;
		if (p->bytes == PBS_REQUEST_MAX + 1)
			problem(&p->req, "a request longer than " LIMIT(PBS_REQUEST_MAX) " bytes%s", "");
		if (data[i] == '\n') {
			if (end_line(p)) {
				*complete = true;
				return i + 1;
			}
		} else if (p->line_len < sizeof p->line) {
			p->line[p->line_len++] = data[i];
		} else {
			p->line_too_long = true;
		}
	}
	return len;
}

bool pbs_request_partial(const struct pbs_request_parser *p)
{
	return p->bytes > 0;
}

bool pbs_request_has(const struct pbs_request *req, const char *name)
{
	const struct attr *a = find_attr(name, strlen(name));

	return a != NULL && (req->seen & (1u << (a - attrs))) != 0;
}
