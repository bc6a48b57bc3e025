/*
 * config.c — load popbsmtp.conf through libconfig and check it against the key table
 * below. libconfig has no schema, so the tree is walked by hand: unknown keys, wrong
 * types, out-of-range numbers and malformed networks are all reported with the file and
 * line they come from, every one of them, before any program acts on the file.
 */
#include "popbsmtp/config.h"

#include <libconfig.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "popbsmtp/lease.h"
#include "popbsmtp/listen.h"
#include "popbsmtp/log.h"
#include "popbsmtp/policy.h"
#include "prescan.h"

enum key_type {
	KEY_INT,
	KEY_STRING,
	KEY_ENUM,
	KEY_MODE,
	KEY_CIDRS,
	KEY_STRINGS,
	KEY_NODES,
	KEY_DOMAINS
};

struct key_spec {
	const char *group;
	const char *name;
	enum key_type type;
	size_t offset;       /* of the field inside pbs_config */
	long long min, max;  /* KEY_INT bounds; KEY_STRING length bounds */
	long long def_int;   /* KEY_INT, KEY_ENUM and KEY_MODE default */
	const char *def_str; /* KEY_STRING default (NULL: unset) */
	const char *const *words; /* KEY_ENUM names; list defaults for KEY_CIDRS/KEY_STRINGS */
};

static const char *const on_error_words[] = {"tempfail", "reject", "accept", NULL};
static const char *const off_on_words[] = {"off", "on", NULL};
static const char *const sender_words[] = {"any", "domain", "address", NULL};
static const char *const trusted_default[] = {"127.0.0.0/8", "::1/128", NULL};
static const char *const empty_list[] = {NULL};

#define AT(field) offsetof(pbs_config, field)

/* lease.refresh when the file does not set it: derived from lease.ttl once it is known. */
#define REFRESH_DERIVED (-1)

