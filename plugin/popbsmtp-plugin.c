/*
 * popbsmtp-plugin.c — the Dovecot 2.3 mail plugin "popbsmtp". At an IMAP or POP3 login it
 * writes the lease popbsmtp-postlogin would write, and while the session lasts it keeps
 * the lease alive every lease.refresh seconds from a timer on Dovecot's own ioloop (no
 * thread, no process, no connection held between refreshes). Glue only: the lease and
 * revocation formats are lib/lease.c, every Redis exchange is lib/store.c and bounded by
 * redis.timeout_ms. It never fails a login or a session: a problem is one log line.
 * Dovecot fixes the exported names: popbsmtp_plugin_init, _deinit and _version.
 *
 * The configuration holds the Redis credential, which no mail user may read: it is read
 * once, when Dovecot loads the plugin, while the mail process is still root (Dovecot loads
 * mail plugins before it drops to the user and initializes them after), from a file only
 * root and the popbsmtp group can read. It is never taken from a Dovecot setting, which
 * userdb fields could override. Once dropped to the user, the process is not dumpable (the
 * kernel's rule for a process that changed its uid), so the user cannot read it out of the
 * process either (docs/security.md).
 */
#include "lib.h"
#include "ioloop.h"
#include "net.h"
#include "mail-user.h"
#include "mail-storage-hooks.h"
#include "module-context.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "popbsmtp/config.h"
#include "popbsmtp/lease.h"
#include "popbsmtp/log.h"
#include "popbsmtp/policy.h"
#include "popbsmtp/store.h"
#include "popbsmtp/usage.h"
#include "popbsmtp/version.h"

#define POPBSMTP_USER_CONTEXT(obj) MODULE_CONTEXT(obj, popbsmtp_user_module)

/* One session's lease: what to refresh, where, and since when. */
struct popbsmtp_user {
	union mail_user_module_context module_ctx;
	struct mail_user *user;
	pbs_store *store;      /* disconnected between exchanges */
	struct timeout *to;    /* the refresh timer; NULL when refreshing is off or over */
	char subject[PBS_ADDR_STRLEN];
	pbs_lease lease;
	int ttl;
	int timeout_ms;        /* redis.timeout_ms: the bound of each whole exchange */
	int max_users;         /* lease.max_users_per_address */
	struct pbs_usage_config usage; /* for the grant's counters; host in the user's pool */
	long long login_ms;    /* the store's clock at the grant; 0 when unknown (any revoke
				  record then stops the session) */
	long long answered_ms; /* monotonic ms when Redis last answered */
	bool outage;           /* a Redis failure was logged; quiet until Redis answers */
	bool grant_failed;     /* the login's grant failed: counted once Redis answers */
};

/* The configuration, read when the plugin is loaded (see the file comment), or why not. */
static pbs_config *popbsmtp_cfg;
static char popbsmtp_cfg_error[600];

const char *popbsmtp_plugin_version = DOVECOT_ABI_VERSION;

static MODULE_CONTEXT_DEFINE_INIT(popbsmtp_user_module, &mail_user_module_register);

void popbsmtp_plugin_init(struct module *module);
void popbsmtp_plugin_deinit(void);

/* The service a lease names for USER, or NULL when USER gets none: only IMAP and POP3
 * sessions of a client with an address are logins; LMTP, LDA, doveadm, indexer-worker,
 * shared-namespace users and a pre-authenticated imap run by hand are not. */
static const char *popbsmtp_service(const struct mail_user *user)
{
	if (user->autocreated || user->service == NULL || user->conn.remote_ip == NULL ||
	    user->conn.remote_ip->family == 0)
		return NULL;
	if (strcmp(user->service, "imap") == 0 || strcmp(user->service, "pop3") == 0)
		return user->service;
	return NULL;
}

/* Read the configuration as the plugin is loaded: from POPBSMTP_CONFIG (which only
 * Dovecot's import_environment sets for its mail processes) or the default path. What
 * goes wrong is said at each login, when there is a log to say it in. */
__attribute__((constructor)) static void popbsmtp_preload(void)
{
	const char *path = getenv("POPBSMTP_CONFIG");
	pbs_config_report report = {{NULL, 0}, {NULL, 0}};

	if (path == NULL || path[0] == '\0')
		path = PBS_DEFAULT_CONFIG;
	popbsmtp_cfg = pbs_config_load(path, &report);
	if (popbsmtp_cfg == NULL)
		snprintf(popbsmtp_cfg_error, sizeof popbsmtp_cfg_error, "%s%s",
			 report.errors.count ? report.errors.items[0] : path,
			 report.errors.count > 1 ? " (and more; check with popbsmtp-postlogin -t)"
						 : "");
	pbs_config_report_free(&report);
}

__attribute__((destructor)) static void popbsmtp_unload(void)
{
	pbs_config_free(popbsmtp_cfg);
	popbsmtp_cfg = NULL;
}

