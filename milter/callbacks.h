/*
 * callbacks.h — the libmilter glue: the filter description handed to smfi_register.
 */
#ifndef POPBSMTP_MILTER_CALLBACKS_H
#define POPBSMTP_MILTER_CALLBACKS_H

#include <libmilter/mfapi.h>

/* The callbacks popbsmtp-milter registers; stages left NULL are negotiated away. */
extern struct smfiDesc pbs_milter_desc;

#endif