/* Every key popbsmtp.conf may hold; docs/popbsmtp.conf.5 documents each (a test checks). */
static const struct key_spec keys[] = {
	{"redis", "host", KEY_STRING, AT(redis.host), 1, 255, 0, "127.0.0.1", NULL},
	{"redis", "port", KEY_INT, AT(redis.port), 1, 65535, 6379, NULL, NULL},
	{"redis", "socket", KEY_STRING, AT(redis.socket), 1, 107, 0, NULL, NULL},
	{"redis", "password", KEY_STRING, AT(redis.password), 0, 512, 0, "", NULL},
	{"redis", "username", KEY_STRING, AT(redis.username), 0, 255, 0, "", NULL},
	{"redis", "database", KEY_INT, AT(redis.database), 0, 1000000, 0, NULL, NULL},
	{"redis", "prefix", KEY_STRING, AT(redis.prefix), 0, PBS_PREFIX_MAX, 0, "popbsmtp:", NULL},
	{"redis", "timeout_ms", KEY_INT, AT(redis.timeout_ms), 1, 60000, 250, NULL, NULL},
	{"redis.sentinel", "master", KEY_STRING, AT(redis.sentinel_master), 1, 255, 0, "mymaster",
	 NULL},
	{"redis.sentinel", "nodes", KEY_NODES, AT(redis.sentinel_nodes), 0, 0, 0, NULL, empty_list},
	{"redis.sentinel", "password", KEY_STRING, AT(redis.sentinel_password), 0, 512, 0, "",
	 NULL},
	{"lease", "ttl", KEY_INT, AT(lease.ttl), 1, 31 * 86400, 1800, NULL, NULL},
	/* The default, REFRESH_DERIVED, means "lease.ttl / 6": see derive_defaults(). */
	{"lease", "refresh", KEY_INT, AT(lease.refresh), 0, 31 * 86400 - 1, REFRESH_DERIVED, NULL,
	 NULL},
	{"lease", "ipv4_prefix", KEY_INT, AT(lease.ipv4_prefix), 0, 32, 32, NULL, NULL},
	{"lease", "ipv6_prefix", KEY_INT, AT(lease.ipv6_prefix), 0, 128, 64, NULL, NULL},
	{"lease", "never", KEY_CIDRS, AT(lease.never), 0, 0, 0, NULL, empty_list},
	{"lease", "max_users_per_address", KEY_INT, AT(lease.max_users_per_address), 0, 1000000, 0,
	 NULL, NULL},
	{"lease", "sender", KEY_ENUM, AT(lease.sender), 0, 0, PBS_SENDER_ANY, NULL, sender_words},
	{"milter", "socket", KEY_STRING, AT(milter.socket), 1, 255, 0,
	 "unix:/run/popbsmtp/milter.sock", NULL},
	{"milter", "socket_mode", KEY_MODE, AT(milter.socket_mode), 0, 0777, 0660, NULL, NULL},
	{"milter", "socket_group", KEY_STRING, AT(milter.socket_group), 0, 64, 0, "", NULL},
	{"milter", "user", KEY_STRING, AT(milter.user), 0, 64, 0, "popbsmtp", NULL},
	{"milter", "pidfile", KEY_STRING, AT(milter.pidfile), 0, 255, 0,
	 "/run/popbsmtp/popbsmtp-milter.pid", NULL},
	{"milter", "trusted", KEY_CIDRS, AT(milter.trusted), 0, 0, 0, NULL, trusted_default},
	{"milter", "relay_mailers", KEY_STRINGS, AT(milter.relay_mailers), 0, 0, 0, NULL,
	 empty_list},
	{"milter", "local_mailers", KEY_STRINGS, AT(milter.local_mailers), 0, 0, 0, NULL,
	 empty_list},
	{"milter", "local_domains", KEY_DOMAINS, AT(milter.local_domains), 0, 0, 0, NULL,
	 empty_list},
	{"milter", "on_store_error", KEY_ENUM, AT(milter.on_store_error), 0, 0,
	 PBS_ON_ERROR_TEMPFAIL, NULL, on_error_words},
	{"milter", "reject_text", KEY_STRING, AT(milter.reject_text), 1, 400, 0,
	 "Relay access denied", NULL},
	{"milter", "pool_size", KEY_INT, AT(milter.pool_size), 1, 1024, 64, NULL, NULL},
	{"policy", "listen", KEY_STRING, AT(policy.listen), 1, 107 + 5, 0,
	 "unix:/run/popbsmtp-policy/policy.sock", NULL},
	{"policy", "socket_mode", KEY_MODE, AT(policy.socket_mode), 0, 0777, 0660, NULL, NULL},
	{"policy", "socket_group", KEY_STRING, AT(policy.socket_group), 0, 64, 0, "", NULL},
	{"policy", "user", KEY_STRING, AT(policy.user), 0, 64, 0, "popbsmtp", NULL},
	{"policy", "max_connections", KEY_INT, AT(policy.max_connections), 1, 4096, 256, NULL,
	 NULL},
	{"policy", "idle_timeout", KEY_INT, AT(policy.idle_timeout), 1, 86400, 600, NULL, NULL},
	{"usage", "retention_days", KEY_INT, AT(usage.retention_days), 1, 3660, 30, NULL, NULL},
	{"usage", "flush_interval", KEY_INT, AT(usage.flush_interval), 1, 3600, 10, NULL, NULL},
	{"usage", "host", KEY_STRING, AT(usage.host), 0, 64, 0, "", NULL},
	{"usage", "trace_header", KEY_ENUM, AT(usage.trace_header), 0, 0, 0, NULL, off_on_words},
	{"usage", "trace_secret", KEY_STRING, AT(usage.trace_secret), 0, 64, 0, "", NULL},
	/* Defaults: docs/abuse.md says why these numbers. */
	{"limits", "user_recipients_per_hour", KEY_INT, AT(limits.user_recipients_per_hour), 0,
	 1000000, 300, NULL, NULL},
	{"limits", "lease_recipients_per_hour", KEY_INT, AT(limits.lease_recipients_per_hour), 0,
	 1000000, 600, NULL, NULL},
	{"limits", "suspend_after", KEY_INT, AT(limits.suspend_after), 0, 1000000, 0, NULL, NULL},
	{"limits", "suspend_for", KEY_INT, AT(limits.suspend_for), 1, 365 * 86400, 86400, NULL,
	 NULL},
};

