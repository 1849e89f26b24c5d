/* The board-side message dispatcher (PROTOCOL.md sections 2 and 3). */
#include "paradis_link.h"

/* ------------------------------------------------------------ byte helpers */

typedef struct {
  uint8_t *buf;
  size_t cap, len;
  uint8_t over;
} writer;

static void w_bytes(writer *w, const void *src, size_t n) {
  if (w->over || n > w->cap - w->len) {
    w->over = 1;
    return;
  }
  memcpy(w->buf + w->len, src, n);
  w->len += n;
}

static void w_u8(writer *w, uint8_t v) { w_bytes(w, &v, 1); }

static void w_u16(writer *w, uint16_t v) {
  uint8_t b[2];
  b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8);
  w_bytes(w, b, 2);
}

static void w_u32(writer *w, uint32_t v) {
  uint8_t b[4];
  b[0] = (uint8_t)v; b[1] = (uint8_t)(v >> 8); b[2] = (uint8_t)(v >> 16); b[3] = (uint8_t)(v >> 24);
  w_bytes(w, b, 4);
}

static void w_f32(writer *w, float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  w_u32(w, v);
}

static void w_str(writer *w, const char *s, size_t n) {
  if (n > 255) n = 255;
  w_u8(w, (uint8_t)n);
  w_bytes(w, s, n);
}

static size_t c_strlen(const char *s) { return s ? strlen(s) : 0; }

typedef struct {
  const uint8_t *p;
  size_t len, pos;
  uint8_t bad;
} reader;

static const uint8_t *r_take(reader *r, size_t n) {
  const uint8_t *out;
  if (r->bad || n > r->len - r->pos) {
    r->bad = 1;
    return 0;
  }
  out = r->p + r->pos;
  r->pos += n;
  return out;
}

static uint32_t r_u32(reader *r) {
  const uint8_t *b = r_take(r, 4);
  return b ? (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24) : 0;
}

static uint8_t r_u8(reader *r) {
  const uint8_t *b = r_take(r, 1);
  return b ? b[0] : 0;
}

static float r_f32(reader *r) {
  uint32_t v = r_u32(r);
  float f;
  memcpy(&f, &v, 4);
  return f;
}

/* Well-formed UTF-8 (Unicode table 3-7), as Python's strict decoder. */
static int utf8_ok(const uint8_t *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    size_t k, more;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c < 0x80) { i++; continue; }
    if (c >= 0xC2 && c <= 0xDF) more = 1;
    else if (c == 0xE0) { more = 2; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) more = 2;
    else if (c == 0xED) { more = 2; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) more = 2;
    else if (c == 0xF0) { more = 3; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) more = 3;
    else if (c == 0xF4) { more = 3; hi = 0x8F; }
    else return 0;
    if (n - i - 1 < more) return 0;
    for (k = 1; k <= more; k++) {
      uint8_t d = s[i + k];
      if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return 0;
    }
    i += more + 1;
  }
  return 1;
}

/* math.isclose(a, b, rel_tol=1e-6), without <math.h>. */
static int scale_close(double a, double b) {
  double d, m, aa, bb;
  if (a == b) return 1;
  d = a - b;
  if (d < 0) d = -d;
  if (d != d || d - d != 0) return 0; /* NaN or infinite */
  aa = a < 0 ? -a : a;
  bb = b < 0 ? -b : b;
  m = aa > bb ? aa : bb;
  return d <= 1e-6 * m;
}

uint32_t pd_dtype_size(uint8_t dtype) {
  switch (dtype) {
    case 0: case 2: case 15: return 4;  /* float32, int32, uint32 */
    case 1: case 7: case 16: return 2;  /* float16, int16, uint16 */
    case 3: case 6: case 9: return 1;   /* uint8, bool, int8 */
    case 4: case 10: case 12: return 8; /* int64, float64, uint64 */
    default: return 0;
  }
}

/* ------------------------------------------------------------ answers */

typedef struct {
  uint8_t type;
  const uint8_t *payload;
  size_t len;
  uint8_t small[4];
  uint32_t detail;
  const char *text;
} answer;

