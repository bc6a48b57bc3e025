/*
 * test_config_docs.c — every key popbsmtp.conf accepts is documented in popbsmtp.conf(5).
 * The page is read from PBS_DOCS_MAN (or the first argument). A key "group.key" counts
 * as documented when, after troff font and escape sequences are removed:
 *   - "group.key" appears anywhere as a whole word (e.g. ".B redis.timeout_ms"), or
 *   - "key" appears as a whole word inside the group's section: a .SH or .SS heading
 *     whose text names the group as a word, any case (".SS redis", ".SH \"REDIS GROUP\""),
 *     up to the next heading of the same or a higher level (.SH ends both kinds).
 * "Whole word" means not glued to letters, digits or '_' on either side, so
 * "milter.socket_mode" does not document "milter.socket".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "popbsmtp/config.h"

static const char *man_path = PBS_DOCS_MAN;

/* One line of the page with troff escapes removed; LEVEL 1 for .SH, 2 for .SS, else 0. */
struct line {
	char *text;
	int level;
};

struct page {
	struct line *lines;
	size_t count;
};

static bool is_word(int c)
{
	return isalnum(c) || c == '_';
}

/* Copy LINE without troff escapes: fonts and zero-width marks vanish, \- and \_ become
 * '-' and '_', special characters become a space, \" ends the line. */
static char *clean(const char *in, size_t len)
{
	char *out = malloc(len + 1);
	size_t i = 0, o = 0;

	assert_non_null(out);
	while (i < len) {
		char c = in[i++];

		if (c != '\\' || i >= len) {
			out[o++] = c;
			continue;
		}
		c = in[i++];
		switch (c) {
		case '"':
			i = len;
			break;
		case 'f':
		case '*':
			if (i < len && in[i] == '(')
				i += 3;
			else if (i < len && in[i] == '[')
				while (i < len && in[i++] != ']')
					;
			else
				i++;
			if (c == '*')
				out[o++] = ' ';
			break;
		case '(':
			i += 2;
			out[o++] = ' ';
			break;
		case '[':
			while (i < len && in[i++] != ']')
				;
			out[o++] = ' ';
			break;
		case '&':
		case '%':
		case ':':
		case '/':
		case ',':
		case '^':
		case '|':
		case ')':
			break;
		case 'e':
		case '\\':
			out[o++] = '\\';
			break;
		case '~':
		case ' ':
		case '0':
			out[o++] = ' ';
			break;
		default: /* \- \_ \. and the like: the character itself */
			out[o++] = c;
			break;
		}
	}
	out[o] = '\0';
	return out;
}

/* Heading level of a raw line: .SH/.Sh → 1, .SS/.Ss → 2, else 0. Sets *REST to its text. */
static int heading_level(const char *raw, size_t len, size_t *rest)
{
	int level = 0;

	if (len < 3 || (raw[0] != '.' && raw[0] != '\''))
		return 0;
	if (strncasecmp(raw + 1, "SH", 2) == 0)
		level = 1;
	else if (strncasecmp(raw + 1, "SS", 2) == 0)
		level = 2;
	if (level == 0 || (len > 3 && raw[3] != ' ' && raw[3] != '\t'))
		return 0;
	*rest = 3;
	return level;
}

static void page_parse(const char *text, struct page *p)
{
	const char *s = text;
	size_t cap = 0;

	p->lines = NULL;
	p->count = 0;
	while (*s != '\0') {
		const char *nl = strchr(s, '\n');
		size_t len = nl ? (size_t)(nl - s) : strlen(s), rest = 0;
		int level = heading_level(s, len, &rest);

		if (p->count == cap) {
			cap = cap ? cap * 2 : 256;
			p->lines = realloc(p->lines, cap * sizeof *p->lines);
			assert_non_null(p->lines);
		}
		p->lines[p->count].level = level;
		p->lines[p->count].text = clean(s + rest, len - rest);
		p->count++;
		s = nl ? nl + 1 : s + len;
	}
	/* ".SH" alone takes its heading text from the next line. */
	{
		size_t i;
		for (i = 0; i + 1 < p->count; i++) {
			if (p->lines[i].level != 0 &&
			    p->lines[i].text[strspn(p->lines[i].text, " \t\"")] == '\0' &&
			    p->lines[i + 1].level == 0) {
				free(p->lines[i].text);
				p->lines[i].text = p->lines[i + 1].text;
				p->lines[i + 1].text = calloc(1, 1);
				assert_non_null(p->lines[i + 1].text);
			}
		}
	}
}

static void page_free(struct page *p)
{
	size_t i;

	for (i = 0; i < p->count; i++)
		free(p->lines[i].text);
	free(p->lines);
}

/* NEEDLE in HAY as a whole word (case-insensitively when NOCASE). */
static bool has_word(const char *hay, const char *needle, bool nocase)
{
	size_t n = strlen(needle);
	const char *h;

	for (h = hay; *h != '\0'; h++) {
		if ((nocase ? strncasecmp(h, needle, n) : strncmp(h, needle, n)) != 0)
			continue;
		if ((h == hay || !is_word((unsigned char)h[-1])) && !is_word((unsigned char)h[n]))
			return true;
	}
	return false;
}

