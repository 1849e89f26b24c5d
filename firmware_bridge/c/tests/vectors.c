/* Test-vector driver: the Python test suite feeds it vectors made by the
 * Python implementation and compares what it prints.
 *
 *   vectors parse MAX_PAYLOAD   lines of hex chunks -> events, "." after each chunk
 *                               F <type> <flags> <seq> <payload hex> | E <kind> <seq or ->
 *   vectors encode              lines "<type> <flags> <seq> <payload hex>" -> wire hex
 *   vectors board MAX_PAYLOAD MAX_MESSAGE FLASH ARENA
 *                               lines of hex chunks -> hex of the board's answer bytes
 *                               (stub model, see stub_activate)
 */
#include "harness.h"

static uint8_t line[1 << 20];

static int parse_mode(uint16_t max_payload) {
  static uint8_t rx[PD_FRAME_ENCODED_MAX(65535)];
  pd_parser p;
  pd_frame f;
  long n;
  pd_parser_init(&p, rx, sizeof rx, max_payload);
  while ((n = read_hex_line(line, sizeof line)) >= 0) {
    long i;
    for (i = 0; i < n; i++) {
      int ev = pd_parser_feed(&p, line[i], &f);
      if (ev == PD_EVENT_FRAME) {
        printf("F %u %u %u ", f.type, f.flags, f.seq);
        print_hex(f.payload, f.length);
        printf("\n");
      } else if (ev < 0) {
        if (p.seq_valid) printf("E %d %u\n", -ev, f.seq);
        else printf("E %d -\n", -ev);
      }
    }
    printf(".\n");
  }
  return 0;
}

static int encode_mode(void) {
  static uint8_t wire[PD_WIRE_MAX(65535)];
  unsigned type, flags, seq;
  while (scanf("%u %u %u", &type, &flags, &seq) == 3) {
    long n = read_hex_line(line, sizeof line);
    size_t w;
    if (n < 0) n = 0;
    w = pd_frame_encode((uint8_t)type, (uint8_t)flags, (uint16_t)seq, line, (uint16_t)n, wire, sizeof wire);
    print_hex(wire, w);
    printf("\n");
  }
  return 0;
}

/* ------------------------------------------------------------ stub board
 * The same stub as tests/firmware_bridge/fb_reference.py StubRuntime:
 * image[0] = n (0: invalid model); arena needed = 2 * size; input and
 * output int8 [1, n] (scale 0.5 / zp 1, scale 0.25 / zp -2);
 * out[i] = in[i] ^ image[i % size]. */
#define SLOT 65536
static uint8_t staging[SLOT], active[SLOT], out_data[256];
static uint32_t active_size, arena_capacity;

static void stub_write(void *ctx, const uint8_t *d, size_t n) { (void)ctx; print_hex(d, n); }
static int stub_begin(void *ctx, uint32_t size) { (void)ctx; (void)size; memset(staging, 0xFF, sizeof staging); return 0; }
static int stub_flash(void *ctx, uint32_t off, const uint8_t *d, uint32_t n) { (void)ctx; memcpy(staging + off, d, n); return 0; }
static int stub_read(void *ctx, uint32_t off, uint8_t *d, uint32_t n) { (void)ctx; memcpy(d, staging + off, n); return 0; }

static void spec(pd_tensor_spec *s, uint8_t n, float scale, int32_t zp) {
  memset(s, 0, sizeof *s);
  s->dtype = 9;
  s->rank = 2;
  s->dims[0] = 1;
  s->dims[1] = n;
  s->scale = scale;
  s->zero_point = zp;
}

static int stub_activate(void *ctx, uint32_t size, pd_model_info *info, uint32_t *detail) {
  (void)ctx;
  if (staging[0] == 0) return PD_ERR_MODEL_INVALID;
  if (2u * size > arena_capacity) {
    *detail = 2u * size;
    return PD_ERR_ARENA_TOO_SMALL;
  }
  memcpy(active, staging, size);
  active_size = size;
  info->arena_used = 2u * size;
  info->n_inputs = info->n_outputs = 1;
  spec(&info->inputs[0], active[0], 0.5f, 1);
  spec(&info->outputs[0], active[0], 0.25f, -2);
  return 0;
}

static int stub_invoke(void *ctx, const pd_tensor *in, uint8_t n_in, pd_tensor *out, uint8_t n_out) {
  uint32_t i;
  (void)ctx; (void)n_in; (void)n_out;
  for (i = 0; i < in[0].nbytes; i++) out_data[i] = (uint8_t)(in[0].data[i] ^ active[i % active_size]);
  spec(&out[0].spec, active[0], 0.25f, -2);
  out[0].data = out_data;
  out[0].nbytes = in[0].nbytes;
  return 0;
}

static int board_mode(uint16_t max_payload, uint32_t max_message, uint32_t flash, uint32_t arena) {
  static uint8_t rx[PD_FRAME_ENCODED_MAX(65535)], tx[PD_WIRE_MAX(65535)], msg[1 << 20], resp[1 << 20];
  static pd_board b;
  pd_board_config cfg;
  long n;
  memset(&cfg, 0, sizeof cfg);
  cfg.board_id = "conformance";
  cfg.firmware_version = "ref 1";
  cfg.runtime = "stub";
  cfg.max_payload = max_payload;
  cfg.flash_capacity = flash;
  cfg.arena_capacity = arena_capacity = arena;
  cfg.rx_buf = rx; cfg.rx_cap = PD_FRAME_ENCODED_MAX((size_t)max_payload);
  cfg.tx_buf = tx; cfg.tx_cap = sizeof tx;
  cfg.msg_buf = msg; cfg.msg_cap = max_message;
  cfg.resp_buf = resp; cfg.resp_cap = sizeof resp;
  cfg.hooks.write = stub_write;
  cfg.hooks.staging_begin = stub_begin;
  cfg.hooks.staging_write = stub_flash;
  cfg.hooks.staging_read = stub_read;
  cfg.hooks.activate = stub_activate;
  cfg.hooks.invoke = stub_invoke;
  if (flash > SLOT || max_message > sizeof msg || pd_board_init(&b, &cfg) != 0) {
    fprintf(stderr, "bad board configuration\n");
    return 2;
  }
  while ((n = read_hex_line(line, sizeof line)) >= 0) {
    pd_board_feed(&b, line, (size_t)n);
    printf("\n");
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 3 && strcmp(argv[1], "parse") == 0) return parse_mode((uint16_t)atoi(argv[2]));
  if (argc >= 2 && strcmp(argv[1], "encode") == 0) return encode_mode();
  if (argc >= 6 && strcmp(argv[1], "board") == 0)
    return board_mode((uint16_t)atoi(argv[2]), (uint32_t)atol(argv[3]), (uint32_t)atol(argv[4]), (uint32_t)atol(argv[5]));
  fprintf(stderr, "usage: vectors parse MAX_PAYLOAD | encode | board MAX_PAYLOAD MAX_MESSAGE FLASH ARENA\n");
  return 2;
}
