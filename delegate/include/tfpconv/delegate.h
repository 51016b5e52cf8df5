/* tfpconv TFLite delegate: public C API.
 *
 * The delegate runs the float32 CONV_2D operators that a tfpconv plan (the "tfpconv" entry of the
 * model's metadata, written by tfpconv.convert) describes, with pattern-sparse kernels. Every other
 * operator, and every convolution whose plan is missing, stale or unsupported, stays with TFLite.
 *
 *   TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
 *   options.num_threads = 2;
 *   TfLiteDelegate* delegate = TfpconvDelegateCreate(&options);
 *   ... TfLiteInterpreterOptionsAddDelegate / Interpreter::ModifyGraphWithDelegate ...
 *   TfpconvDelegateDelete(delegate);  // after the interpreter is destroyed
 */
#ifndef TFPCONV_DELEGATE_H_
#define TFPCONV_DELEGATE_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define TFPCONV_EXPORT __declspec(dllexport)
#else
#define TFPCONV_EXPORT __attribute__((visibility("default")))
#endif

struct TfLiteDelegate;

typedef enum TfpconvLogLevel {
  kTfpconvLogError = 0,
  kTfpconvLogWarning = 1, /* default: declined convolutions with a bad plan are reported */
  kTfpconvLogInfo = 2,    /* every claimed / declined node and why */
  kTfpconvLogVerbose = 3,
} TfpconvLogLevel;

/* Receives each log line of the delegate (at or above the options' log_level): its level and the
 * message, one line without the "tfpconv <level>: " prefix or a newline; `message` is valid only
 * during the call. Called on the thread that logs (the one applying the delegate or running the
 * interpreter); interpreters on several threads sharing one delegate call it concurrently. */
typedef void (*TfpconvLogCallback)(TfpconvLogLevel level, const char* message, void* user_data);

typedef struct TfpconvDelegateOptions {
  /* Threads for the convolution kernels; values < 1 mean 1. */
  int num_threads;
  TfpconvLogLevel log_level;
  /* Instruction set to use: NULL or "auto" (best the CPU supports), "avx512", "avx2", "neon",
   * "scalar". A set the CPU lacks falls back to the best available one, with a warning. */
  const char* isa;
  /* 0 (default): claim a planned convolution only where the engine is expected to be faster than
   * TFLite (the plan's convert-time tuning decides, else layers with fewer than 4 input channels
   * stay with TFLite). Non-zero: claim every planned convolution the engine can run. */
  int claim_all;
  /* Where log lines go: NULL (default) writes "tfpconv <level>: message" lines to stderr; otherwise
   * each line goes to log_callback(level, message, log_user_data) instead (e.g. Android's
   * __android_log_print, where stderr is lost). The callback must stay callable as long as the
   * delegate exists. Start from TfpconvDelegateOptionsDefault(); code built against a header
   * without these two fields must be recompiled. */
  TfpconvLogCallback log_callback;
  void* log_user_data;
} TfpconvDelegateOptions;

TFPCONV_EXPORT TfpconvDelegateOptions TfpconvDelegateOptionsDefault(void);

/* Returns NULL on failure (e.g. out of memory). `options` may be NULL for the defaults. */
TFPCONV_EXPORT struct TfLiteDelegate* TfpconvDelegateCreate(const TfpconvDelegateOptions* options);

TFPCONV_EXPORT void TfpconvDelegateDelete(struct TfLiteDelegate* delegate);

/* TFLite external-delegate entry points (tf.lite.experimental.load_delegate, benchmark_model
 * --external_delegate_path). Keys: "num_threads", "log_level" (error|warning|info|verbose or
 * 0..3), "isa", "claim" (auto|all, as claim_all). An unknown key or bad value is reported through report_error and returns NULL. */
TFPCONV_EXPORT struct TfLiteDelegate* tflite_plugin_create_delegate(
    char** options_keys, char** options_values, size_t num_options,
    void (*report_error)(const char*));

TFPCONV_EXPORT void tflite_plugin_destroy_delegate(struct TfLiteDelegate* delegate);

/* The CONV_2D node indices (of the primary subgraph) the delegate claimed the last time it was
 * applied to a model: writes up to `capacity` of them to `node_indices` (may be NULL) and returns
 * how many there are, or -1 for a NULL delegate. Lets tests and tools check what really ran on the
 * delegate. The MAX_POOL_2D and activation-mask MUL nodes it runs inside the same partitions are
 * not listed (its log names them: "claimed MAX_POOL_2D node ..."). */
TFPCONV_EXPORT int TfpconvDelegateClaimedNodes(const struct TfLiteDelegate* delegate,
                                               int* node_indices, int capacity);

/* Bytes of the packed weights (non-zeros in execution order, offsets, schedule) of those claimed
 * nodes; 0 for a NULL delegate. */
TFPCONV_EXPORT size_t TfpconvDelegatePackedWeightBytes(const struct TfLiteDelegate* delegate);

/* For tfpconv.convert(tune=True): the sets of tuned kernel parameters worth timing for one 3x3
 * CONV_2D (NHWC input in_h x in_w x in_c, out_c filters, strides, padding 1 = SAME or 2 = VALID)
 * on instruction set `isa` (NULL or "auto": the best this CPU supports), one set per line, as
 * "isa=<name> variant=<name> tile_oc=<n> tile_ic=<n>": the instruction set's name ("scalar",
 * "avx2", "avx512", "neon"), the kernel variant's stable name (e.g. "r8v1"), and integer kernel
 * parameters; a key left out takes the engine's default (see delegate/engine/pattern_conv.h). The
 * tuner stores the winner as a plan Tuning {isa, variant, params: tile_oc, tile_ic} and its claim
 * verdict (converter/tfpconv_plan.fbs). Writes at most `capacity` bytes, NUL included,
 * to `buffer` (may be NULL) and returns the length of the whole text, or -1 for an invalid shape
 * or instruction set. */
TFPCONV_EXPORT int TfpconvDelegateTuningCandidates(int in_h, int in_w, int in_c, int out_c,
                                                   int stride_h, int stride_w, int padding,
                                                   const char* isa, char* buffer, int capacity);

/* The unit of semi-structured activation sparsity on a layer of out_h output rows: a block of
 * ActivationUnitRows(out_h) rows x ActivationUnitPixels pixels on a grid from pixel (0, 0) (blocks
 * at the bottom and right edges may be smaller), output pixels the engine's kernels compute
 * together; the engine skips a unit whose mask is all zero. tfpconv.activation.sparsify trains
 * masks in these units. Rows: 0 for out_h < 1. */
TFPCONV_EXPORT int TfpconvDelegateActivationUnitRows(int out_h);
TFPCONV_EXPORT int TfpconvDelegateActivationUnitPixels(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* TFPCONV_DELEGATE_H_ */
