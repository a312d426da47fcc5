/*
 * errors.c - status -> (severity, SQLSTATE, message, hint). The table is the whole policy of
 * what clients are told when pgmux, not PostgreSQL, refuses something.
 */
#include "proxy/errors.h"

#include <stddef.h>

#include "protocol/sqlstate.h"

static const struct errors_entry internal = { "FATAL", SQLSTATE_INTERNAL_ERROR,
                                              "internal error in pgmux", NULL };

const struct errors_entry *
errors_lookup(enum status st)
{
    static const struct errors_entry table[] = {
        [ST_ECLIENT_PROTOCOL] = { "FATAL", SQLSTATE_PROTOCOL_VIOLATION, "invalid frontend message",
                                  NULL },
        [ST_ECLIENT_UNSUPPORTED] = { "FATAL", SQLSTATE_FEATURE_NOT_SUPPORTED, "unsupported request",
                                     NULL },
        [ST_ECLIENT_LOGIN_TIMEOUT] = { "FATAL", SQLSTATE_QUERY_CANCELED,
                                       "canceling authentication due to timeout",
                                       "the client must finish logging in within "
                                       "client_login_timeout" },
        [ST_ECLIENT_IDLE_TIMEOUT] = { "FATAL", SQLSTATE_IDLE_SESSION_TIMEOUT,
                                      "terminating connection due to idle-session timeout",
                                      "see client_idle_timeout" },
        [ST_ECLIENT_IDLE_TXN_TIMEOUT] = { "FATAL", SQLSTATE_IDLE_IN_TRANSACTION_TIMEOUT,
                                          "terminating connection due to idle-in-transaction "
                                          "timeout",
                                          "see idle_transaction_timeout; the transaction was "
                                          "rolled back" },
        [ST_ESERVER_CLOSED] = { "FATAL", SQLSTATE_CONNECTION_FAILURE, "server connection lost",
                                NULL },
        [ST_ESERVER_PROTOCOL] = { "FATAL", SQLSTATE_CONNECTION_FAILURE,
                                  "server sent an invalid message", NULL },
        [ST_ESERVER_CONNECT] = { "FATAL", SQLSTATE_CONNECTION_FAILURE,
                                 "could not connect to the server", NULL },
        [ST_ENOMEM] = { "FATAL", SQLSTATE_OUT_OF_MEMORY, "pgmux is out of memory", NULL },
        [ST_ETIMEOUT] = { "FATAL", SQLSTATE_TOO_MANY_CONNECTIONS,
                          "timed out waiting for a server connection",
                          "raise max_open_conns or query_wait_timeout, or lower the load" },
        [ST_EAUTH] = { "FATAL", SQLSTATE_INVALID_PASSWORD, "password authentication failed", NULL },
        [ST_EAUTH_USER] = { "FATAL", SQLSTATE_INVALID_PASSWORD, "password authentication failed",
                            NULL },
        [ST_EPOOL] = { "FATAL", SQLSTATE_TOO_MANY_CONNECTIONS, "no more server connections allowed",
                       "raise max_open_conns" },
        [ST_ETOOMANY] = { "FATAL", SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already",
                          "raise max_client_conn" },
        [ST_EROUTE] = { "FATAL", SQLSTATE_CANNOT_CONNECT_NOW,
                        "no server is available for this session", NULL },
        [ST_ESHUTDOWN] = { "FATAL", SQLSTATE_ADMIN_SHUTDOWN, "pgmux is shutting down", NULL },
        [ST_EADMIN_KILL] = { "FATAL", SQLSTATE_ADMIN_SHUTDOWN,
                             "terminating connection due to administrator command",
                             "an operator ran KILL on the pgmux admin console" },
        [ST_EADMIN_DENIED] = { "FATAL", SQLSTATE_INVALID_AUTHORIZATION,
                               "not allowed to use the pgmux admin console",
                               "list the user in admin_users or stats_users" },
        [ST_EINTERNAL] = { "FATAL", SQLSTATE_INTERNAL_ERROR, "internal error in pgmux", NULL },
    };
    if ((unsigned) st < sizeof(table) / sizeof(table[0]) && table[st].sqlstate) {
        return &table[st];
    }
    return &internal;
}
