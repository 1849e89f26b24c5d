/* Unit tests of the C reference: CRC, COBS, SHA-256, frames, parser, board. */
#include "harness.h"

static int failures = 0, checks = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    checks++;                                                         \
    if (!(cond)) {                                                    \
      failures++;                                                     \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                 \
  } while (0)

static void test_crc(void) {
  const uint8_t s[] = "123456789";
  CHECK(pd_crc32_update(0, s, 9) == 0xCBF43926u);
  CHECK(pd_crc32_update(pd_crc32_update(0, s, 4), s + 4, 5) == 0xCBF43926u);
  CHECK(pd_crc32_update(0, s, 0) == 0);
}

static void test_cobs(void) {
  static const struct { const char *in; size_t n; const char *out; size_t m; } v[] = {
    {"", 0, "\x01", 1},
    {"\x00", 1, "\x01\x01", 2},
    {"\x00\x00", 2, "\x01\x01\x01", 3},
    {"\x11\x22\x00\x33", 4, "\x03\x11\x22\x02\x33", 5},
    {"\x11\x22\x33\x44", 4, "\x05\x11\x22\x33\x44", 5},
    {"\x11\x00\x00\x00", 4, "\x02\x11\x01\x01\x01", 5},
  };
  uint8_t buf[600], back[600], big[600];
  size_t i, n, m;
  for (i = 0; i < sizeof v / sizeof v[0]; i++) {
    n = pd_cobs_encode((const uint8_t *)v[i].in, v[i].n, buf, sizeof buf);
    CHECK(n == v[i].m && memcmp(buf, v[i].out, n) == 0);
    CHECK(pd_cobs_decode(buf, n, back, sizeof back, &m) == 0 && m == v[i].n && memcmp(back, v[i].in, m) == 0);
  }
  /* 254 non-zero bytes: one full block, no empty block after it */
  for (i = 0; i < 254; i++) big[i] = (uint8_t)(i % 255 + 1);
  n = pd_cobs_encode(big, 254, buf, sizeof buf);
  CHECK(n == 255 && buf[0] == 0xFF);
  n = pd_cobs_encode(big, 255 > 254 ? 254 : 0, buf, 254);
  CHECK(n == 0); /* capacity too small */
  /* in place, and random round trips */
  for (i = 0; i < 2000; i++) {
    size_t len = rnd_below(560), k;
    for (k = 0; k < len; k++) big[k] = (uint8_t)(rnd_below(4) ? rnd() : 0);
    n = pd_cobs_encode(big, len, buf, sizeof buf);
    CHECK(n > 0 && n <= PD_COBS_MAX(len));
    for (k = 0; k < n; k++) CHECK(buf[k] != 0);
    CHECK(pd_cobs_decode(buf, n, buf, n, &m) == 0 && m == len && memcmp(buf, big, len) == 0);
  }
  CHECK(pd_cobs_decode((const uint8_t *)"\x05\x11", 2, back, sizeof back, &m) == -1);
  CHECK(pd_cobs_decode((const uint8_t *)"\x03\x11\x00", 3, back, sizeof back, &m) == -1);
}