/* Monotonic ms: how long since Redis last answered, whatever the wall clock does. */
static long long popbsmtp_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A Redis failure: logged once per outage, not at every refresh while it lasts. */
static void popbsmtp_failed(struct popbsmtp_user *pu, const char *what)
{
	if (!pu->outage)
		e_error(pu->user->event, "popbsmtp: %s %s: %s (the session goes on)", what,
			pu->subject, pbs_store_error(pu->store));
	pu->outage = true;
}

/* Redis answered: a later failure is a new outage, worth a line again. */
static void popbsmtp_answered(struct popbsmtp_user *pu)
{
	pu->answered_ms = popbsmtp_monotonic_ms();
	if (pu->outage)
		e_debug(pu->user->event, "popbsmtp: Redis answers again");
	pu->outage = false;
}

/* Stop refreshing for good: the session goes on, its lease is no longer kept alive. */
static void popbsmtp_stop(struct popbsmtp_user *pu, const char *why)
{
	e_info(pu->user->event, "popbsmtp: lease for %s %s; no longer refreshed "
	       "(a new login grants a new one)", pu->subject, why);
	if (pu->to != NULL)
		timeout_remove(&pu->to);
}

/* Whether the session may write its lease back where Redis lost it: not after hibernation
 * (it cannot know what happened while it slept), and not after so long without an answer
 * from Redis that a revocation record may have come and expired meanwhile. */
static bool popbsmtp_may_restore(const struct popbsmtp_user *pu)
{
	return !pu->user->session_restored &&
	       popbsmtp_monotonic_ms() - pu->answered_ms < PBS_LEASE_RESTORE_WINDOW * 1000LL;
}

/* The timer: keep the lease alive, bring it back if Redis lost it, stop for good once it
 * was revoked. The connection is dropped after each exchange (one per session would make
 * 10,000 open sessions 10,000 Redis clients). */
static void popbsmtp_refresh(struct popbsmtp_user *pu)
{
	enum pbs_refresh r;

	/* The whole exchange, connect included, within redis.timeout_ms: the session waits. */
	pbs_store_bound(pu->store, pu->timeout_ms);
	r = pbs_store_refresh(pu->store, pu->subject, &pu->lease, pu->ttl, pu->login_ms,
			      popbsmtp_may_restore(pu));

	/* One more round trip, only in a session whose grant failed, and only once. */
	if (r != PBS_REFRESH_ERROR && pu->grant_failed &&
	    pbs_usage_count_grant(pu->store, &pu->usage, "plugin", PBS_EV_GRANT_FAILED_STORE,
				  time(NULL)) == 0)
		pu->grant_failed = false;
	pbs_store_disconnect(pu->store);
	pbs_store_bound(pu->store, 0);
	switch (r) {
	case PBS_REFRESH_ERROR:
		popbsmtp_failed(pu, "lease not refreshed for");
		return;
	case PBS_REFRESH_REVOKED:
		popbsmtp_stop(pu, "revoked");
		break;
	case PBS_REFRESH_SUSPENDED:
		popbsmtp_stop(pu, "not kept: the user is suspended");
		break;
	case PBS_REFRESH_GONE:
		popbsmtp_stop(pu, pu->user->session_restored ? "gone while the session slept"
					       : "gone after a long Redis outage");
		break;
	case PBS_REFRESH_RESTORED:
		e_debug(pu->user->event, "popbsmtp: lease for %s was gone; written again",
			pu->subject);
		break;
	case PBS_REFRESH_KEPT:
	case PBS_REFRESH_OTHER:
		break;
	}
	popbsmtp_answered(pu);
}

/* The login's grant: the hook's grant, counted in the same script. */
static void popbsmtp_grant(struct popbsmtp_user *pu)
{
	char safe[PBS_LOG_SAFE_MAX];

	/* The login waits for both round trips: bound them together, as a refresh. */
	pbs_store_bound(pu->store, pu->timeout_ms);
	switch (pbs_usage_grant(pu->store, &pu->usage, "plugin", pu->subject, &pu->lease, pu->ttl,
				pu->max_users, &pu->login_ms)) {
	case PBS_GRANT_WRITTEN:
		e_debug(pu->user->event, "popbsmtp: lease granted: %s user=%s service=%s ttl=%d",
			pu->subject, pbs_log_safe(pu->lease.user, safe), pu->lease.service, pu->ttl);
		popbsmtp_answered(pu);
		break;
	case PBS_GRANT_REVOKED:
		popbsmtp_answered(pu);
		popbsmtp_stop(pu, "not granted: a revoke came after the login began");
		break;
	case PBS_GRANT_SUSPENDED:
		popbsmtp_answered(pu);
		popbsmtp_stop(pu, "not granted: the user is suspended");
		break;
	case PBS_GRANT_SHARED:
		popbsmtp_answered(pu);
		popbsmtp_stop(pu, "not granted: other users logged in from this address already "
				  "(lease.max_users_per_address)");
		break;
	case PBS_GRANT_LATE:
	case PBS_GRANT_ERROR:
		/* Not written; the refreshes write it once Redis answers, unless a revoke
		 * record (any: the login time is unknown) says otherwise. */
		pu->login_ms = 0;
		popbsmtp_failed(pu, "no lease granted for");
		pu->grant_failed = true;
		break;
	}
	pbs_store_disconnect(pu->store);
	pbs_store_bound(pu->store, 0);
}

