/*
 * paradis_link: the board side of the firmware_bridge serial protocol
 * (version 1, see ../PROTOCOL.md) in portable C99.
 *
 * No malloc, no stdio; the only headers used are <string.h> and <stdint.h>.
 * Every buffer is the caller's. Four layers, usable alone:
 *
 *   pd_crc32_*    CRC-32 (IEEE 802.3 / zlib)
 *   pd_cobs_*     COBS encode / decode (decode works in place)
 *   pd_frame_* / pd_parser_*   frame encoding and a byte-at-a-time parser
 *   pd_board_*    the message dispatcher: HELLO/INFO, PING, fragments,
 *                 CONTINUE, FLASH_* with sha256 verification, ACTIVATE,
 *                 RUN, duplicates, NAK; hooks do the flash writes and the
 *                 TFLM invoke.
 *
 * Typical firmware loop:
 *
 *   static pd_board board;
 *   pd_board_init(&board, &config);           // buffers, limits, hooks
 *   for (;;) {
 *     uint8_t byte;
 *     if (uart_read(&byte)) pd_board_feed(&board, &byte, 1);   // answers via hooks.write
 *   }
 */
#ifndef PARADIS_LINK_H
#define PARADIS_LINK_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PD_PROTOCOL_VERSION 1u
#define PD_HEADER_SIZE 7u
#define PD_CRC_SIZE 4u
#define PD_FRAME_OVERHEAD 11u  /* header + CRC around the payload */
#define PD_MIN_PAYLOAD 128u    /* smallest max_payload a board may announce */
#define PD_SHA256_SIZE 32u

/* Largest COBS encoding of n bytes, and of a frame with an n-byte payload
 * (without and with the 0x00 delimiter). */
#define PD_COBS_MAX(n) ((n) + (n) / 254u + 1u)
#define PD_FRAME_ENCODED_MAX(payload) PD_COBS_MAX((payload) + PD_FRAME_OVERHEAD)
#define PD_WIRE_MAX(payload) (PD_FRAME_ENCODED_MAX(payload) + 1u)

#ifndef PD_MAX_IO
#define PD_MAX_IO 4 /* model inputs / outputs the dispatcher keeps specs of */
#endif
#ifndef PD_NAME_MAX
#define PD_NAME_MAX 32 /* longest partition name kept; longer is TOO_LARGE */
#endif
#define PD_MAX_RANK 8
#define PD_MAX_TENSORS 16

/* Frame flags (fragmentation). */
#define PD_FLAG_MORE 0x01u
#define PD_FLAG_CONT 0x02u

/* Message types. */
enum {
  PD_HELLO = 0x01, PD_INFO = 0x02, PD_PING = 0x03, PD_PONG = 0x04,
  PD_ACK = 0x05, PD_NAK = 0x06, PD_ERROR = 0x07, PD_CONTINUE = 0x08,
  PD_FLASH_BEGIN = 0x10, PD_FLASH_CHUNK = 0x11, PD_FLASH_END = 0x12,
  PD_ACTIVATE = 0x13, PD_RUN = 0x20, PD_RESULT = 0x21
};

/* ERROR codes (PROTOCOL.md 2.5). */
enum {
  PD_ERR_NONE = 0, PD_ERR_UNKNOWN_TYPE = 1, PD_ERR_BAD_PAYLOAD = 2,
  PD_ERR_BAD_STATE = 3, PD_ERR_TOO_LARGE = 4, PD_ERR_BAD_OFFSET = 5,
  PD_ERR_SHA_MISMATCH = 6, PD_ERR_ARENA_TOO_SMALL = 7,
  PD_ERR_MODEL_INVALID = 8, PD_ERR_NO_PARTITION = 9, PD_ERR_BAD_TENSOR = 10,
  PD_ERR_INVOKE_FAILED = 11, PD_ERR_INTERNAL = 12
};

/* Bad-frame kinds = NAK reasons (PROTOCOL.md 1.3). */
enum {
  PD_BAD_COBS = 1, PD_BAD_SHORT = 2, PD_BAD_CRC = 3, PD_BAD_VERSION = 4,
  PD_BAD_LENGTH = 5, PD_BAD_OVERSIZE = 6
};

