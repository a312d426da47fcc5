/*
 * version.h - pgmux's version, for --version, the log and the admin console's SHOW VERSION.
 */
#ifndef PGMUX_PROXY_VERSION_H
#define PGMUX_PROXY_VERSION_H

#define PGMUX_VERSION "0.1.0"

#endif