#define NKEYS (sizeof keys / sizeof keys[0])

/* Groups, nested ones with their full dotted name. */
static const char *const groups[] = {"redis",	"redis.sentinel", "lease", "milter",
				     "policy", "usage",		  "limits", NULL};

/* Directory part of PATH for resolving relative @include names ("." if none). */
static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (slash == NULL)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* Where a problem was found: FILE:LINE of the setting. */
struct site {
	char file[512];
	int line;
};

/* Append a formatted message to LIST; out of memory is fatal to nothing, the message is lost. */
static void strlist_addf(pbs_strlist *list, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void strlist_addf(pbs_strlist *list, const char *fmt, ...)
{
	char buf[1024];
	char **items;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	items = realloc(list->items, (list->count + 1) * sizeof *items);
	if (items == NULL)
		return;
	list->items = items;
	if ((items[list->count] = strdup(buf)) != NULL)
		list->count++;
}

void pbs_config_error(pbs_config_report *r, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	strlist_addf(&r->errors, "%s", buf);
}

static void strlist_free(pbs_strlist *list)
{
	size_t i;

	for (i = 0; i < list->count; i++)
		free(list->items[i]);
	free(list->items);
	list->items = NULL;
	list->count = 0;
}

static void *field(pbs_config *cfg, const struct key_spec *k)
{
	return (char *)cfg + k->offset;
}

/* Report a problem with setting S ("FILE:LINE: group.key: text"). */
static void key_error(pbs_config_report *r, const struct site *at, const struct key_spec *k,
		      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void key_error(pbs_config_report *r, const struct site *at, const struct key_spec *k,
		      const char *fmt, ...)
{
	char text[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	strlist_addf(&r->errors, "%s:%d: %s.%s: %s", at->file, at->line, k->group, k->name, text);
}

/* Set list field of K to the NULL-terminated WORDS; CIDR words were checked at build time. */
static int set_list(pbs_config *cfg, const struct key_spec *k, const char *const *words,
		    size_t n)
{
	size_t i;

	if (k->type == KEY_CIDRS) {
		pbs_cidr_list *list = field(cfg, k);
		free(list->items);
		list->items = calloc(n ? n : 1, sizeof *list->items);
		list->count = 0;
		if (list->items == NULL)
			return -1;
		for (i = 0; i < n; i++)
			if (pbs_cidr_parse(words[i], &list->items[list->count]) == 0)
				list->count++;
	} else { /* KEY_STRINGS, KEY_NODES, KEY_DOMAINS */
		pbs_strlist *list = field(cfg, k);
		strlist_free(list);
		for (i = 0; i < n; i++)
			strlist_addf(list, "%s", words[i]);
	}
	return 0;
}

static size_t words_count(const char *const *words)
{
	size_t n = 0;

	while (words[n] != NULL)
		n++;
	return n;
}

/* Put K's default into CFG. */
static int set_default(pbs_config *cfg, const struct key_spec *k)
{
	char **s;

	switch (k->type) {
	case KEY_INT:
	case KEY_ENUM:
	case KEY_MODE:
		*(int *)field(cfg, k) = (int)k->def_int;
		return 0;
	case KEY_STRING:
		s = field(cfg, k);
		*s = k->def_str ? strdup(k->def_str) : NULL;
		return (k->def_str && *s == NULL) ? -1 : 0;
	case KEY_CIDRS:
	case KEY_STRINGS:
	case KEY_NODES:
	case KEY_DOMAINS:
		return set_list(cfg, k, k->words, words_count(k->words));
	}
	return -1;
}

/* Defaults that depend on other keys. lease.refresh: a sixth of lease.ttl (300 s for the
 * default 1800), so one or two failed refreshes in a row cost no lease; at least 1 s, and
 * off for a ttl of 1 s, where no refresh can come before the expiry. */
static void derive_defaults(pbs_config *cfg)
{
	if (cfg->lease.refresh != REFRESH_DERIVED)
		return;
	cfg->lease.refresh = cfg->lease.ttl / 6;
	if (cfg->lease.refresh == 0 && cfg->lease.ttl > 1)
		cfg->lease.refresh = 1;
}

/* Every table default; lease.refresh still REFRESH_DERIVED (derive_defaults() after the
 * file was read). NULL when out of memory. */
static pbs_config *config_table_defaults(void)
{
	pbs_config *cfg = calloc(1, sizeof *cfg);
	size_t i;

	if (cfg == NULL)
		return NULL;
	for (i = 0; i < NKEYS; i++) {
		if (set_default(cfg, &keys[i]) != 0) {
			pbs_config_free(cfg);
			return NULL;
		}
	}
	return cfg;
}

pbs_config *pbs_config_defaults(void)
{
	pbs_config *cfg = config_table_defaults();

	if (cfg != NULL)
		derive_defaults(cfg);
	return cfg;
}

void pbs_config_free(pbs_config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < NKEYS; i++) {
		void *f = field(cfg, &keys[i]);
		if (keys[i].type == KEY_STRING)
			free(*(char **)f);
		else if (keys[i].type == KEY_CIDRS)
			free(((pbs_cidr_list *)f)->items);
		else if (keys[i].type == KEY_STRINGS || keys[i].type == KEY_NODES ||
			 keys[i].type == KEY_DOMAINS)
			strlist_free(f);
	}
	free(cfg->path);
	free(cfg);
}

void pbs_config_report_free(pbs_config_report *report)
{
	strlist_free(&report->errors);
	strlist_free(&report->warnings);
}

void pbs_config_report_print(const pbs_config_report *report)
{
	char safe[PBS_LOG_UNCTRL_MAX];
	size_t i;

	/* Messages quote values from the file: one line each on the terminal all the same. */
	for (i = 0; i < report->warnings.count; i++)
		fprintf(stderr, "%s\n", pbs_log_unctrl(report->warnings.items[i], safe, sizeof safe));
	for (i = 0; i < report->errors.count; i++)
		fprintf(stderr, "%s\n", pbs_log_unctrl(report->errors.items[i], safe, sizeof safe));
}

static const struct key_spec *find_key(const char *group, const char *name)
{
	size_t i;

	for (i = 0; i < NKEYS; i++)
		if (strcmp(keys[i].group, group) == 0 && strcmp(keys[i].name, name) == 0)
			return &keys[i];
	return NULL;
}

/* FILE as a user can find it: libconfig names an included file as written in @include,
 * which is relative to the directory of the main file PATH. */
static void display_file(const char *file, const char *path, char *out, size_t len)
{
	char *dir;

	if (file == NULL || file[0] == '/' || strcmp(file, path) == 0 ||
	    (dir = dir_of(path)) == NULL) {
		snprintf(out, len, "%s", file ? file : path);
		return;
	}
	snprintf(out, len, "%s/%s", dir, file);
	free(dir);
}

static struct site site_of(const config_setting_t *s, const char *path)
{
	struct site at;

	display_file(config_setting_source_file(s), path, at.file, sizeof at.file);
	at.line = (int)config_setting_source_line(s);
	return at;
}

/* An integer setting S within K's bounds into *OUT. Returns 0 or -1 (reported). */
static int read_int(const config_setting_t *s, const struct key_spec *k, const struct site *at,
		    pbs_config_report *r, long long *out)
{
	int type = config_setting_type(s);

	/* config_lookup_int() turns a 64-bit value into 0; read int64 and check bounds here. */
	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
		key_error(r, at, k, "expected an integer");
		return -1;
	}
	*out = config_setting_get_int64(s);
	if (*out < k->min || *out > k->max) {
		key_error(r, at, k, "%lld is out of range (%lld..%lld)", *out, k->min, k->max);
		return -1;
	}
	return 0;
}

static int apply_int(pbs_config *cfg, const config_setting_t *s, const struct key_spec *k,
		     const struct site *at, pbs_config_report *r)
{
	long long v;

	if (read_int(s, k, at, r, &v) != 0)
		return -1;
	*(int *)field(cfg, k) = (int)v;
	return 0;
}

/* A string setting S into *OUT (owned by libconfig), type-checked. */
static int read_string(const config_setting_t *s, const struct key_spec *k,
		       const struct site *at, pbs_config_report *r, const char **out)
{
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		key_error(r, at, k, "expected a string");
		return -1;
	}
	*out = config_setting_get_string(s);
	return 0;
}

