/*
 * steer.h - which worker's SO_REUSEPORT listener the kernel hands a new TCP connection to.
 *
 * By default the kernel spreads connections over a port's listeners by a hash of the
 * addresses, so with worker_balance a parked worker logs in its share of new clients and hands
 * the sessions over later: a wake-up of its own per login, a move per session that lives long
 * enough, and a descriptor table in its libev loop that grows with every client it ever
 * watched. A classic BPF program attached to the listeners (SO_ATTACH_REUSEPORT_CBPF) instead
 * picks one of the first n listeners of the group at random, n being the active workers.
 *
 * The program returns a position in the kernel's list of the port's listeners, which is the
 * order in which they started listening only while no listener before them has closed (a
 * close moves the last one into the gap). pgmux never closes a listener before it drains, so
 * its positions are its workers' indexes when it found no other listener on the port at start;
 * otherwise (a new pgmux started beside an old one) it never steers. A listener of another
 * process that joined later sits behind pgmux's own and does not disturb them, but while it
 * is there the program would keep it from getting connections: steer_listeners counts the
 * port's listeners before each attach.
 *
 * Thread: any; the caller serialises changes of one port (runtime's steer_mu).
 */
#ifndef PGMUX_PROXY_STEER_H
#define PGMUX_PROXY_STEER_H

/* Has the kernel hand new connections of fd's listener group to positions 0..n-1 (n >= 1).
 * 0, or -1 with errno (EINVAL, ENOPROTOOPT: a kernel without it). */
int steer_attach(int fd, int n);

/* Back to the kernel's hash over all listeners. 0 also when nothing was attached. */
int steer_detach(int fd);

/* How many TCP sockets listen on fd's address, port and family, fd's own included (those
 * are the sockets of its SO_REUSEPORT group); -1 if the kernel cannot tell (sock_diag). */
int steer_listeners(int fd);

#endif