static void test_sha256(void) {
  pd_sha256 s;
  uint8_t d[32];
  static const uint8_t abc[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                  0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  static const uint8_t empty[32] = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
                                    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
  /* sha256 of 1,000,000 'a' */
  static const uint8_t million[32] = {0xcd, 0xc7, 0x6e, 0x5c, 0x99, 0x14, 0xfb, 0x92, 0x81, 0xa1, 0xc7, 0xe2, 0x84, 0xd7, 0x3e, 0x67,
                                      0xf1, 0x80, 0x9a, 0x48, 0xa4, 0x97, 0x20, 0x0e, 0x04, 0x6d, 0x39, 0xcc, 0xc7, 0x11, 0x2c, 0xd0};
  uint8_t a[1000];
  int i;
  pd_sha256_init(&s);
  pd_sha256_update(&s, (const uint8_t *)"abc", 3);
  pd_sha256_final(&s, d);
  CHECK(memcmp(d, abc, 32) == 0);
  pd_sha256_init(&s);
  pd_sha256_final(&s, d);
  CHECK(memcmp(d, empty, 32) == 0);
  memset(a, 'a', sizeof a);
  pd_sha256_init(&s);
  for (i = 0; i < 1000; i++) pd_sha256_update(&s, a, sizeof a);
  pd_sha256_final(&s, d);
  CHECK(memcmp(d, million, 32) == 0);
}

static void test_frames_and_parser(void) {
  uint8_t wire[PD_WIRE_MAX(300)], rx[PD_FRAME_ENCODED_MAX(300)], payload[300];
  pd_parser p;
  pd_frame f;
  size_t n, i, k;
  int ev, got;
  pd_parser_init(&p, rx, sizeof rx, 300);
  for (i = 0; i < 500; i++) {
    uint16_t len = (uint16_t)rnd_below(301), seq = (uint16_t)rnd();
    for (k = 0; k < len; k++) payload[k] = (uint8_t)rnd();
    n = pd_frame_encode(0x20, 1, seq, payload, len, wire, sizeof wire);
    CHECK(n > 0 && wire[n - 1] == 0);
    /* garbage first, then a delimiter, then the frame */
    got = 0;
    for (k = 0; k < rnd_below(40); k++) pd_parser_feed(&p, (uint8_t)rnd(), &f);
    pd_parser_feed(&p, 0, &f);
    for (k = 0; k < n; k++) {
      ev = pd_parser_feed(&p, wire[k], &f);
      if (ev == PD_EVENT_FRAME) {
        got++;
        CHECK(k == n - 1 && f.type == 0x20 && f.flags == 1 && f.seq == seq && f.length == len);
        CHECK(memcmp(f.payload, payload, len) == 0);
      }
    }
    CHECK(got == 1);
  }
  /* oversize: reported once, memory bounded, resync after */
  for (k = 0; k < 5000; k++) {
    ev = pd_parser_feed(&p, 7, &f);
    CHECK(ev == PD_EVENT_NONE || (k == sizeof rx && ev == -PD_BAD_OVERSIZE));
  }
  CHECK(p.len <= sizeof rx);
  n = pd_frame_encode(3, 0, 9, (const uint8_t *)"hi", 2, wire, sizeof wire);
  pd_parser_feed(&p, 0, &f);
  got = 0;
  for (k = 0; k < n; k++) got += pd_parser_feed(&p, wire[k], &f) == PD_EVENT_FRAME;
  CHECK(got == 1 && f.seq == 9);
  /* payload over the parser's max payload, although the encoded frame fits */
  pd_parser_init(&p, rx, sizeof rx, 290);
  memset(payload, 0, sizeof payload); /* zeros: COBS adds 1 byte, so the encoding fits the buffer */
  n = pd_frame_encode(3, 0, 10, payload, 291, wire, sizeof wire);
  CHECK(n - 1 <= PD_FRAME_ENCODED_MAX(290));
  ev = 0;
  for (k = 0; k < n; k++) ev = pd_parser_feed(&p, wire[k], &f);
  CHECK(ev == -PD_BAD_OVERSIZE && p.seq_valid && f.seq == 10);
  CHECK(pd_frame_encode(3, 0, 1, payload, 300, wire, 50) == 0);
}

/* A board with RAM flash and a model that adds one to every byte. */
static uint8_t flash_slot[4096], active_slot[4096];
static uint8_t out_buf[64];
static uint8_t written[4096];
static size_t written_len;

static void w_hook(void *ctx, const uint8_t *d, size_t n) {
  (void)ctx;
  if (written_len + n <= sizeof written) memcpy(written + written_len, d, n);
  written_len += n;
}
static int begin_hook(void *ctx, uint32_t size) { (void)ctx; (void)size; memset(flash_slot, 0xFF, sizeof flash_slot); return 0; }
static int write_hook(void *ctx, uint32_t off, const uint8_t *d, uint32_t n) { (void)ctx; memcpy(flash_slot + off, d, n); return 0; }
static int read_hook(void *ctx, uint32_t off, uint8_t *d, uint32_t n) { (void)ctx; memcpy(d, flash_slot + off, n); return 0; }
static int activate_hook(void *ctx, uint32_t size, pd_model_info *info, uint32_t *detail) {
  (void)ctx; (void)detail;
  memcpy(active_slot, flash_slot, size);
  info->arena_used = 100;
  info->n_inputs = info->n_outputs = 1;
  info->inputs[0].dtype = info->outputs[0].dtype = 9;
  info->inputs[0].rank = info->outputs[0].rank = 1;
  info->inputs[0].dims[0] = info->outputs[0].dims[0] = 4;
  info->inputs[0].scale = info->outputs[0].scale = 0.5f;
  return 0;
}
static int invoke_hook(void *ctx, const pd_tensor *in, uint8_t n_in, pd_tensor *out, uint8_t n_out) {
  uint32_t i;
  (void)ctx; (void)n_in; (void)n_out;
  for (i = 0; i < in[0].nbytes; i++) out_buf[i] = (uint8_t)(in[0].data[i] + 1);
  out[0].spec = in[0].spec;
  out[0].data = out_buf;
  out[0].nbytes = in[0].nbytes;
  return 0;
}

/* Sends one request frame; returns the answer frame (parsed from written). */
static int request(pd_board *b, uint8_t type, uint16_t seq, const uint8_t *payload, uint16_t len, pd_frame *ans,
                   uint8_t *rxbuf, size_t rxcap) {
  uint8_t wire[PD_WIRE_MAX(600)];
  pd_parser p;
  size_t n = pd_frame_encode(type, 0, seq, payload, len, wire, sizeof wire), k;
  int got = 0;
  written_len = 0;
  pd_board_feed(b, wire, n);
  pd_parser_init(&p, rxbuf, rxcap, 600);
  for (k = 0; k < written_len; k++) got += pd_parser_feed(&p, written[k], ans) == PD_EVENT_FRAME;
  return got;
}

static void test_board(void) {
  static uint8_t rx[PD_FRAME_ENCODED_MAX(256)], tx[PD_WIRE_MAX(256)], msg[1024], resp[1024], prx[1024];
  pd_board_config cfg;
  pd_board b;
  pd_frame a;
  uint8_t req[300];
  pd_sha256 s;
  uint8_t image[100];
  size_t k;
  memset(&cfg, 0, sizeof cfg);
  cfg.board_id = "unit"; cfg.firmware_version = "1"; cfg.runtime = "stub";
  cfg.max_payload = 256; cfg.flash_capacity = sizeof flash_slot; cfg.arena_capacity = 1000;
  cfg.rx_buf = rx; cfg.rx_cap = sizeof rx; cfg.tx_buf = tx; cfg.tx_cap = sizeof tx;
  cfg.msg_buf = msg; cfg.msg_cap = sizeof msg; cfg.resp_buf = resp; cfg.resp_cap = sizeof resp;
  cfg.hooks.write = w_hook; cfg.hooks.staging_begin = begin_hook; cfg.hooks.staging_write = write_hook;
  cfg.hooks.staging_read = read_hook; cfg.hooks.activate = activate_hook; cfg.hooks.invoke = invoke_hook;
  CHECK(pd_board_init(&b, &cfg) == 0);
  cfg.tx_cap = 10;
  CHECK(pd_board_init(&b, &cfg) == -1);
  cfg.tx_cap = sizeof tx;
  CHECK(pd_board_init(&b, &cfg) == 0);

  req[0] = 0; req[1] = 4; /* HELLO 1024 */
  CHECK(request(&b, PD_HELLO, 1, req, 2, &a, prx, sizeof prx) == 1 && a.type == PD_INFO && a.seq == 1);
  CHECK(a.payload[0] == 1 && a.payload[1] == 0 && a.payload[2] == 1); /* version 1, max payload 256 */
  CHECK(request(&b, PD_PING, 2, (const uint8_t *)"abc", 3, &a, prx, sizeof prx) == 1 && a.type == PD_PONG &&
        a.length == 3 && memcmp(a.payload, "abc", 3) == 0);
  CHECK(request(&b, 0x55, 3, req, 0, &a, prx, sizeof prx) == 1 && a.type == PD_ERROR && a.payload[0] == PD_ERR_UNKNOWN_TYPE);

  /* flash 100 bytes in two chunks, then activate and run */
  for (k = 0; k < sizeof image; k++) image[k] = (uint8_t)(k * 7);
  pd_sha256_init(&s);
  pd_sha256_update(&s, image, sizeof image);
  req[0] = 100; req[1] = req[2] = req[3] = 0;
  pd_sha256_final(&s, req + 4);
  req[36] = 1; req[37] = 'm';
  CHECK(request(&b, PD_FLASH_BEGIN, 4, req, 38, &a, prx, sizeof prx) == 1 && a.type == PD_ACK && a.length == 4);
  {
    uint8_t chunk[64];
    memset(chunk, 0, 4);
    memcpy(chunk + 4, image, 60);
    CHECK(request(&b, PD_FLASH_CHUNK, 5, chunk, 64, &a, prx, sizeof prx) == 1 && a.type == PD_ACK && a.payload[0] == 60);
    /* the same frame again: answered from cache, not written twice */
    CHECK(request(&b, PD_FLASH_CHUNK, 5, chunk, 64, &a, prx, sizeof prx) == 1 && a.payload[0] == 60 && b.duplicates == 1);
    chunk[0] = 60;
    memcpy(chunk + 4, image + 60, 40);
    CHECK(request(&b, PD_FLASH_CHUNK, 6, chunk, 44, &a, prx, sizeof prx) == 1 && a.payload[0] == 100);
  }
  CHECK(request(&b, PD_FLASH_END, 7, req, 0, &a, prx, sizeof prx) == 1 && a.type == PD_ACK && a.length == 0);
  CHECK(request(&b, PD_ACTIVATE, 8, req + 4, 32, &a, prx, sizeof prx) == 1 && a.type == PD_ACK);
  CHECK(memcmp(active_slot, image, sizeof image) == 0 && b.has_active);
  {
    static const uint8_t run[] = {1, 9, 1, 4, 0, 0, 0, 0x00, 0x00, 0x00, 0x3f, 0, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4};
    CHECK(request(&b, PD_RUN, 9, run, sizeof run, &a, prx, sizeof prx) == 1 && a.type == PD_RESULT);
    CHECK(a.length == sizeof run && memcmp(a.payload + 19, "\x02\x03\x04\x05", 4) == 0);
  }
  /* a damaged frame gets NAK CRC and changes nothing */
  {
    uint8_t wire[64], raw[32];
    pd_parser p;
    size_t n;
    memcpy(raw, "\x01\x03\x00\x0a\x00\x01\x00x\x00\x00\x00\x00", 12);
    n = pd_cobs_encode(raw, 12, wire, sizeof wire);
    wire[n++] = 0;
    written_len = 0;
    pd_board_feed(&b, wire, n);
    pd_parser_init(&p, prx, sizeof prx, 600);
    for (k = 0; k < written_len; k++)
      if (pd_parser_feed(&p, written[k], &a) == PD_EVENT_FRAME) CHECK(a.type == PD_NAK && a.payload[0] == PD_BAD_CRC);
    CHECK(b.naks == 1);
  }
}

int main(void) {
  test_crc();
  test_cobs();
  test_sha256();
  test_frames_and_parser();
  test_board();
  if (failures) {
    fprintf(stderr, "%d of %d checks failed\n", failures, checks);
    return 1;
  }
  printf("ok %d checks\n", checks);
  return 0;
}