static int apply_string(pbs_config *cfg, const config_setting_t *s, const struct key_spec *k,
			const struct site *at, pbs_config_report *r)
{
	const char *v;
	char **dst = field(cfg, k);
	size_t len;

	if (read_string(s, k, at, r, &v) != 0)
		return -1;
	len = strlen(v);
	if ((long long)len < k->min || (long long)len > k->max) {
		key_error(r, at, k, "length %zu is out of range (%lld..%lld)", len, k->min, k->max);
		return -1;
	}
	free(*dst);
	*dst = strdup(v);
	return *dst ? 0 : -1;
}

/* K's words as "a, b, c" into OUT, for the message about a word that is not one of them. */
static const char *enum_words(const struct key_spec *k, char *out, size_t len)
{
	size_t used = 0;
	int i;

	out[0] = '\0';
	for (i = 0; k->words[i] != NULL && used < len; i++)
		used += (size_t)snprintf(out + used, len - used, "%s%s", i ? ", " : "", k->words[i]);
	return out;
}

static int apply_enum(pbs_config *cfg, const config_setting_t *s, const struct key_spec *k,
		      const struct site *at, pbs_config_report *r)
{
	char list[128];
	const char *v;
	int i;

	if (read_string(s, k, at, r, &v) != 0)
		return -1;
	for (i = 0; k->words[i] != NULL; i++) {
		if (strcmp(v, k->words[i]) == 0) {
			*(int *)field(cfg, k) = i;
			return 0;
		}
	}
	key_error(r, at, k, "'%s' is not one of %s", v, enum_words(k, list, sizeof list));
	return -1;
}