static int ack_u32(answer *a, uint32_t v) {
  a->type = PD_ACK;
  a->small[0] = (uint8_t)v; a->small[1] = (uint8_t)(v >> 8);
  a->small[2] = (uint8_t)(v >> 16); a->small[3] = (uint8_t)(v >> 24);
  a->payload = a->small;
  a->len = 4;
  return PD_ERR_NONE;
}

static int fail(answer *a, int code, uint32_t detail, const char *text) {
  a->detail = detail;
  a->text = text;
  return code;
}

/* A writer into the board's answer buffer. */
static void resp_writer(pd_board *b, writer *w) {
  w->buf = b->cfg.resp_buf; w->cap = b->cfg.resp_cap; w->len = 0; w->over = 0;
}

/* Answers `type` with what `w` wrote, or fails with `code` when it did not fit. */
static int written(answer *a, const writer *w, uint8_t type, int code, uint32_t detail, const char *text) {
  if (w->over) return fail(a, code, detail, text);
  a->type = type;
  a->payload = w->buf;
  a->len = w->len;
  return PD_ERR_NONE;
}

static uint16_t answer_limit(const pd_board *b) {
  return b->host_max < b->cfg.max_payload ? b->host_max : b->cfg.max_payload;
}

static void send_frame(pd_board *b, uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload, size_t len) {
  b->tx_len = pd_frame_encode(type, flags, seq, payload, (uint16_t)len, b->cfg.tx_buf, b->cfg.tx_cap);
}

static void send_error(pd_board *b, uint16_t seq, int code, uint32_t detail, const char *text) {
  uint8_t buf[6 + 96];
  writer w;
  size_t n = c_strlen(text);
  if (n > 96) n = 96;
  w.buf = buf; w.cap = sizeof buf; w.len = 0; w.over = 0;
  w_u8(&w, (uint8_t)code);
  w_u32(&w, detail);
  w_str(&w, text, n);
  b->errors++;
  b->assembling = 0;
  send_frame(b, PD_ERROR, 0, seq, buf, w.len);
}

/* Sends an answer, cut into a first part + CONTINUE if it is long (long
 * answers always live in resp_buf). */
static void send_answer(pd_board *b, uint16_t seq, const answer *a) {
  uint16_t limit = answer_limit(b);
  if (a->len <= limit) {
    send_frame(b, a->type, 0, seq, a->payload, a->len);
    return;
  }
  b->pending = 1;
  b->pend_type = a->type;
  b->pend_len = (uint32_t)a->len;
  send_frame(b, a->type, PD_FLAG_MORE, seq, a->payload, limit);
}

/* ------------------------------------------------------------ handlers */

static int put_spec(writer *w, const pd_tensor_spec *s) {
  uint8_t i;
  w_u8(w, s->dtype);
  w_u8(w, s->rank);
  for (i = 0; i < s->rank && i < PD_MAX_RANK; i++) w_u32(w, s->dims[i]);
  w_f32(w, s->scale);
  w_u32(w, (uint32_t)s->zero_point);
  return !w->over;
}

static int h_hello(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  writer w;
  uint16_t host;
  static const uint8_t zeros[PD_SHA256_SIZE] = {0};
  if (n != 2) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "HELLO carries a u16");
  host = (uint16_t)(p[0] | (p[1] << 8));
  if (host < PD_MIN_PAYLOAD) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "host max payload below 128");
  b->host_max = host;
  resp_writer(b, &w);
  w_u8(&w, PD_PROTOCOL_VERSION);
  w_u16(&w, b->cfg.max_payload);
  w_u32(&w, b->cfg.flash_capacity);
  w_u32(&w, b->cfg.arena_capacity);
  w_u32(&w, (uint32_t)b->cfg.msg_cap);
  w_bytes(&w, b->has_active ? b->active_sha : zeros, PD_SHA256_SIZE);
  w_u32(&w, b->has_active ? b->active_size : 0);
  w_str(&w, b->cfg.board_id, c_strlen(b->cfg.board_id));
  w_str(&w, b->cfg.firmware_version, c_strlen(b->cfg.firmware_version));
  w_str(&w, b->cfg.runtime, c_strlen(b->cfg.runtime));
  w_str(&w, b->active_name, b->has_active ? b->active_name_len : 0);
  return written(a, &w, PD_INFO, PD_ERR_INTERNAL, 0, "resp buffer too small for INFO");
}

