/*
 * errors.h - the one table that turns a status into what a client sees (CONVENTIONS 4.2.1).
 * Pure lookup; any thread.
 */
#ifndef PGMUX_PROXY_ERRORS_H
#define PGMUX_PROXY_ERRORS_H

#include "common/status.h"

struct errors_entry {
    const char *severity; /* "FATAL" or "ERROR" */
    const char *sqlstate;
    const char *message; /* lowercase, no trailing period (CONVENTIONS 4.2.4) */
    const char *hint;    /* what to change, or NULL */
};

/** The entry for st; unknown statuses map to the internal-error entry. */
const struct errors_entry *errors_lookup(enum status st);

#endif
