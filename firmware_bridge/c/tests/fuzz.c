/* Fuzzes the C frame parser: N random or mutated byte sequences, each
 * followed by 0x00 and a valid frame that must decode.
 *
 *   fuzz N SEED      prints "sequences=... bad_frames=... frames_in_garbage=... bytes=..."
 *                    exits 1 at the first valid frame lost after garbage.
 */
#include "harness.h"

#define MAXP 512
#define TEMPLATES 64

int main(int argc, char **argv) {
  static uint8_t rx[PD_FRAME_ENCODED_MAX(MAXP)], templ[TEMPLATES][PD_WIRE_MAX(300)], g[4096], marker[64],
      payload[300];
  static size_t templ_len[TEMPLATES];
  unsigned long n = argc > 1 ? strtoul(argv[1], 0, 10) : 1000000ul, i;
  unsigned long bad = 0, in_garbage = 0, bytes = 0;
  pd_parser p;
  pd_frame f;
  size_t k;
  rng_state ^= (argc > 2 ? strtoull(argv[2], 0, 10) : 1ull) * 0x9E3779B97F4A7C15ull;
  if (!rng_state) rng_state = 1;
  for (i = 0; i < TEMPLATES; i++) {
    uint16_t len = (uint16_t)rnd_below(300);
    for (k = 0; k < len; k++) payload[k] = (uint8_t)rnd();
    templ_len[i] = pd_frame_encode((uint8_t)rnd(), 0, (uint16_t)rnd(), payload, len, templ[i], sizeof templ[i]);
  }
  pd_parser_init(&p, rx, sizeof rx, MAXP);
  for (i = 0; i < n; i++) {
    size_t glen = 0, mlen, t;
    int ev, frames = 0, last_is_marker = 0;
    uint8_t id[4];
    switch (i % 4) {
      case 0: /* random bytes */
        glen = 1 + rnd_below(199);
        for (k = 0; k < glen; k++) g[k] = (uint8_t)rnd();
        break;
      case 1: { /* a valid frame with bytes flipped, dropped, inserted */
        uint32_t ops = 1 + rnd_below(3), op;
        t = rnd_below(TEMPLATES);
        glen = templ_len[t];
        memcpy(g, templ[t], glen);
        for (op = 0; op < ops; op++) {
          size_t pos = rnd_below((uint32_t)glen);
          switch (rnd_below(3)) {
            case 0: g[pos] ^= (uint8_t)(1u << rnd_below(8)); break;
            case 1: if (glen > 1) { memmove(g + pos, g + pos + 1, glen - pos - 1); glen--; } break;
            default: memmove(g + pos + 1, g + pos, glen - pos); g[pos] = (uint8_t)rnd(); glen++; break;
          }
        }
        break;
      }
      case 2: /* a truncated frame */
        t = rnd_below(TEMPLATES);
        glen = rnd_below((uint32_t)templ_len[t] - 1);
        memcpy(g, templ[t], glen);
        break;
      default: /* a long run without a delimiter */
        glen = 500 + rnd_below(1000);
        for (k = 0; k < glen; k++) g[k] = (uint8_t)(1 + rnd_below(255));
        break;
    }
    g[glen++] = 0;
    id[0] = (uint8_t)i; id[1] = (uint8_t)(i >> 8); id[2] = (uint8_t)(i >> 16); id[3] = (uint8_t)(i >> 24);
    mlen = pd_frame_encode(0x42, 0, (uint16_t)i, id, 4, marker, sizeof marker);
    bytes += glen - 1;
    for (k = 0; k < glen + mlen; k++) {
      ev = pd_parser_feed(&p, k < glen ? g[k] : marker[k - glen], &f);
      if (ev < 0) bad++;
      if (ev == PD_EVENT_FRAME) {
        frames++;
        last_is_marker = k == glen + mlen - 1 && f.type == 0x42 && f.seq == (uint16_t)i && f.length == 4 &&
                         memcmp(f.payload, id, 4) == 0;
      }
    }
    if (!last_is_marker) {
      printf("sequence %lu: the valid frame after garbage was lost\n", i);
      return 1;
    }
    in_garbage += (unsigned long)(frames - 1);
  }
  printf("sequences=%lu bad_frames=%lu frames_in_garbage=%lu bytes=%lu\n", n, bad, in_garbage, bytes);
  return 0;
}