static int h_ping(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  if (n > b->cfg.resp_cap) return fail(a, PD_ERR_TOO_LARGE, (uint32_t)b->cfg.resp_cap, "PING longer than the answer buffer");
  memmove(b->cfg.resp_buf, p, n);
  a->type = PD_PONG;
  a->payload = b->cfg.resp_buf;
  a->len = n;
  return PD_ERR_NONE;
}

static int h_flash_begin(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  reader r;
  uint32_t size;
  const uint8_t *sha, *name;
  uint8_t name_len;
  int rc;
  r.p = p; r.len = n; r.pos = 0; r.bad = 0;
  size = r_u32(&r);
  sha = r_take(&r, PD_SHA256_SIZE);
  name_len = r_u8(&r);
  name = r_take(&r, name_len);
  if (r.bad || r.pos != n || !utf8_ok(name, name_len)) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "malformed FLASH_BEGIN");
  if (size == 0) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "an image of 0 bytes");
  if (size > b->cfg.flash_capacity) return fail(a, PD_ERR_TOO_LARGE, b->cfg.flash_capacity, "image larger than the flash slot");
#if PD_NAME_MAX < 255
  if (name_len > PD_NAME_MAX) return fail(a, PD_ERR_TOO_LARGE, PD_NAME_MAX, "partition name too long");
#endif
  if (b->stage_state != 0 && b->stage_size == size && b->stage_name_len == name_len &&
      memcmp(b->stage_sha, sha, PD_SHA256_SIZE) == 0 && memcmp(b->stage_name, name, name_len) == 0)
    return ack_u32(a, b->staged); /* the same image: resume */
  b->stage_state = 0;
  rc = b->cfg.hooks.staging_begin ? b->cfg.hooks.staging_begin(b->cfg.ctx, size) : PD_ERR_NONE;
  if (rc) return fail(a, rc, 0, "staging slot cannot be prepared");
  b->stage_state = 1;
  b->stage_size = size;
  b->staged = 0;
  memcpy(b->stage_sha, sha, PD_SHA256_SIZE);
  memcpy(b->stage_name, name, name_len);
  b->stage_name_len = name_len;
  pd_sha256_init(&b->sha);
  return ack_u32(a, 0);
}

static int same_as_staged(pd_board *b, uint32_t offset, const uint8_t *data, uint32_t len) {
  uint8_t tmp[32];
  if (!b->cfg.hooks.staging_read) return 1;
  while (len) {
    uint32_t k = len < sizeof tmp ? len : (uint32_t)sizeof tmp;
    if (b->cfg.hooks.staging_read(b->cfg.ctx, offset, tmp, k) || memcmp(tmp, data, k) != 0) return 0;
    offset += k; data += k; len -= k;
  }
  return 1;
}

static int h_flash_chunk(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  uint32_t offset, len;
  const uint8_t *data;
  int rc;
  if (n < 4) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "FLASH_CHUNK without offset");
  if (b->stage_state == 0) return fail(a, PD_ERR_BAD_STATE, 0, "FLASH_CHUNK without FLASH_BEGIN");
  offset = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
  data = p + 4;
  len = (uint32_t)(n - 4);
  if (offset == b->staged) {
    if ((uint64_t)b->staged + len > b->stage_size) return fail(a, PD_ERR_TOO_LARGE, b->stage_size, "chunk past the image end");
    if (len) {
      rc = b->cfg.hooks.staging_write ? b->cfg.hooks.staging_write(b->cfg.ctx, offset, data, len) : PD_ERR_INTERNAL;
      if (rc) return fail(a, rc, 0, "flash write failed");
      pd_sha256_update(&b->sha, data, len);
      b->staged += len;
    }
    return ack_u32(a, b->staged);
  }
  if ((uint64_t)offset + len <= b->staged && same_as_staged(b, offset, data, len)) return ack_u32(a, b->staged);
  return fail(a, PD_ERR_BAD_OFFSET, b->staged, "chunk not at the expected offset");
}