/* ------------------------------------------------------------ CRC-32 */

/* crc = pd_crc32_update(0, data, n) equals zlib.crc32(data); chainable. */
uint32_t pd_crc32_update(uint32_t crc, const uint8_t *data, size_t len);

/* ------------------------------------------------------------ COBS */

/* Encodes src into dst (no delimiter); returns the length, 0 if cap is too
 * small. Output is identical to Python's `cobs.cobs.encode`. */
size_t pd_cobs_encode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap);

/* Decodes src into dst (dst == src allowed); returns 0 and sets *out_len,
 * or -1 for invalid COBS (a zero byte, a block running past the end) or
 * output over cap. */
int pd_cobs_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t cap, size_t *out_len);

/* ------------------------------------------------------------ frames */

typedef struct {
  uint8_t version;
  uint8_t type;
  uint8_t flags;
  uint16_t seq;
  uint16_t length;
  uint32_t crc;           /* the frame's CRC field */
  const uint8_t *payload; /* points into the parser's buffer */
} pd_frame;

/* Writes the wire bytes (COBS + 0x00) of a frame into wire; returns their
 * count, 0 if cap is too small (PD_WIRE_MAX(len) always suffices). */
size_t pd_frame_encode(uint8_t type, uint8_t flags, uint16_t seq, const uint8_t *payload, uint16_t len,
                       uint8_t *wire, size_t cap);

typedef struct {
  uint8_t *buf;
  size_t cap;   /* bytes of encoded frame held at most */
  size_t len;
  uint16_t max_payload;
  uint8_t discarding;
  uint8_t seq_valid; /* after a VERSION / LENGTH / OVERSIZE event: frame.seq is the bad frame's */
  uint32_t frames, errors;
} pd_parser;

/* buf must hold PD_FRAME_ENCODED_MAX(max_payload) bytes. */
void pd_parser_init(pd_parser *p, uint8_t *buf, size_t cap, uint16_t max_payload);

#define PD_EVENT_NONE 0
#define PD_EVENT_FRAME 1
/* Feeds one byte. Returns PD_EVENT_NONE, PD_EVENT_FRAME (*frame filled; its
 * payload is valid until the next feed), or -PD_BAD_* for bytes that were
 * not a frame. Never fails otherwise; memory stays within buf. */
int pd_parser_feed(pd_parser *p, uint8_t byte, pd_frame *frame);

/* ------------------------------------------------------------ SHA-256 */

typedef struct {
  uint32_t state[8];
  uint64_t bytes;
  uint8_t block[64];
  uint32_t fill;
} pd_sha256;

void pd_sha256_init(pd_sha256 *s);
void pd_sha256_update(pd_sha256 *s, const uint8_t *data, size_t len);
void pd_sha256_final(pd_sha256 *s, uint8_t digest[32]);

/* ------------------------------------------------------------ board */

typedef struct {
  uint8_t dtype; /* TFLite TensorType: 9 int8, 3 uint8, 7 int16, 2 int32, 0 float32, ... */
  uint8_t rank;
  uint32_t dims[PD_MAX_RANK];
  float scale;
  int32_t zero_point;
} pd_tensor_spec;

typedef struct {
  pd_tensor_spec spec;
  const uint8_t *data;
  uint32_t nbytes;
} pd_tensor;

typedef struct {
  uint32_t arena_used; /* smallest arena the model allocates in; 0 if unknown */
  uint8_t n_inputs, n_outputs;
  pd_tensor_spec inputs[PD_MAX_IO];
  pd_tensor_spec outputs[PD_MAX_IO];
} pd_model_info;

