/* SHA-256 (FIPS 180-4), incremental, for verifying staged images. */
#include "paradis_link.h"

static const uint32_t K[64] = {
  0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
  0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
  0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
  0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
  0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
  0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
  0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
  0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void compress(pd_sha256 *s, const uint8_t *block) {
  uint32_t w[64], a, b, c, d, e, f, g, h, t1, t2;
  int i;
  for (i = 0; i < 16; i++)
    w[i] = ((uint32_t)block[4 * i] << 24) | ((uint32_t)block[4 * i + 1] << 16) |
           ((uint32_t)block[4 * i + 2] << 8) | (uint32_t)block[4 * i + 3];
  for (i = 16; i < 64; i++) {
    uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
    uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  a = s->state[0]; b = s->state[1]; c = s->state[2]; d = s->state[3];
  e = s->state[4]; f = s->state[5]; g = s->state[6]; h = s->state[7];
  for (i = 0; i < 64; i++) {
    t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
    t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
    h = g; g = f; f = e; e = d + t1; d = c; c = b; b = a; a = t1 + t2;
  }
  s->state[0] += a; s->state[1] += b; s->state[2] += c; s->state[3] += d;
  s->state[4] += e; s->state[5] += f; s->state[6] += g; s->state[7] += h;
}

void pd_sha256_init(pd_sha256 *s) {
  static const uint32_t iv[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
  memcpy(s->state, iv, sizeof iv);
  s->bytes = 0;
  s->fill = 0;
}

void pd_sha256_update(pd_sha256 *s, const uint8_t *data, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) {
    s->block[s->fill++] = data[i];
    if (s->fill == 64) {
      compress(s, s->block);
      s->fill = 0;
    }
  }
  s->bytes += len;
}

void pd_sha256_final(pd_sha256 *s, uint8_t digest[32]) {
  uint64_t bits = s->bytes * 8u;
  uint8_t pad = 0x80;
  int i;
  pd_sha256_update(s, &pad, 1);
  pad = 0;
  while (s->fill != 56) pd_sha256_update(s, &pad, 1);
  for (i = 7; i >= 0; i--) {
    uint8_t b = (uint8_t)(bits >> (8 * i));
    pd_sha256_update(s, &b, 1);
  }
  for (i = 0; i < 8; i++) {
    digest[4 * i] = (uint8_t)(s->state[i] >> 24);
    digest[4 * i + 1] = (uint8_t)(s->state[i] >> 16);
    digest[4 * i + 2] = (uint8_t)(s->state[i] >> 8);
    digest[4 * i + 3] = (uint8_t)s->state[i];
  }
}