static int h_flash_end(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  uint8_t digest[PD_SHA256_SIZE];
  pd_sha256 copy;
  (void)p;
  if (n) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "FLASH_END carries no payload");
  if (b->stage_state == 0) return fail(a, PD_ERR_BAD_STATE, 0, "FLASH_END without FLASH_BEGIN");
  if (b->staged != b->stage_size) return fail(a, PD_ERR_BAD_STATE, b->staged, "image incomplete");
  if (b->stage_state == 1) {
    copy = b->sha;
    pd_sha256_final(&copy, digest);
    if (memcmp(digest, b->stage_sha, PD_SHA256_SIZE) != 0) {
      b->stage_state = 0;
      return fail(a, PD_ERR_SHA_MISMATCH, 0, "staged image does not match its sha256; discarded");
    }
    b->stage_state = 2;
  }
  a->type = PD_ACK;
  a->payload = a->small;
  a->len = 0;
  return PD_ERR_NONE;
}

static int activation_answer(pd_board *b, answer *a) {
  writer w;
  uint8_t i;
  resp_writer(b, &w);
  w_u32(&w, b->model.arena_used);
  w_u8(&w, b->model.n_inputs);
  for (i = 0; i < b->model.n_inputs; i++) put_spec(&w, &b->model.inputs[i]);
  w_u8(&w, b->model.n_outputs);
  for (i = 0; i < b->model.n_outputs; i++) put_spec(&w, &b->model.outputs[i]);
  return written(a, &w, PD_ACK, PD_ERR_INTERNAL, 0, "resp buffer too small");
}

static int h_activate(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  pd_model_info info;
  uint32_t detail = 0;
  int rc;
  if (n != PD_SHA256_SIZE) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "ACTIVATE carries a sha256");
  if (b->has_active && memcmp(p, b->active_sha, PD_SHA256_SIZE) == 0) return activation_answer(b, a);
  if (b->stage_state != 2 || memcmp(p, b->stage_sha, PD_SHA256_SIZE) != 0)
    return fail(a, PD_ERR_NO_PARTITION, 0, "no verified image with this sha256");
  if (!b->cfg.hooks.activate) return fail(a, PD_ERR_INTERNAL, 0, "no activate hook");
  memset(&info, 0, sizeof info);
  rc = b->cfg.hooks.activate(b->cfg.ctx, b->stage_size, &info, &detail);
  if (rc) return fail(a, rc, detail, rc == PD_ERR_ARENA_TOO_SMALL ? "model does not fit the arena" : "model rejected");
  if (info.n_inputs > PD_MAX_IO || info.n_outputs > PD_MAX_IO) return fail(a, PD_ERR_INTERNAL, 0, "too many model tensors");
  b->model = info;
  b->has_active = 1;
  b->active_size = b->stage_size;
  memcpy(b->active_sha, b->stage_sha, PD_SHA256_SIZE);
  memcpy(b->active_name, b->stage_name, b->stage_name_len);
  b->active_name_len = b->stage_name_len;
  b->stage_state = 0;
  return activation_answer(b, a);
}

static int spec_equal(const pd_tensor_spec *x, const pd_tensor_spec *y) {
  uint8_t i;
  if (x->dtype != y->dtype || x->rank != y->rank || x->zero_point != y->zero_point) return 0;
  for (i = 0; i < x->rank; i++)
    if (x->dims[i] != y->dims[i]) return 0;
  return scale_close(x->scale, y->scale);
}

