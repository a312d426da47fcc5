/*
 * list.h - intrusive doubly linked lists whose heads carry their element count, so gauges and
 * SHOW output are O(1) (CONVENTIONS 3.1.3). Header only. A list and its elements belong to one
 * thread; nothing here locks.
 */
#ifndef PGMUX_COMMON_LIST_H
#define PGMUX_COMMON_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct ilist_node {
    struct ilist_node *next;
    struct ilist_node *prev;
};

struct ilist {
    struct ilist_node head; /* sentinel; head.next is the oldest element */
    size_t n;               /* elements linked */
};

static inline void
ilist_init(struct ilist *l)
{
    l->head.next = &l->head;
    l->head.prev = &l->head;
    l->n = 0;
}

static inline void
ilist_node_init(struct ilist_node *n)
{
    n->next = n;
    n->prev = n;
}

static inline bool
ilist_node_linked(const struct ilist_node *n)
{
    return n->next != n;
}

static inline bool
ilist_empty(const struct ilist *l)
{
    return l->n == 0;
}

static inline void
ilist_push_tail(struct ilist *l, struct ilist_node *n)
{
    n->prev = l->head.prev;
    n->next = &l->head;
    l->head.prev->next = n;
    l->head.prev = n;
    l->n++;
}

static inline void
ilist_push_head(struct ilist *l, struct ilist_node *n)
{
    n->next = l->head.next;
    n->prev = &l->head;
    l->head.next->prev = n;
    l->head.next = n;
    l->n++;
}

static inline void
ilist_remove(struct ilist *l, struct ilist_node *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    ilist_node_init(n);
    l->n--;
}

static inline struct ilist_node *
ilist_first(const struct ilist *l)
{
    return l->n ? l->head.next : NULL;
}

static inline struct ilist_node *
ilist_last(const struct ilist *l)
{
    return l->n ? l->head.prev : NULL;
}

static inline struct ilist_node *
ilist_pop_head(struct ilist *l)
{
    struct ilist_node *n = ilist_first(l);
    if (n) {
        ilist_remove(l, n);
    }
    return n;
}

/* Iterate allowing removal of the current node. */
#define ILIST_FOREACH_SAFE(l, it, tmp)                                  \
    for ((it) = (l)->head.next, (tmp) = (it)->next; (it) != &(l)->head; \
         (it) = (tmp), (tmp) = (it)->next)

#endif