static int apply_mode(pbs_config *cfg, const config_setting_t *s, const struct key_spec *k,
		      const struct site *at, pbs_config_report *r)
{
	const char *v;
	char *end;
	long mode;

	/* A string, because libconfig reads "0660" as decimal 660. */
	if (read_string(s, k, at, r, &v) != 0)
		return -1;
	mode = strtol(v, &end, 8);
	if (*v == '\0' || *end != '\0' || mode < 0 || mode > k->max) {
		key_error(r, at, k, "'%s' is not an octal file mode such as \"0660\"", v);
		return -1;
	}
	*(int *)field(cfg, k) = (int)mode;
	return 0;
}

/* A list or array of strings; for KEY_CIDRS each must parse as a network. */
static int apply_list(pbs_config *cfg, const config_setting_t *s, const struct key_spec *k,
		      const struct site *at, pbs_config_report *r)
{
	int type = config_setting_type(s), n, i, bad = 0;
	const char **words;

	if (type != CONFIG_TYPE_ARRAY && type != CONFIG_TYPE_LIST) {
		key_error(r, at, k, "expected a list of strings, e.g. [ \"a\", \"b\" ]");
		return -1;
	}
	n = config_setting_length(s);
	words = calloc((size_t)n + 1, sizeof *words);
	if (words == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		char host[256];
		pbs_cidr c;
		int port;

		words[i] = config_setting_get_string(e);
		if (words[i] == NULL) {
			key_error(r, at, k, "element %d is not a string", i + 1);
			bad = 1;
		} else if (k->type == KEY_CIDRS && pbs_cidr_parse(words[i], &c) != 0) {
			key_error(r, at, k, "'%s' is not an address or network (ADDR/BITS)",
				  words[i]);
			bad = 1;
		} else if (k->type == KEY_NODES &&
			   pbs_addr_split_hostport(words[i], host, sizeof host, &port) != 0) {
			key_error(r, at, k, "'%s' is not HOST:PORT", words[i]);
			bad = 1;
		} else if (k->type == KEY_DOMAINS && !pbs_policy_plain_domain(words[i])) {
			key_error(r, at, k, "'%s' is not a domain name such as \"backup.example\" "
				  "(letters, digits, '-', no trailing dot)", words[i]);
			bad = 1;
		}
	}
	if (!bad)
		bad = set_list(cfg, k, words, (size_t)n);
	free(words);
	return bad ? -1 : 0;
}

