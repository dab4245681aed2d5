#ifndef RAFFLED_PREFETCH_H
#define RAFFLED_PREFETCH_H

// Swift has no prefetch intrinsic. The dedupe index inserts at random places in a table far larger
// than the cache, so each insert is a cache miss; prefetching the slot of an entry a few places
// ahead overlaps those misses (measured in Bench/RESULTS.md). Static inline: Swift inlines it.
// Locality 3 (prefetcht0, into every cache level): with locality 1 the compiler emits prefetcht2
// (no PREFETCHW on the baseline target) and the insert still waited on L1; measured on durable bulk
// ingest, 77 -> 71 ns of server CPU per entry together with a look-ahead of 16 (RESULTS.md).
static inline void raffle_prefetch_write(const void *address) { __builtin_prefetch(address, 1, 3); }

#endif
