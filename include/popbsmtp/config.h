/*
 * config.h — popbsmtp.conf, the one libconfig file all programs read. The file is
 * checked against a table of known keys (type, default, bounds); every problem is
 * reported as "FILE:LINE: what is wrong", and all of them, not only the first.
 */
#ifndef POPBSMTP_CONFIG_H
#define POPBSMTP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "popbsmtp/addr.h"

#define PBS_EX_CONFIG 78 /* sysexits.h EX_CONFIG: what every program exits with on bad config */

typedef struct pbs_strlist {
	char **items;
	size_t count;
} pbs_strlist;

enum pbs_on_store_error { PBS_ON_ERROR_TEMPFAIL, PBS_ON_ERROR_REJECT, PBS_ON_ERROR_ACCEPT };

struct pbs_redis_config {
	char *host;
	int port;
	char *socket; /* unix socket path; exclusive with host */
	char *password;
	char *username;
	int database;
	char *prefix;
	int timeout_ms;
	/* Redis Sentinel: when sentinel_nodes is not empty, the master is discovered. */
	char *sentinel_master;
	pbs_strlist sentinel_nodes; /* "host:port" */
	char *sentinel_password;
};

struct pbs_lease_config {
	int ttl;
	int refresh; /* seconds between refreshes of an open session's lease; 0: never */
	int ipv4_prefix;
	int ipv6_prefix;
	pbs_cidr_list never;
	int max_users_per_address; /* distinct users a lease's address may have at once; 0: any */
	int sender; /* enum pbs_sender_rule: which MAIL FROM a relay by lease may use */
};

/* lease.sender: MAIL FROM of a relay by lease is any address, one in the domain of the
 * lease's user name, or that user name itself. */
enum pbs_sender_rule { PBS_SENDER_ANY, PBS_SENDER_DOMAIN, PBS_SENDER_ADDRESS };

/* Relay by lease, bounded fleet-wide (docs/abuse.md). 0 turns each one off. */
struct pbs_limits_config {
	int user_recipients_per_hour;  /* one user's leases together, per clock hour */
	int lease_recipients_per_hour; /* one lease (its address or network), per clock hour */
	int suspend_after; /* refusals by a limit in a day that suspend the user */
	int suspend_for;   /* seconds such a suspension lasts */
};

struct pbs_milter_config {
	char *socket;
	char *socket_group;
	int socket_mode; /* from the string "0660" */
	char *user;
	char *pidfile;
	pbs_cidr_list trusted;
	pbs_strlist relay_mailers; /* empty: the MTA's defaults */
	pbs_strlist local_mailers; /* empty: the MTA's defaults */
	pbs_strlist local_domains;
	int on_store_error; /* enum pbs_on_store_error */
	char *reject_text;
	int pool_size;
};

/* popbsmtp-policy as a daemon (--listen): its socket, user and bounds. */
struct pbs_policy_config {
	char *listen;       /* the milter's notation: "unix:/path", "inet:port@host" */
	char *socket_group;
	int socket_mode;
	char *user;
	int max_connections;
	int idle_timeout;   /* seconds a client may take to send its next request */
};

/* Usage and decision counters (docs/usage.md), and the trace header. */
struct pbs_usage_config {
	int retention_days; /* how long Redis keeps per-user usage (TTL) */
	int flush_interval; /* seconds between a gate's batched writes */
	char *host;         /* this host's name in the counters; "" = gethostname() */
	int trace_header;   /* 1: X-PopBeforeSMTP on mail relayed by lease */
	char *trace_secret; /* the policy gate's mark for header_checks (docs/postfix.md); "" */
};

typedef struct pbs_config {
	char *path;
	struct pbs_redis_config redis;
	struct pbs_lease_config lease;
	struct pbs_milter_config milter;
	struct pbs_policy_config policy;
	struct pbs_usage_config usage;
	struct pbs_limits_config limits;
} pbs_config;

/* True when a relay by lease is counted (a limit is on): then every relay recipient's
 * lease is checked, and counted, with one script (pbs_store_relay). */
bool pbs_config_limits_on(const struct pbs_limits_config *limits);

/* Collected problems, each "FILE:LINE: text" (errors) or "FILE: warning: text". */
typedef struct pbs_config_report {
	pbs_strlist errors;
	pbs_strlist warnings;
} pbs_config_report;

/* Read and check PATH. Returns the config, or NULL with REPORT->errors filled.
 * Warnings (e.g. a readable password) are added to REPORT either way. */
pbs_config *pbs_config_load(const char *path, pbs_config_report *report);

/* A config with every default, as if from an empty file (used when no file can be read). */
pbs_config *pbs_config_defaults(void);

void pbs_config_free(pbs_config *cfg);
void pbs_config_report_free(pbs_config_report *report);

/* Print every warning and error of REPORT to stderr, one per line. */
void pbs_config_report_print(const pbs_config_report *report);

/* Shared "-t" behaviour: load PATH, print "configuration OK" or the problems.
 * Returns the exit status (0 or PBS_EX_CONFIG). */
int pbs_config_check(const char *path);

/* pbs_config_load for a gate: every problem logged (pbs_log), and a warning when the
 * file makes an open relay of a Redis outage (on_store_error = accept). NULL on errors. */
pbs_config *pbs_config_load_logged(const char *path);

/* The names of every key the table knows, "group.key", NULL-terminated (for doc tests). */
const char *const *pbs_config_key_names(void);

#endif