static void apply_setting(pbs_config *cfg, const config_setting_t *s, const struct key_spec *k,
			  const char *path, pbs_config_report *r)
{
	struct site at = site_of(s, path);

	switch (k->type) {
	case KEY_INT:
		apply_int(cfg, s, k, &at, r);
		break;
	case KEY_STRING:
		apply_string(cfg, s, k, &at, r);
		break;
	case KEY_ENUM:
		apply_enum(cfg, s, k, &at, r);
		break;
	case KEY_MODE:
		apply_mode(cfg, s, k, &at, r);
		break;
	case KEY_CIDRS:
	case KEY_STRINGS:
	case KEY_NODES:
	case KEY_DOMAINS:
		apply_list(cfg, s, k, &at, r);
		break;
	}
}

static bool known_group(const char *name)
{
	int i;

	for (i = 0; groups[i] != NULL; i++)
		if (strcmp(groups[i], name) == 0)
			return true;
	return false;
}

/* Apply the members of group G, whose full dotted name is GNAME; nested groups recurse. */
static void walk_members(pbs_config *cfg, const config_setting_t *g, const char *gname,
			 const char *path, pbs_config_report *r)
{
	int i, n = config_setting_length(g);
	char nested[64];

	for (i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(s);
		const struct key_spec *k = find_key(gname, name);
		struct site at;

		snprintf(nested, sizeof nested, "%s.%s", gname, name);
		if (k != NULL) {
			apply_setting(cfg, s, k, path, r);
		} else if (config_setting_is_group(s) && known_group(nested)) {
			walk_members(cfg, s, nested, path, r);
		} else {
			at = site_of(s, path);
			strlist_addf(&r->errors, "%s:%d: unknown setting '%s'", at.file, at.line,
				     nested);
		}
	}
}

/* Check one top-level group G and apply its members. */
static void walk_group(pbs_config *cfg, const config_setting_t *g, const char *path,
		       pbs_config_report *r)
{
	const char *gname = config_setting_name(g);
	struct site at = site_of(g, path);

	if (gname == NULL || !known_group(gname) || strchr(gname, '.') != NULL) {
		strlist_addf(&r->errors, "%s:%d: unknown setting '%s' (expected redis, lease, "
			     "milter, policy or usage)", at.file, at.line, gname ? gname : "?");
		return;
	}
	if (!config_setting_is_group(g)) {
		strlist_addf(&r->errors, "%s:%d: %s: expected a group { ... }", at.file, at.line,
			     gname);
		return;
	}
	walk_members(cfg, g, gname, path, r);
}

/* Rules that involve more than one key. */
static void check_combinations(const config_t *lc, const char *path, pbs_config_report *r)
{
	const config_setting_t *sock = config_lookup(lc, "redis.socket");

	const config_setting_t *sentinel = config_lookup(lc, "redis.sentinel");
	const config_setting_t *nodes = config_lookup(lc, "redis.sentinel.nodes");
	struct site at;

	if (sock != NULL && config_lookup(lc, "redis.host") != NULL) {
		at = site_of(sock, path);
		strlist_addf(&r->errors, "%s:%d: redis: set either host or socket, not both",
			     at.file, at.line);
	}
	if (sentinel == NULL)
		return;
	at = site_of(sentinel, path);
	if (sock != NULL || config_lookup(lc, "redis.host") != NULL)
		strlist_addf(&r->errors, "%s:%d: redis: with sentinel the master is discovered; "
			     "remove host/socket", at.file, at.line);
	if (nodes == NULL || config_setting_length(nodes) == 0)
		strlist_addf(&r->errors, "%s:%d: redis.sentinel: nodes must list at least one "
			     "\"host:port\"", at.file, at.line);
}