static int h_run(pd_board *b, const uint8_t *p, size_t n, answer *a) {
  pd_tensor in[PD_MAX_IO], out[PD_MAX_IO];
  reader r;
  writer w;
  uint8_t count, i, k;
  int rc;
  if (!b->has_active) return fail(a, PD_ERR_NO_PARTITION, 0, "no active partition");
  r.p = p; r.len = n; r.pos = 0; r.bad = 0;
  count = r_u8(&r);
  if (count > PD_MAX_TENSORS) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "too many tensors");
  for (i = 0; i < count && !r.bad; i++) {
    pd_tensor_spec s;
    uint64_t need;
    uint32_t nbytes, isize;
    int zero, over;
    const uint8_t *data;
    memset(&s, 0, sizeof s);
    s.dtype = r_u8(&r);
    s.rank = r_u8(&r);
    if (r.bad) break;
    isize = pd_dtype_size(s.dtype);
    if (!isize || s.rank > PD_MAX_RANK) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "bad tensor dtype or rank");
    need = isize;
    zero = over = 0;
    for (k = 0; k < s.rank; k++) {
      s.dims[k] = r_u32(&r);
      if (s.dims[k] == 0) zero = 1;
      else if (!over && (need *= s.dims[k]) > 0xFFFFFFFFu) over = 1;
    }
    if (zero) need = 0;
    else if (over) need = (uint64_t)0x100000000u; /* never equals a u32 nbytes */
    s.scale = r_f32(&r);
    s.zero_point = (int32_t)r_u32(&r);
    nbytes = r_u32(&r);
    if (r.bad) break;
    if ((uint64_t)nbytes != need) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "tensor nbytes disagrees with its shape");
    data = r_take(&r, nbytes);
    if (r.bad) break;
    if (i < PD_MAX_IO) {
      in[i].spec = s;
      in[i].data = data;
      in[i].nbytes = nbytes;
    }
  }
  if (r.bad || r.pos != n) return fail(a, PD_ERR_BAD_PAYLOAD, 0, "malformed RUN");
  if (count != b->model.n_inputs) return fail(a, PD_ERR_BAD_TENSOR, count, "wrong number of tensors");
  for (i = 0; i < count; i++)
    if (!spec_equal(&in[i].spec, &b->model.inputs[i])) return fail(a, PD_ERR_BAD_TENSOR, i, "tensor differs from the model input");
  if (!b->cfg.hooks.invoke) return fail(a, PD_ERR_INTERNAL, 0, "no invoke hook");
  memset(out, 0, sizeof out);
  rc = b->cfg.hooks.invoke(b->cfg.ctx, in, count, out, b->model.n_outputs);
  if (rc) return fail(a, rc, 0, "invoke failed");
  resp_writer(b, &w);
  w_u8(&w, b->model.n_outputs);
  for (i = 0; i < b->model.n_outputs; i++) {
    put_spec(&w, &out[i].spec);
    w_u32(&w, out[i].nbytes);
    w_bytes(&w, out[i].data, out[i].nbytes);
  }
  return written(a, &w, PD_RESULT, PD_ERR_TOO_LARGE, (uint32_t)b->cfg.resp_cap, "RESULT larger than the answer buffer");
}

/* ------------------------------------------------------------ dispatch */

static void h_continue(pd_board *b, const pd_frame *f) {
  uint32_t offset, part, limit = answer_limit(b);
  uint8_t flags = PD_FLAG_CONT;
  if (f->length != 4) {
    send_error(b, f->seq, PD_ERR_BAD_PAYLOAD, 0, "CONTINUE carries a u32 offset");
    return;
  }
  if (!b->pending) {
    send_error(b, f->seq, PD_ERR_BAD_STATE, 0, "no long answer to continue");
    return;
  }
  offset = (uint32_t)f->payload[0] | ((uint32_t)f->payload[1] << 8) | ((uint32_t)f->payload[2] << 16) |
           ((uint32_t)f->payload[3] << 24);
  if (offset == 0 || offset >= b->pend_len) {
    send_error(b, f->seq, PD_ERR_BAD_OFFSET, b->pend_len, "offset outside the answer");
    return;
  }
  part = b->pend_len - offset;
  if (part > limit) {
    part = limit;
    flags |= PD_FLAG_MORE;
  }
  send_frame(b, b->pend_type, flags, f->seq, b->cfg.resp_buf + offset, part);
}

