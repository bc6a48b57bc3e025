/*
 * callbacks.h — the libmilter glue: the filter description handed to smfi_register.
 */
#ifndef POPBSMTP_MILTER_CALLBACKS_H
#define POPBSMTP_MILTER_CALLBACKS_H

#include <libmilter/mfapi.h>

#include "popbsmtp/config.h"

/* The callbacks popbsmtp-milter registers for CFG; stages left NULL are negotiated away.
 * Headers, end of message and abort only with usage.trace_header on (fixed until a
 * restart). */
struct smfiDesc pbs_callbacks_desc(const pbs_config *cfg);

#endif
