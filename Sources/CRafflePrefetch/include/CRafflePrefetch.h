#ifndef RAFFLED_PREFETCH_H
#define RAFFLED_PREFETCH_H

// Swift has no prefetch intrinsic. The dedupe index inserts at random places in a table far larger
// than the cache, so each insert is a cache miss; prefetching the slot of an entry a few places
// ahead overlaps those misses (measured in Bench/RESULTS.md). Static inline: Swift inlines it.
static inline void raffle_prefetch_write(const void *address) { __builtin_prefetch(address, 1, 1); }

#endif