static void dispatch(pd_board *b, const pd_frame *f) {
  const uint8_t *p = f->payload;
  size_t n = f->length;
  answer a;
  int rc;
  memset(&a, 0, sizeof a);
  if (f->flags & ~(PD_FLAG_MORE | PD_FLAG_CONT)) {
    send_error(b, f->seq, PD_ERR_BAD_PAYLOAD, 0, "unknown flags");
    return;
  }
  if (f->type == PD_CONTINUE) {
    h_continue(b, f);
    return;
  }
  b->pending = 0;
  if (f->flags & (PD_FLAG_MORE | PD_FLAG_CONT)) {
    if (!(f->flags & PD_FLAG_CONT)) {
      b->assembling = 1;
      b->asm_type = f->type;
      b->asm_len = 0;
    } else if (!b->assembling || b->asm_type != f->type) {
      send_error(b, f->seq, PD_ERR_BAD_STATE, 0, "continuation fragment without a first fragment");
      return;
    }
    if ((size_t)b->asm_len + n > b->cfg.msg_cap) {
      send_error(b, f->seq, PD_ERR_TOO_LARGE, (uint32_t)b->cfg.msg_cap, "request over max_message");
      return;
    }
    memcpy(b->cfg.msg_buf + b->asm_len, p, n);
    b->asm_len += (uint32_t)n;
    if (f->flags & PD_FLAG_MORE) {
      ack_u32(&a, b->asm_len);
      send_answer(b, f->seq, &a);
      return;
    }
    p = b->cfg.msg_buf;
    n = b->asm_len;
  }
  b->assembling = 0;
  switch (f->type) {
    case PD_HELLO: rc = h_hello(b, p, n, &a); break;
    case PD_PING: rc = h_ping(b, p, n, &a); break;
    case PD_FLASH_BEGIN: rc = h_flash_begin(b, p, n, &a); break;
    case PD_FLASH_CHUNK: rc = h_flash_chunk(b, p, n, &a); break;
    case PD_FLASH_END: rc = h_flash_end(b, p, n, &a); break;
    case PD_ACTIVATE: rc = h_activate(b, p, n, &a); break;
    case PD_RUN: rc = h_run(b, p, n, &a); break;
    default: rc = fail(&a, PD_ERR_UNKNOWN_TYPE, f->type, "unknown request type"); break;
  }
  if (rc) send_error(b, f->seq, rc, a.detail, a.text);
  else send_answer(b, f->seq, &a);
}

static void handle(pd_board *b, const pd_frame *f) {
  if (b->have_last && f->seq == b->last_seq && f->type == b->last_type && f->flags == b->last_flags &&
      f->length == b->last_len && f->crc == b->last_crc) {
    b->duplicates++; /* a retransmission: the answer again, nothing executed */
  } else {
    b->requests++;
    dispatch(b, f);
    b->have_last = 1;
    b->last_seq = f->seq;
    b->last_type = f->type;
    b->last_flags = f->flags;
    b->last_len = f->length;
    b->last_crc = f->crc;
  }
  if (b->tx_len && b->cfg.hooks.write) b->cfg.hooks.write(b->cfg.ctx, b->cfg.tx_buf, b->tx_len);
}

static void nak(pd_board *b, int kind, uint16_t seq) {
  uint8_t wire[PD_WIRE_MAX(1)], reason = (uint8_t)kind;
  size_t n = pd_frame_encode(PD_NAK, 0, seq, &reason, 1, wire, sizeof wire);
  b->naks++;
  if (n && b->cfg.hooks.write) b->cfg.hooks.write(b->cfg.ctx, wire, n);
}

/* ------------------------------------------------------------ API */

int pd_board_init(pd_board *b, const pd_board_config *cfg) {
  memset(b, 0, sizeof *b);
  b->cfg = *cfg;
  if (cfg->max_payload < PD_MIN_PAYLOAD || cfg->rx_cap < PD_FRAME_ENCODED_MAX((size_t)cfg->max_payload) ||
      cfg->tx_cap < PD_WIRE_MAX((size_t)cfg->max_payload) || !cfg->rx_buf || !cfg->tx_buf || !cfg->resp_buf ||
      (cfg->msg_cap && !cfg->msg_buf))
    return -1;
  pd_parser_init(&b->parser, cfg->rx_buf, cfg->rx_cap, cfg->max_payload);
  b->host_max = 0xFFFF;
  return 0;
}

void pd_board_set_active(pd_board *b, const char *name, uint8_t name_len, uint32_t size, const uint8_t sha256[32],
                         const pd_model_info *info) {
#if PD_NAME_MAX < 255
  if (name_len > PD_NAME_MAX) name_len = PD_NAME_MAX;
#endif
  memcpy(b->active_name, name, name_len);
  b->active_name_len = name_len;
  b->active_size = size;
  memcpy(b->active_sha, sha256, PD_SHA256_SIZE);
  b->model = *info;
  b->has_active = 1;
}

void pd_board_feed(pd_board *b, const uint8_t *data, size_t len) {
  size_t i;
  pd_frame f;
  for (i = 0; i < len; i++) {
    int ev = pd_parser_feed(&b->parser, data[i], &f);
    if (ev == PD_EVENT_FRAME) handle(b, &f);
    else if (ev < 0) nak(b, -ev, b->parser.seq_valid ? f.seq : 0);
  }
}
