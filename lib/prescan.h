/*
 * prescan.h — inside the core library: the text pre-check of a configuration file and its
 * @includes (prescan.c), and how it reports to the loader (config.c).
 */
#ifndef POPBSMTP_LIB_PRESCAN_H
#define POPBSMTP_LIB_PRESCAN_H

#include "popbsmtp/config.h"

/* Check PATH and every file it @includes (DIR "/" NAME, as libconfig 1.5 resolves them)
 * before libconfig reads them: each problem goes to R as "FILE:LINE: text". Returns the
 * number of problems; 0 means libconfig may read the files. */
int pbs_prescan(const char *path, const char *dir, pbs_config_report *r);

/* Add one error, formatted, to R (config.c). */
void pbs_config_error(pbs_config_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
