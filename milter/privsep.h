/*
 * privsep.h — the privileged part of startup: the listening socket's ownership and mode,
 * daemonizing with a pidfile, and dropping to the unprivileged milter.user.
 */
#ifndef POPBSMTP_MILTER_PRIVSEP_H
#define POPBSMTP_MILTER_PRIVSEP_H

#include "popbsmtp/config.h"

/* Open the socket set with smfi_setconn (removing a stale unix socket); a unix socket is
 * created with milter.socket_mode and milter.socket_group, never changed afterwards
 * through its path. 0 or -1 (logged). */
int pbs_privsep_open_socket(const struct pbs_milter_config *cfg);

/* Fork into the background, detach, write PIDFILE and hold it locked until exit. Refuses
 * when a running milter holds PIDFILE's lock; a stale PIDFILE is replaced. The parent
 * exits 0. Returns 0 in the child or -1 (logged). */
int pbs_privsep_daemonize(const char *pidfile);

/* Remove the pidfile written by pbs_privsep_daemonize, if it is still ours and the
 * process may (else it stays, stale: its lock goes with the process). */
void pbs_privsep_remove_pidfile(void);

/* When root and USER is not empty: become USER (its groups, gid, uid), for good.
 * Returns 0 or -1 (logged). */
int pbs_privsep_drop(const char *user);

#endif
