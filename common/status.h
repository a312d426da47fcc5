/*
 * status.h - the one return type of module functions.
 *
 * Non-error outcomes come first, then errors named by the side that failed, so one place in
 * proxy/ (errors.c) can turn any of them into what the client sees. No thread affinity.
 */
#ifndef PGMUX_COMMON_STATUS_H
#define PGMUX_COMMON_STATUS_H

enum status {
    ST_OK = 0,
    ST_AGAIN,                    /* would block; retry when the socket is ready */
    ST_INCOMPLETE,               /* need more bytes */
    ST_DECLINED,                 /* not mine: the caller should try something else */
    ST_ECLIENT_CLOSED,           /* client went away */
    ST_ECLIENT_PROTOCOL,         /* client broke the protocol */
    ST_ECLIENT_UNSUPPORTED,      /* client asked for something we do not do */
    ST_ECLIENT_LOGIN_TIMEOUT,    /* client did not finish startup and authentication in time */
    ST_ECLIENT_IDLE_TIMEOUT,     /* client sent nothing for client_idle_timeout */
    ST_ECLIENT_IDLE_TXN_TIMEOUT, /* idle in a transaction for idle_transaction_timeout */
    ST_ESERVER_CLOSED,           /* server went away */
    ST_ESERVER_PROTOCOL,         /* server said something we cannot follow */
    ST_ESERVER_CONNECT,          /* could not reach a server */
    ST_ENOMEM,
    ST_ETIMEOUT,
    ST_EAUTH,      /* authentication failed */
    ST_EAUTH_USER, /* user not known or not allowed */
    ST_EPOOL,      /* pool limit reached */
    ST_ETOOMANY,   /* client limit reached */
    ST_EROUTE,     /* no server of the needed role */
    ST_ECONFIG,
    ST_ESHUTDOWN,
    ST_EADMIN_KILL,   /* the admin console's KILL ended the session */
    ST_EADMIN_DENIED, /* not in admin_users or stats_users: no admin console */
    ST_EINTERNAL,
};

#endif
