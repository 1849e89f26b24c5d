/* CRC-32, COBS, frame encoding and the streaming frame parser. */
#include "paradis_link.h"

/* Nibble table: 64 bytes of flash instead of 1 KiB, two lookups a byte. */
static const uint32_t crc_nibble[16] = {
  0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u, 0x4DB26158u, 0x5005713Cu,
  0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu, 0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu,
};

uint32_t pd_crc32_update(uint32_t crc, const uint8_t *data, size_t len) {
  size_t i;
  crc = ~crc;
  for (i = 0; i < len; i++) {
    crc ^= data[i];
    crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
    crc = (crc >> 4) ^ crc_nibble[crc & 0x0Fu];
  }
  return ~crc;
}

/* ------------------------------------------------------------ COBS */

typedef struct {
  uint8_t *dst;
  size_t cap, pos, code_pos;
  uint8_t code;
  uint8_t open;     /* a block has been started */
  uint8_t overflow;
} cobs_enc;

static void enc_put(cobs_enc *e, uint8_t b) {
  if (e->pos < e->cap) e->dst[e->pos] = b; else e->overflow = 1;
  e->pos++;
}

static void enc_open(cobs_enc *e) {
  e->code_pos = e->pos;
  enc_put(e, 0); /* placeholder for the block's code */
  e->code = 1;
  e->open = 1;
}

static void enc_close(cobs_enc *e) {
  if (e->code_pos < e->cap) e->dst[e->code_pos] = e->code;
  e->open = 0;
}

static void enc_init(cobs_enc *e, uint8_t *dst, size_t cap) {
  e->dst = dst; e->cap = cap; e->pos = 0; e->overflow = 0;
  enc_open(e);
}

static void enc_byte(cobs_enc *e, uint8_t b) {
  /* After a full (0xFF) block the next one opens lazily, so input ending on
   * a block boundary gets no empty trailing block (as Python's cobs). */
  if (!e->open) enc_open(e);
  if (b == 0) {
    enc_close(e);
    enc_open(e);
    return;
  }
  enc_put(e, b);
  if (++e->code == 0xFF) enc_close(e);
}

static void enc_bytes(cobs_enc *e, const uint8_t *src, size_t len) {
  size_t i;
  for (i = 0; i < len; i++) enc_byte(e, src[i]);
}

static size_t enc_finish(cobs_enc *e) {
  if (e->open) enc_close(e);
  return e->overflow ? 0 : e->pos;
}

size_t pd_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap) {
  cobs_enc e;
  enc_init(&e, dst, cap);
  enc_bytes(&e, src, len);
  return enc_finish(&e);
}

int pd_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len) {
  size_t in = 0, out = 0;
  while (in < len) {
    uint8_t code = src[in++];
    uint8_t i;
    if (code == 0) return -1;
    if ((size_t)(code - 1) > len - in) return -1; /* block runs past the end */
    for (i = 1; i < code; i++) {
      uint8_t b = src[in++];
      if (b == 0) return -1;
      if (out >= cap) return -1;
      dst[out++] = b; /* out <= in - 1: safe in place */
    }
    if (code != 0xFF && in < len) {
      if (out >= cap) return -1;
      dst[out++] = 0;
    }
  }
  *out_len = out;
  return 0;
}

/* ------------------------------------------------------------ frames */

size_t pd_frame_encode(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload, uint16_t len,
                       uint8_t *wire, size_t cap) {
  uint8_t head[PD_HEADER_SIZE], tail[PD_CRC_SIZE];
  uint32_t crc;
  cobs_enc e;
  size_t n;
  head[0] = PD_PROTOCOL_VERSION;
  head[1] = type;
  head[2] = flags;
  head[3] = (uint8_t)(seq & 0xFF);
  head[4] = (uint8_t)(seq >> 8);
  head[5] = (uint8_t)(len & 0xFF);
  head[6] = (uint8_t)(len >> 8);
  crc = pd_crc32_update(0, head, sizeof head);
  crc = pd_crc32_update(crc, payload, len);
  tail[0] = (uint8_t)crc; tail[1] = (uint8_t)(crc >> 8); tail[2] = (uint8_t)(crc >> 16); tail[3] = (uint8_t)(crc >> 24);
  if (cap == 0) return 0;
  enc_init(&e, wire, cap - 1); /* room for the delimiter */
  enc_bytes(&e, head, sizeof head);
  enc_bytes(&e, payload, len);
  enc_bytes(&e, tail, sizeof tail);
  n = enc_finish(&e);
  if (n == 0) return 0;
  wire[n] = 0;
  return n + 1;
}

void pd_parser_init(pd_parser *p, uint8_t *buf, size_t cap, uint16_t max_payload) {
  size_t need = PD_FRAME_ENCODED_MAX((size_t)max_payload);
  p->buf = buf;
  p->cap = cap < need ? cap : need;
  p->len = 0;
  p->max_payload = max_payload;
  p->discarding = 0;
  p->seq_valid = 0;
  p->frames = 0;
  p->errors = 0;
}

static int bad(pd_parser *p, int kind) {
  p->errors++;
  return -kind;
}

static int parse(pd_parser *p, pd_frame *f) {
  size_t n, plen;
  uint32_t crc;
  if (pd_cobs_decode(p->buf, p->len, p->buf, p->len, &n) != 0) return bad(p, PD_BAD_COBS);
  if (n < PD_FRAME_OVERHEAD) return bad(p, PD_BAD_SHORT);
  crc = (uint32_t)p->buf[n - 4] | ((uint32_t)p->buf[n - 3] << 8) | ((uint32_t)p->buf[n - 2] << 16) |
        ((uint32_t)p->buf[n - 1] << 24);
  if (pd_crc32_update(0, p->buf, n - 4) != crc) return bad(p, PD_BAD_CRC);
  f->version = p->buf[0];
  f->type = p->buf[1];
  f->flags = p->buf[2];
  f->seq = (uint16_t)(p->buf[3] | (p->buf[4] << 8));
  f->length = (uint16_t)(p->buf[5] | (p->buf[6] << 8));
  f->crc = crc;
  f->payload = p->buf + PD_HEADER_SIZE;
  plen = n - PD_FRAME_OVERHEAD;
  p->seq_valid = 1;
  if (f->version != PD_PROTOCOL_VERSION) return bad(p, PD_BAD_VERSION);
  if (f->length != plen) return bad(p, PD_BAD_LENGTH);
  if (plen > p->max_payload) return bad(p, PD_BAD_OVERSIZE);
  p->seq_valid = 0;
  p->frames++;
  return PD_EVENT_FRAME;
}

int pd_parser_feed(pd_parser *p, uint8_t byte, pd_frame *f) {
  int ev;
  p->seq_valid = 0;
  if (byte != 0) {
    if (p->discarding) return PD_EVENT_NONE;
    if (p->len >= p->cap) { /* no delimiter in time: drop up to the next one */
      p->len = 0;
      p->discarding = 1;
      return bad(p, PD_BAD_OVERSIZE);
    }
    p->buf[p->len++] = byte;
    return PD_EVENT_NONE;
  }
  if (p->discarding) {
    p->discarding = 0;
    return PD_EVENT_NONE;
  }
  if (p->len == 0) return PD_EVENT_NONE; /* padding */
  ev = parse(p, f);
  p->len = 0;
  return ev;
}