/* "group.key" anywhere, with nothing but a non-word, non-dot character before it. */
static bool has_dotted(const char *hay, const char *name)
{
	size_t n = strlen(name);
	const char *h;

	for (h = strstr(hay, name); h != NULL; h = strstr(h + 1, name))
		if ((h == hay || (!is_word((unsigned char)h[-1]) && h[-1] != '.')) &&
		    !is_word((unsigned char)h[n]))
			return true;
	return false;
}

/* Is NAME ("group.key") documented in P, by either convention? */
static bool documented(const struct page *p, const char *name)
{
	char group[64];
	const char *dot = strchr(name, '.'), *key;
	size_t i, j;

	assert_non_null(dot);
	assert_true((size_t)(dot - name) < sizeof group);
	memcpy(group, name, (size_t)(dot - name));
	group[dot - name] = '\0';
	key = dot + 1;
	for (i = 0; i < p->count; i++)
		if (has_dotted(p->lines[i].text, name))
			return true;
	for (i = 0; i < p->count; i++) {
		if (p->lines[i].level == 0 || !has_word(p->lines[i].text, group, true))
			continue;
		for (j = i + 1; j < p->count; j++) {
			if (p->lines[j].level != 0 && p->lines[j].level <= p->lines[i].level)
				break;
			if (has_word(p->lines[j].text, key, false))
				return true;
		}
	}
	return false;
}

static bool documented_in(const char *text, const char *name)
{
	struct page p;
	bool yes;

	page_parse(text, &p);
	yes = documented(&p, name);
	page_free(&p);
	return yes;
}

static char *read_all(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (f == NULL)
		return NULL;
	do {
		if (cap - len < 4096) {
			cap = cap ? cap * 2 : 65536;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
	} while (n > 0);
	fclose(f);
	buf[len] = '\0';
	return buf;
}

/* The rules above, on small pages, so a pass of the real check means something. */
static void test_matcher(void **state)
{
	(void)state;
	/* the dotted form, in any font */
	assert_true(documented_in(".TP\n.B redis.host\nThe server.\n", "redis.host"));
	assert_true(documented_in("Set \\fBlease.ttl\\fR in seconds.\n", "lease.ttl"));
	assert_true(documented_in("\\fIredis.timeout\\_ms\\fP.\n", "redis.timeout_ms"));
	assert_true(documented_in("see \\f(CWmilter.pool_size\\fR\n", "milter.pool_size"));
	assert_false(documented_in(".B milter.socket_mode\n", "milter.socket"));
	assert_false(documented_in(".B xmilter.socket\n", "milter.socket"));
	assert_false(documented_in(".B lease.ttl\n", "redis.ttl"));
	assert_false(documented_in(".\\\" redis.host is not documented yet\n", "redis.host"));
	/* the key inside its group's section */
	assert_true(documented_in(".SH REDIS\n.TP\n.B host\nThe server.\n", "redis.host"));
	assert_true(documented_in(".SS \"The redis group\"\n.IP \\fBport\\fR\n", "redis.port"));
	assert_true(documented_in(".SH\nredis\n.TP\n.B port\n", "redis.port"));
	assert_true(documented_in(".SH REDIS\n.SS host\nThe server.\n", "redis.host"));
	assert_false(documented_in(".SH REDIS\n.SH LEASE\n.B host\n", "redis.host"));
	assert_false(documented_in(".SS redis\n.SS lease\n.B host\n", "redis.host"));
	assert_false(documented_in(".SH LEASE\n.B host\n", "redis.host"));
	assert_false(documented_in(".SH REDIS\n.B socket_mode\n", "redis.socket"));
	assert_false(documented_in(".SH REDISX\n.B host\n", "redis.host"));
	assert_false(documented_in(".B host\n.SH REDIS\n", "redis.host"));
	assert_false(documented_in("", "redis.host"));
}

static void test_every_key_documented(void **state)
{
	const char *const *names = pbs_config_key_names();
	char *text = read_all(man_path);
	struct page p;
	size_t i, missing = 0;

	(void)state;
	if (text == NULL)
		fail_msg("cannot read the man page %s", man_path);
	page_parse(text, &p);
	for (i = 0; names[i] != NULL; i++) {
		if (!documented(&p, names[i])) {
			print_error("%s: key %s is not documented (write \"%s\", or \"%s\" under a "
			            ".SH/.SS heading naming %.*s)\n",
			            man_path, names[i], names[i], strchr(names[i], '.') + 1,
			            (int)(strchr(names[i], '.') - names[i]), names[i]);
			missing++;
		}
	}
	page_free(&p);
	free(text);
	assert_true(i > 0);
	if (missing)
		fail_msg("%zu of %zu keys are missing from %s", missing, i, man_path);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_matcher),
	    cmocka_unit_test(test_every_key_documented),
	};

	if (argc > 1)
		man_path = argv[1];
	return cmocka_run_group_tests_name("config_docs", tests, NULL, NULL);
}