/* lease.refresh against lease.ttl: a refresh must come before the lease runs out, and one
 * that comes only just before leaves no room for a single failed refresh. */
static void check_refresh(const pbs_config *cfg, const config_t *lc, const char *path,
			  pbs_config_report *r)
{
	const config_setting_t *s = config_lookup(lc, "lease.refresh");
	struct site at;

	if (s == NULL)
		s = config_lookup(lc, "lease.ttl");
	if (s == NULL || cfg->lease.refresh == 0)
		return;
	at = site_of(s, path);
	if (cfg->lease.refresh >= cfg->lease.ttl)
		strlist_addf(&r->errors, "%s:%d: lease.refresh: %d must be less than lease.ttl (%d), "
			     "or 0 to turn refreshing off", at.file, at.line, cfg->lease.refresh,
			     cfg->lease.ttl);
	else if (cfg->lease.refresh * 2 > cfg->lease.ttl)
		strlist_addf(&r->warnings, "%s:%d: warning: lease.refresh (%d) is more than half of "
			     "lease.ttl (%d): one failed refresh lets the lease run out", at.file,
			     at.line, cfg->lease.refresh, cfg->lease.ttl);
}

bool pbs_config_limits_on(const struct pbs_limits_config *limits)
{
	return limits->user_recipients_per_hour > 0 || limits->lease_recipients_per_hour > 0;
}

/* limits.suspend_after counts refusals by a relay limit: with both limits off there are
 * none, and a setting that can never act is a mistake worth saying. */
static void check_limits(const pbs_config *cfg, const config_t *lc, const char *path,
			 pbs_config_report *r)
{
	const config_setting_t *s = config_lookup(lc, "limits.suspend_after");
	struct site at;

	if (s == NULL || cfg->limits.suspend_after == 0 || pbs_config_limits_on(&cfg->limits))
		return;
	at = site_of(s, path);
	strlist_addf(&r->errors, "%s:%d: limits.suspend_after: counts refusals by a relay limit, "
		     "but limits.user_recipients_per_hour and limits.lease_recipients_per_hour "
		     "are both 0", at.file, at.line);
}

/* usage.trace_secret is written into a Postfix header_checks pattern as it is, and must
 * not be guessed: letters and digits only, at least 16. The value is never echoed. */
static void check_trace_secret(const pbs_config *cfg, const config_t *lc, const char *path,
			       pbs_config_report *r)
{
	const config_setting_t *s = config_lookup(lc, "usage.trace_secret");
	const char *v = cfg->usage.trace_secret;
	size_t n;
	struct site at;

	if (s == NULL || v == NULL || v[0] == '\0')
		return;
	n = strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
	if (v[n] == '\0' && n >= 16)
		return;
	at = site_of(s, path);
	strlist_addf(&r->errors, "%s:%d: usage.trace_secret: expected 16 to 64 letters and digits "
		     "(e.g. from \"openssl rand -hex 16\")", at.file, at.line);
}

/* policy.listen in the milter's notation (the host is looked up only when it is opened). */
static void check_listen(const pbs_config *cfg, const config_t *lc, const char *path,
			 pbs_config_report *r)
{
	const config_setting_t *s = config_lookup(lc, "policy.listen");
	struct site at;

	if (s == NULL || cfg->policy.listen == NULL || pbs_listen_valid(cfg->policy.listen))
		return;
	at = site_of(s, path);
	strlist_addf(&r->errors, "%s:%d: policy.listen: expected \"unix:/absolute/path\" or "
		     "\"inet:PORT@HOST\"", at.file, at.line);
}

/* Warn when the file holds a password and others may read it. */
static void check_secret_mode(const pbs_config *cfg, const char *path, pbs_config_report *r)
{
	struct stat st;

	if ((cfg->redis.password[0] == '\0' && cfg->redis.sentinel_password[0] == '\0') ||
	    stat(path, &st) != 0)
		return;
	if (st.st_mode & S_IROTH)
		strlist_addf(&r->warnings, "%s: warning: holds a Redis password but others can "
			     "read it (chmod o-r)", path);
}

