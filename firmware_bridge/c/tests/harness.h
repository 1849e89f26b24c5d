/* Shared bits of the host test programs (these may use stdio; the library may not). */
#ifndef PD_HARNESS_H
#define PD_HARNESS_H
#include <stdio.h>
#include <stdlib.h>
#include "paradis_link.h"

/* Reads one line of hex into buf; returns its byte count, -1 at EOF. */
static inline long read_hex_line(uint8_t *buf, size_t cap) {
  int c, hi = -1;
  size_t n = 0;
  int any = 0;
  while ((c = getchar()) != EOF) {
    int v;
    any = 1;
    if (c == '\n') return (long)n;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    else continue;
    if (hi < 0) {
      hi = v;
    } else {
      if (n >= cap) {
        fprintf(stderr, "line longer than %lu bytes\n", (unsigned long)cap);
        exit(2);
      }
      buf[n++] = (uint8_t)(hi << 4 | v);
      hi = -1;
    }
  }
  return any ? (long)n : -1;
}

static inline void print_hex(const uint8_t *p, size_t n) {
  size_t i;
  for (i = 0; i < n; i++) printf("%02x", p[i]);
}

/* xorshift64*: the fuzzers' deterministic generator. */
static uint64_t rng_state = 88172645463325252ull;
static inline uint32_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}
static inline uint32_t rnd_below(uint32_t n) { return n ? rnd() % n : 0; }
#endif