static void popbsmtp_user_deinit(struct mail_user *user)
{
	struct popbsmtp_user *pu = POPBSMTP_USER_CONTEXT(user);

	if (pu->to != NULL)
		timeout_remove(&pu->to);
	pbs_store_free(pu->store);
	pu->module_ctx.super.deinit(user);
}

/* The lease of USER from CFG into PU: subject, value, TTL. Returns false when USER gets
 * none (lease.never, or a name no lease can hold: logged). */
static bool popbsmtp_prepare(struct popbsmtp_user *pu, const pbs_config *cfg, const char *service)
{
	struct mail_user *user = pu->user;
	const char *ip = net_ip2addr(user->conn.remote_ip), *problem;
	char safe[PBS_LOG_SAFE_MAX];
	pbs_addr addr;

	if (pbs_addr_parse(ip, &addr) != 0) {
		e_error(user->event, "popbsmtp: no lease granted: '%s' is not an address",
			pbs_log_safe(ip, safe));
		return false;
	}
	if (pbs_cidr_list_contains(&cfg->lease.never, &addr)) {
		e_debug(user->event, "popbsmtp: no lease granted: %s is in lease.never", ip);
		return false;
	}
	/* A hibernated IMAP session coming back keeps its login time, so its lease value. Its
	 * login time by the store's clock is lost: login_ms stays 0, so that any revocation
	 * record stops it. */
	pu->answered_ms = popbsmtp_monotonic_ms();
	problem = pbs_lease_make(&pu->lease, user->username, service,
				 user->session_restored ? (long long)user->session_create_time
							: (long long)ioloop_time);
	/* lease.sender = address or domain: a user name that is no address could never relay. */
	if (problem == NULL)
		problem = pbs_policy_sender_problem((enum pbs_sender_rule)cfg->lease.sender,
						    user->username);
	if (problem != NULL) {
		e_error(user->event, "popbsmtp: no lease granted: %s (user '%s')", problem,
			pbs_log_safe(user->username, safe));
		return false;
	}
	pbs_lease_subject(&addr, (unsigned)cfg->lease.ipv4_prefix, (unsigned)cfg->lease.ipv6_prefix,
			  pu->subject);
	pu->ttl = cfg->lease.ttl;
	pu->timeout_ms = cfg->redis.timeout_ms;
	pu->max_users = cfg->lease.max_users_per_address;
	pu->usage = cfg->usage;
	pu->usage.host = p_strdup(pu->user->pool, cfg->usage.host);
	return true;
}

/* Attach PU to USER so its deinit removes the timer and frees the store. */
static void popbsmtp_attach(struct mail_user *user, struct popbsmtp_user *pu)
{
	struct mail_user_vfuncs *v = user->vlast;

	pu->module_ctx.super = *v;
	user->vlast = &pu->module_ctx.super;
	v->deinit = popbsmtp_user_deinit;
	MODULE_CONTEXT_SET(user, popbsmtp_user_module, pu);
}

static void popbsmtp_mail_user_created(struct mail_user *user)
{
	const char *service = popbsmtp_service(user);
	struct popbsmtp_user *pu;

	if (service == NULL)
		return;
	if (popbsmtp_cfg == NULL) {
		e_error(user->event, "popbsmtp: no lease granted: bad configuration: %s",
			popbsmtp_cfg_error);
		return;
	}
	pu = p_new(user->pool, struct popbsmtp_user, 1);
	pu->user = user;
	if (!popbsmtp_prepare(pu, popbsmtp_cfg, service) ||
	    (pu->store = pbs_store_new(&popbsmtp_cfg->redis)) == NULL)
		return;
	popbsmtp_attach(user, pu);
	if (popbsmtp_cfg->lease.refresh > 0)
		pu->to = timeout_add((unsigned int)popbsmtp_cfg->lease.refresh * 1000,
				     popbsmtp_refresh, pu);
	/* A restored session is no login: it only refreshes, at once (it may have slept long),
	 * and a revoke found there removes the timer just set. */
	if (user->session_restored)
		popbsmtp_refresh(pu);
	else
		popbsmtp_grant(pu);
}

static struct mail_storage_hooks popbsmtp_mail_storage_hooks = {
	.mail_user_created = popbsmtp_mail_user_created,
};

void popbsmtp_plugin_init(struct module *module)
{
	mail_storage_hooks_add(module, &popbsmtp_mail_storage_hooks);
}

void popbsmtp_plugin_deinit(void)
{
	mail_storage_hooks_remove(&popbsmtp_mail_storage_hooks);
}
