/*
 * prescan.c — the text pre-check of popbsmtp.conf and every file it @includes, run
 * before libconfig reads them. libconfig 1.5 has two faults no check on its tree can see:
 * - it reads an integer written without the L suffix into 32 bits, silently cut: decimal
 *   with atoi(), so 4294967328 becomes 32, hex with strtoul(), so 0x100000000 becomes 0
 *   and 0xffffffff becomes -1;
 * - it reads 0600 as decimal 600, where libconfig 1.7 (Debian 13) reads octal 384 and
 *   refuses 08: a leading zero is refused, so that a file means the same on both;
 * - it exit()s the whole process ("input in flex scanner failed") when an @include names
 *   a directory, and blocks forever in fopen() on a FIFO, so one bad file would end the
 *   Dovecot hook and with it the login.
 * So every file is read here first, as libconfig's scanner (lib/scanner.l of 1.5) would
 * read it: comments and strings are skipped, @include lines are followed where and as
 * libconfig follows them, and whatever this pre-check cannot verify within its bounds is
 * an error, never skipped.
 */
#include "prescan.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SCAN_MAX_INCLUDES 64     /* @include directives followed in all */
#define SCAN_MAX_DEPTH 10        /* libconfig 1.5's own MAX_INCLUDE_DEPTH */
#define SCAN_MAX_BYTES (1 << 20) /* of one file */
#define SCAN_SHOW 40             /* bytes of a bad literal quoted in the error */

/* libconfig's scanner states that outlive a token; its INCLUDE state is read at once. */
enum scan_state { SCAN_CODE, SCAN_STRING, SCAN_COMMENT };

/* The walk over the include tree. libconfig scans the files as one stream: the state an
 * included file ends in (say, inside a string) goes on in the file that included it. */
struct scan {
	const char *dir; /* includes resolve as DIR "/" NAME, as libconfig 1.5 does */
	enum scan_state state;
	int includes, depth, bad;
	pbs_config_report *r;
};

/* The file being scanned: its text, the cursor, and the line the cursor is on. */
struct scan_text {
	const char *file;
	const char *start, *p, *end;
	int line;
};