/* Where libconfig says an error is: include names are relative to the config's directory. */
static void report_parse_error(const config_t *lc, const char *path, pbs_config_report *r)
{
	char file[512];

	display_file(config_error_file(lc), path, file, sizeof file);
	strlist_addf(&r->errors, "%s:%d: %s", file, config_error_line(lc), config_error_text(lc));
}

/* Parse PATH into LC, after the text pre-check (prescan.c); on failure report why.
 * Returns 0 or -1. */
static int read_file(config_t *lc, const char *path, pbs_config_report *r)
{
	char *dir = dir_of(path);
	int bad;

	if (dir == NULL) {
		strlist_addf(&r->errors, "%s: out of memory", path);
		return -1;
	}
	config_set_include_dir(lc, dir);
	bad = pbs_prescan(path, dir, r);
	free(dir);
	if (bad)
		return -1;
	if (config_read_file(lc, path) != CONFIG_TRUE) {
		if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
			strlist_addf(&r->errors, "%s: cannot read: %s", path, config_error_text(lc));
		else
			report_parse_error(lc, path, r);
		return -1;
	}
	return 0;
}

pbs_config *pbs_config_load(const char *path, pbs_config_report *report)
{
	config_t lc;
	pbs_config *cfg;
	const config_setting_t *root;
	size_t before = report->errors.count;
	int i, n;

	config_init(&lc);
	cfg = config_table_defaults();
	if (cfg == NULL || (cfg->path = strdup(path)) == NULL) {
		strlist_addf(&report->errors, "%s: out of memory", path);
		goto fail;
	}
	if (read_file(&lc, path, report) != 0)
		goto fail;
	root = config_root_setting(&lc);
	n = config_setting_length(root);
	for (i = 0; i < n; i++)
		walk_group(cfg, config_setting_get_elem(root, (unsigned)i), path, report);
	check_combinations(&lc, path, report);
	derive_defaults(cfg);
	check_refresh(cfg, &lc, path, report);
	check_trace_secret(cfg, &lc, path, report);
	check_limits(cfg, &lc, path, report);
	check_listen(cfg, &lc, path, report);
	if (config_lookup(&lc, "redis.socket") != NULL && config_lookup(&lc, "redis.host") == NULL) {
		free(cfg->redis.host);
		cfg->redis.host = NULL;
	}
	if (report->errors.count != before)
		goto fail;
	check_secret_mode(cfg, path, report);
	config_destroy(&lc);
	return cfg;
fail:
	config_destroy(&lc);
	pbs_config_free(cfg);
	return NULL;
}

pbs_config *pbs_config_load_logged(const char *path)
{
	pbs_config_report report = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg = pbs_config_load(path, &report);
	size_t i;

	for (i = 0; i < report.warnings.count; i++)
		pbs_log(LOG_WARNING, "%s", report.warnings.items[i]);
	for (i = 0; i < report.errors.count; i++)
		pbs_log(LOG_ERR, "%s", report.errors.items[i]);
	pbs_config_report_free(&report);
	if (cfg != NULL && cfg->milter.on_store_error == PBS_ON_ERROR_ACCEPT)
		pbs_log(LOG_WARNING, "milter.on_store_error = accept: while Redis is unavailable "
				     "EVERY client may relay (open relay). Use tempfail.");
	return cfg;
}

int pbs_config_check(const char *path)
{
	pbs_config_report report = {{NULL, 0}, {NULL, 0}};
	pbs_config *cfg = pbs_config_load(path, &report);

	pbs_config_report_print(&report);
	pbs_config_report_free(&report);
	if (cfg == NULL)
		return PBS_EX_CONFIG;
	pbs_config_free(cfg);
	printf("%s: configuration OK\n", path);
	return 0;
}

const char *const *pbs_config_key_names(void)
{
	static char names[NKEYS][48];
	static const char *list[NKEYS + 1];
	size_t i;

	for (i = 0; i < NKEYS; i++) {
		snprintf(names[i], sizeof names[i], "%s.%s", keys[i].group, keys[i].name);
		list[i] = names[i];
	}
	list[NKEYS] = NULL;
	return list;
}
