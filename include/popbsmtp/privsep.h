/*
 * privsep.h — the privileged part of a daemon's startup: the listening socket's ownership
 * and mode, daemonizing with a pidfile, and dropping to the unprivileged user. Shared by
 * popbsmtp-milter and popbsmtp-policy --listen.
 */
#ifndef POPBSMTP_PRIVSEP_H
#define POPBSMTP_PRIVSEP_H

/* A listening socket as configured: the key group it comes from (for messages,
 * "milter" or "policy"), the spec ("unix:/path", "inet:port@host"), its group ("" for the
 * process's own) and mode. */
struct pbs_socket_spec {
	const char *key;
	const char *socket;
	const char *socket_group;
	int socket_mode;
};

/* Makes the listening socket of SPEC; called with the umask and effective group set so
 * that a unix socket's node is created as configured. 0 or -1. */
typedef int pbs_privsep_bind_fn(const struct pbs_socket_spec *spec, void *arg);

/* Open SPEC's socket through BIND_FN (a stale unix socket is removed by it; one another
 * process serves is refused); a unix socket is created with SPEC's mode and group, never
 * changed afterwards through its path. 0 or -1 (logged). */
int pbs_privsep_open_socket(const struct pbs_socket_spec *spec, pbs_privsep_bind_fn *bind_fn,
			    void *arg);

/* Fork into the background, detach, write PIDFILE and hold it locked until exit. Refuses
 * when a running daemon holds PIDFILE's lock; a stale PIDFILE is replaced. The parent
 * exits 0. Returns 0 in the child or -1 (logged). */
int pbs_privsep_daemonize(const char *pidfile);

/* Remove the pidfile written by pbs_privsep_daemonize, if it is still ours and the
 * process may (else it stays, stale: its lock goes with the process). */
void pbs_privsep_remove_pidfile(void);

/* When root and USER is not empty: become USER (its groups, gid, uid), for good. KEY
 * names the setting for messages ("milter", "policy"). Returns 0 or -1 (logged). */
int pbs_privsep_drop(const char *user, const char *key);

#endif