/* Report a problem at T's current line and count it. */
static void scan_error(struct scan *sc, const struct scan_text *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void scan_error(struct scan *sc, const struct scan_text *t, const char *fmt, ...)
{
	char text[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	pbs_config_error(sc->r, "%s:%d: %s", t->file, t->line, text);
	sc->bad++;
}

/* Move T's cursor N bytes on (at most to the end), counting lines. */
static void scan_skip(struct scan_text *t, size_t n)
{
	for (; n > 0 && t->p < t->end; n--)
		if (*t->p++ == '\n')
			t->line++;
}

/* Bytes at P (before END) that are digits of BASE 10 or 16. */
static size_t digits_at(const char *p, const char *end, int base)
{
	const char *q = p;

	while (q < end && (base == 16 ? isxdigit((unsigned char)*q) : isdigit((unsigned char)*q)))
		q++;
	return (size_t)(q - p);
}

/* Length of libconfig's {float} at P: both of its alternatives, the longer one. */
static size_t float_len(const char *p, const char *end)
{
	const char *q = p + (p < end && (*p == '+' || *p == '-'));
	size_t lead = digits_at(q, end, 10), frac = 0, exp = 0;
	const char *e = q + lead;

	if (e < end && *e == '.')
		frac = 1 + digits_at(e + 1, end, 10);
	e += frac;
	if (e < end && (*e == 'e' || *e == 'E')) {
		const char *d = e + 1 + (e + 1 < end && (e[1] == '+' || e[1] == '-'));
		size_t n = digits_at(d, end, 10);
		if (n > 0)
			exp = (size_t)(d + n - e);
	}
	/* [-+]?[0-9]*\.[0-9]*(exp)?  or  [-+]?[0-9]+(\.[0-9]*)?exp */
	if (frac > 0 || (lead > 0 && exp > 0))
		return (size_t)(e - p) + exp;
	return 0;
}

/* Length of an optional L or LL suffix at P. */
static size_t suffix_len(const char *p, const char *end)
{
	if (p < end && *p == 'L')
		return 1 + (p + 1 < end && p[1] == 'L');
	return 0;
}

/* True if the digits D..E of BASE are a value above LIMIT; leading zeros do not count. */
static bool digits_exceed(const char *d, const char *e, int base, unsigned long long limit)
{
	unsigned long long v = 0;

	for (; d < e; d++) {
		int c = tolower((unsigned char)*d);
		unsigned x = (unsigned)(isdigit(c) ? c - '0' : c - 'a' + 10);

		if (v > (limit - x) / (unsigned)base)
			return true;
		v = v * (unsigned)base + x;
	}
	return false;
}

/* The number at T's cursor, as long as libconfig's longest pattern there (0: none).
 * An {integer} or {hex} without the L suffix must fit the int libconfig stores it in,
 * so that the bound checked later is the bound of the value written. */
static size_t scan_number(struct scan *sc, struct scan_text *t)
{
	const char *p = t->p, *end = t->end, *d = p + (*p == '+' || *p == '-');
	size_t fl = float_len(p, end), nd = digits_at(d, end, 10), nx = 0, il = 0, hl = 0, len;
	bool cut = false, zero = false;

	if (nd > 0)
		il = (size_t)(d + nd - p) + suffix_len(d + nd, end);
	if (end - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		nx = digits_at(p + 2, end, 16);
	if (nx > 0)
		hl = 2 + nx + suffix_len(p + 2 + nx, end);
	if (hl > il && hl > fl) /* {hex}: strtoul() stored in an int */
		cut = hl == 2 + nx && digits_exceed(p + 2, p + 2 + nx, 16, INT_MAX);
	else if (il > fl) { /* {integer}: atoi() in 1.5, strtoll(..., 0) in 1.7 */
		cut = il == (size_t)(d + nd - p) &&
		      digits_exceed(d, d + nd, 10, (unsigned long long)INT_MAX + (*p == '-'));
		zero = il == (size_t)(d + nd - p) && nd > 1 && *d == '0';
	}
	len = fl > il ? fl : il;
	len = len > hl ? len : hl;
	if (zero)
		scan_error(sc, t, "integer %.*s%s has a leading zero: libconfig 1.5 reads it as "
			   "decimal, 1.7 as octal (or refuses it); write it without the zero",
			   (int)(len < SCAN_SHOW ? len : SCAN_SHOW), p, len > SCAN_SHOW ? "..." : "");
	else if (cut)
		scan_error(sc, t, "integer %.*s%s is too large (64-bit values need an L suffix, "
			   "and no setting takes one this big)",
			   (int)(len < SCAN_SHOW ? len : SCAN_SHOW), p,
			   len > SCAN_SHOW ? "..." : "");
	return len;
}

/* Length of an @include opening (^[ \t]*@include[ \t]+") at T's cursor, or 0. */
static size_t include_open(const struct scan_text *t)
{
	const char *p = t->p;

	if (p != t->start && p[-1] != '\n')
		return 0;
	while (p < t->end && (*p == ' ' || *p == '\t'))
		p++;
	if ((size_t)(t->end - p) < 9 || memcmp(p, "@include", 8) != 0 ||
	    (p[8] != ' ' && p[8] != '\t'))
		return 0;
	for (p += 8; p < t->end && (*p == ' ' || *p == '\t');)
		p++;
	return p < t->end && *p == '"' ? (size_t)(p + 1 - t->p) : 0;
}

/* Read the include name at T's cursor (past the opening quote) into NAME, unescaped as
 * libconfig does it (\\ and \" only). Returns NULL, or why libconfig would not read the
 * same name (another escape makes flex print the backslash to stdout, the client's socket
 * in the hook). */
static const char *include_name(struct scan_text *t, char *name)
{
	size_t n = 0;

	for (; t->p < t->end && *t->p != '"'; t->p++) {
		if (iscntrl((unsigned char)*t->p))
			return "the name holds a control character or does not end on its line";
		if (*t->p == '\\' && (t->p + 1 == t->end || (t->p[1] != '\\' && t->p[1] != '"')))
			return "a backslash in the name may only escape \\ or \"";
		t->p += *t->p == '\\';
		name[n++] = *t->p;
	}
	name[n] = '\0';
	if (t->p == t->end)
		return "the name has no closing quote";
	t->p++;
	return NULL;
}

static void scan_file(struct scan *sc, const char *path, const struct scan_text *from,
		      const char *name);

/* Follow the @include of NAME on T's current line, within the pre-check's bounds. */
static void scan_follow(struct scan *sc, const struct scan_text *t, const char *name)
{
	char *target;

	if (sc->includes == SCAN_MAX_INCLUDES) {
		scan_error(sc, t, "@include \"%s\": more than %d @include directives in all, more "
			   "than popbsmtp checks", name, SCAN_MAX_INCLUDES);
		sc->includes++; /* said once; the file is refused anyway */
		return;
	}
	if (sc->includes > SCAN_MAX_INCLUDES)
		return;
	if (sc->depth == SCAN_MAX_DEPTH) {
		scan_error(sc, t, "@include \"%s\": nested more than %d levels deep", name,
			   SCAN_MAX_DEPTH);
		return;
	}
	if ((target = malloc(strlen(sc->dir) + strlen(name) + 2)) == NULL) {
		scan_error(sc, t, "@include \"%s\": out of memory", name);
		return;
	}
	sprintf(target, "%s/%s", sc->dir, name);
	sc->includes++;
	sc->depth++;
	scan_file(sc, target, t, name);
	sc->depth--;
	free(target);
}

/* An @include line at T's cursor, LEN bytes up to its opening quote. */
static void scan_include(struct scan *sc, struct scan_text *t, size_t len)
{
	char *name = malloc((size_t)(t->end - t->p) + 1);
	const char *why;

	if (name == NULL) {
		scan_error(sc, t, "@include: out of memory");
		return;
	}
	scan_skip(t, len);
	if ((why = include_name(t, name)) != NULL) {
		scan_error(sc, t, "@include: %s", why);
		while (t->p < t->end && *t->p != '\n')
			t->p++;
	} else {
		scan_follow(sc, t, name);
	}
	free(name);
}

/* One token of libconfig's INITIAL state at T's cursor. Names are read whole, so digits
 * inside them are no number; what is not a comment, string, name, number or @include is
 * taken one byte at a time, as no other token can hide a quote or a comment. */
static void scan_code(struct scan *sc, struct scan_text *t)
{
	const char *p = t->p;
	char next = p + 1 < t->end ? p[1] : '\0';
	size_t n;

	if ((n = include_open(t)) > 0) {
		scan_include(sc, t, n);
	} else if (*p == '/' && next == '*') {
		scan_skip(t, 2);
		sc->state = SCAN_COMMENT;
	} else if (*p == '#' || (*p == '/' && next == '/')) {
		while (t->p < t->end && *t->p != '\n')
			t->p++;
	} else if (*p == '"') {
		scan_skip(t, 1);
		sc->state = SCAN_STRING;
	} else if (isalpha((unsigned char)*p) || *p == '*') {
		while (t->p < t->end && (isalnum((unsigned char)*t->p) || *t->p == '-' ||
						   *t->p == '_' || *t->p == '*'))
			t->p++;
	} else if (strchr("+-.0123456789", *p) == NULL || (n = scan_number(sc, t)) == 0) {
		scan_skip(t, 1);
	} else {
		scan_skip(t, n);
	}
}

/* Scan the text of T to its end, in whatever state the stream is. */
static void scan_run(struct scan *sc, struct scan_text *t)
{
	while (t->p < t->end) {
		if (sc->state == SCAN_CODE) {
			scan_code(sc, t);
		} else if (sc->state == SCAN_COMMENT) {
			if (*t->p == '*' && t->p + 1 < t->end && t->p[1] == '/')
				sc->state = SCAN_CODE;
			scan_skip(t, sc->state == SCAN_CODE ? 2 : 1);
		} else {
			if (*t->p == '"')
				sc->state = SCAN_CODE;
			scan_skip(t, *t->p == '\\' ? 2 : 1);
		}
	}
}

/* The whole of PATH into *TEXT and *LEN, if it is a regular file of at most
 * SCAN_MAX_BYTES. Opened without blocking: a FIFO is found out, not waited for.
 * Returns NULL, or why not. */
static const char *scan_read(const char *path, char **text, size_t *len)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY), err;
	const char *why = NULL;
	struct stat st;
	ssize_t n = 1;

	*text = NULL;
	*len = 0;
	if (fd < 0)
		return strerror(errno);
	if (fstat(fd, &st) != 0)
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	else if (st.st_size > SCAN_MAX_BYTES)
		why = "larger than 1 MiB, more than popbsmtp checks";
	else if ((*text = malloc((size_t)st.st_size + 1)) == NULL)
		why = "out of memory";
	while (why == NULL && n > 0 && *len <= (size_t)st.st_size)
		if ((n = read(fd, *text + *len, (size_t)st.st_size + 1 - *len)) > 0)
			*len += (size_t)n;
	err = errno;
	if (why == NULL && n < 0)
		why = strerror(err);
	else if (why == NULL && *len > (size_t)st.st_size)
		why = "changed while it was read";
	close(fd);
	return why;
}

/* Read PATH, included as NAME from FROM's current line (FROM NULL: the main file), and
 * scan it with everything it includes. */
static void scan_file(struct scan *sc, const char *path, const struct scan_text *from,
		      const char *name)
{
	struct scan_text t = {path, NULL, NULL, NULL, 1};
	const char *why;
	char *text;
	size_t len;

	if ((why = scan_read(path, &text, &len)) != NULL) {
		if (from != NULL) {
			scan_error(sc, from, "@include \"%s\": %s", name, why);
		} else {
			pbs_config_error(sc->r, "%s: cannot read: %s", path, why);
			sc->bad++;
		}
		free(text);
		return;
	}
	t.start = t.p = text;
	t.end = text + len;
	scan_run(sc, &t);
	free(text);
}

int pbs_prescan(const char *path, const char *dir, pbs_config_report *r)
{
	struct scan sc = {dir, SCAN_CODE, 0, 0, 0, r};

	scan_file(&sc, path, NULL, NULL);
	return sc.bad;
}