/* What the firmware does; every hook gets config.ctx. Return 0 or a PD_ERR_* code. */
typedef struct {
  /* Sends bytes on the UART (blocking is fine). */
  void (*write)(void *ctx, const uint8_t *data, size_t len);
  /* Prepares (erases) the staging slot for an image of `size` bytes. */
  int (*staging_begin)(void *ctx, uint32_t size);
  /* Writes bytes of the staging slot; offsets only grow. */
  int (*staging_write)(void *ctx, uint32_t offset, const uint8_t *data, uint32_t len);
  /* Reads staging bytes back (to tell a repeated chunk from a conflicting
   * one); may be NULL, then repeats are accepted unchecked. */
  int (*staging_read)(void *ctx, uint32_t offset, uint8_t *data, uint32_t len);
  /* Loads the verified staging image (size bytes) into the interpreter
   * (TFLM: MicroInterpreter + AllocateTensors), fills *info. On success the
   * firmware makes staging the active slot (persisting that last) and
   * returns 0. On failure the old model keeps running: return
   * PD_ERR_ARENA_TOO_SMALL (detail: arena needed, or 0) or
   * PD_ERR_MODEL_INVALID. */
  int (*activate)(void *ctx, uint32_t size, pd_model_info *info, uint32_t *detail);
  /* Runs the active model. Inputs were checked against info.inputs (count,
   * dtype, shape, quantization). Fill outputs[0..n_outputs) (specs and data
   * pointers, e.g. into the arena); return 0 or PD_ERR_INVOKE_FAILED. */
  int (*invoke)(void *ctx, const pd_tensor *inputs, uint8_t n_inputs, pd_tensor *outputs, uint8_t n_outputs);
} pd_hooks;

typedef struct {
  const char *board_id;
  const char *firmware_version;
  const char *runtime; /* "tflm" */
  uint16_t max_payload;    /* >= PD_MIN_PAYLOAD */
  uint32_t flash_capacity; /* one slot */
  uint32_t arena_capacity;
  /* rx: PD_FRAME_ENCODED_MAX(max_payload) bytes (frames decode in place). */
  uint8_t *rx_buf; size_t rx_cap;
  /* tx: PD_WIRE_MAX(max_payload) bytes; keeps the last answer for duplicates. */
  uint8_t *tx_buf; size_t tx_cap;
  /* msg: reassembled requests; its size is the max_message INFO reports. */
  uint8_t *msg_buf; size_t msg_cap;
  /* resp: answer payloads (INFO, PONG, RESULT...), kept for CONTINUE. */
  uint8_t *resp_buf; size_t resp_cap;
  pd_hooks hooks;
  void *ctx;
} pd_board_config;

typedef struct {
  pd_board_config cfg;
  pd_parser parser;
  uint16_t host_max;
  /* last request and its answer (tx_buf[0..tx_len)) */
  uint8_t have_last, last_type, last_flags;
  uint16_t last_seq, last_len;
  uint32_t last_crc;
  size_t tx_len;
  /* fragmented request */
  uint8_t assembling, asm_type;
  uint32_t asm_len;
  /* long answer kept for CONTINUE (resp_buf[0..pend_len)) */
  uint8_t pending, pend_type;
  uint32_t pend_len;
  /* staging slot: 0 empty, 1 receiving, 2 verified */
  uint8_t stage_state, stage_name_len;
  char stage_name[PD_NAME_MAX];
  uint32_t stage_size, staged;
  uint8_t stage_sha[PD_SHA256_SIZE];
  pd_sha256 sha;
  /* active slot */
  uint8_t has_active, active_name_len;
  char active_name[PD_NAME_MAX];
  uint32_t active_size;
  uint8_t active_sha[PD_SHA256_SIZE];
  pd_model_info model;
  uint32_t requests, duplicates, naks, errors;
} pd_board;

/* Returns 0, or -1 if a buffer is smaller than the limits need. */
int pd_board_init(pd_board *b, const pd_board_config *cfg);

/* Declares the partition found active in flash at boot (after the firmware
 * loaded it). */
void pd_board_set_active(pd_board *b, const char *name, uint8_t name_len, uint32_t size,
                         const uint8_t sha256[32], const pd_model_info *info);

/* Consumes received bytes; answers go out through hooks.write. */
void pd_board_feed(pd_board *b, const uint8_t *data, size_t len);

/* Bytes a tensor of this dtype takes per element; 0 for an unknown dtype. */
uint32_t pd_dtype_size(uint8_t dtype);

#ifdef __cplusplus
}
#endif
#endif /* PARADIS_LINK_H */
