// The engine's driver: picks a kernel variant, packs the weights, and runs a layer as
// (transform the input into phase planes) then (tiles x output-channel chunks) in parallel.
#include "pattern_conv.h"

#include <algorithm>
#include <cstring>

#include "dispatch.h"
#include "kernels/kernels.h"
#include "packing.h"

namespace tfpconv {
namespace {

struct Params {
  int variant = 0;
  int tile_oc = 32;
  int tile_ic = 0;
};

// Whether a variant can run a shape (whole-row variants need the output width to fit).
bool Fits(const ConvShape& s, const kernels::Variant& v, int lanes) {
  return !v.whole_rows || WholeRowsPerTile(s, v.vecs * lanes) > 0;
}

// Input channels per block such that a tile's transformed input fits in about a third of L1.
int DefaultTileIc(const ConvShape& s, const kernels::Variant& v, int lanes) {
  const size_t budget_floats = 16 * 1024 / sizeof(float);
  const Geometry g = MakeGeometry(s, v, lanes);
  return static_cast<int>(std::max<size_t>(1, budget_floats / g.channel_stride));
}

// The fraction of the accumulator lanes that land on output pixels.
double LanesUsed(const ConvShape& s, const Geometry& g) {
  return double(s.out_h) * s.out_w / (double(g.tiles_y) * g.tiles_x * g.acc_floats);
}

// Defaults when the plan carries no tuned parameters: the flat variant that wastes least of its
// vector lanes on the layer (tile edges, padding columns of whole-row tiles) and of its loads on the
// halo of its input block, with a small bonus for more accumulators per kernel (the 4 broadcasts and
// offsets of a kernel are shared by all of them); input-channel blocks whose transformed tile input
// fits in about half of L1.
Params DefaultParams(const ConvShape& s, const kernels::KernelSet& set) {
  Params p;
  double best = -1;
  for (int i = 0; i < set.num_variants; ++i) {
    const kernels::Variant& v = set.variants[i];
    // The pattern-specialised loops pay a branch per pattern run; with ~28% of kernels kept and
    // L1-sized input-channel blocks the runs are short, and the flat loops measured faster.
    if (v.specialised || !Fits(s, v, set.lanes)) continue;
    const Geometry g = MakeGeometry(s, v, set.lanes);
    const double lanes_used = LanesUsed(s, g);
    const double halo = double(g.rows * g.cols) / (g.hq * g.wq);
    const int accumulators = v.rows * v.vecs;
    const double score =
        lanes_used * (0.9 + 0.1 * halo) * (accumulators / (accumulators + 1.0));
    if (score > best + 1e-9) {
      best = score;
      p.variant = i;
    }
  }
  p.tile_ic = DefaultTileIc(s, set.variants[p.variant], set.lanes);
  return p;
}

// The position of a variant name in the set's table, or -1.
int FindVariant(const kernels::KernelSet& set, const std::string& name) {
  for (int v = 0; v < set.num_variants; ++v)
    if (name == set.variants[v].name) return v;
  return -1;
}

// Overrides *p with the tuned kernel parameters; false with *problem when one is unusable here.
bool ApplyTuned(const KernelTuning& tuning, const ConvShape& s, Isa isa,
                const kernels::KernelSet& set, Params* p, std::string* problem) {
  if (!tuning.variant.empty()) {
    const int v = FindVariant(set, tuning.variant);
    if (v < 0) {
      *problem = "tuned variant '" + tuning.variant + "' is not one of this build's " +
                 IsaName(isa) + " variants";
      return false;
    }
    if (!Fits(s, set.variants[v], set.lanes)) {
      *problem = "tuned variant " + tuning.variant + " is narrower than the layer";
      return false;
    }
    p->variant = v;
    p->tile_ic = DefaultTileIc(s, set.variants[v], set.lanes);
  }
  for (const auto& [key, value] : tuning.params) {
    if (key != "tile_oc" && key != "tile_ic") continue;  // unknown keys are ignored
    if (value < 1 || value > (1 << 20)) {
      *problem = "tuned " + key + " " + std::to_string(value) + " is out of range";
      return false;
    }
    (key == "tile_oc" ? p->tile_oc : p->tile_ic) = static_cast<int>(value);
  }
  return true;
}

// The tuned parameters when they fit the shape, else the defaults, with *note saying why.
Params ChooseParams(const KernelTuning& tuning, const ConvShape& s, Isa isa,
                    const kernels::KernelSet& set, std::string* note) {
  const Params defaults = DefaultParams(s, set);
  Params p = defaults;
  std::string problem;
  if (!ApplyTuned(tuning, s, isa, set, &p, &problem)) {
    *note = problem + ": the engine's defaults run instead";
    return defaults;
  }
  return p;
}

class ConvImpl final : public PatternConv {
 public:
  ConvImpl(const ConvShape& shape, Isa isa, const kernels::KernelSet& set, const Params& params)
      : shape_(shape),
        isa_(isa),
        set_(set),
        params_(params),
        variant_(set.variants[params.variant]) {
    geo_ = MakeGeometry(shape, variant_, set.lanes);
    by_pattern_ = false;
    if (shape.stride_h == 1 && shape.stride_w == 1 && variant_.pattern11 != nullptr) {
      fn_ = variant_.pattern11;
      by_pattern_ = true;
    } else if (variant_.whole_rows) {
      fn_ = variant_.flat_any;
    } else if (shape.stride_h == 1 && shape.stride_w == 1) {
      fn_ = variant_.flat1;
    } else if (shape.stride_h == 2 && shape.stride_w == 2) {
      fn_ = variant_.flat2;
    } else {
      fn_ = variant_.flat_any;
    }
  }

  bool Pack(const float* weights, const float* bias, const PatternPlan& plan, const Params& p,
            std::string* error) {
    return PackWeights(shape_, geo_, weights, bias, plan, p.tile_oc, p.tile_ic, by_pattern_,
                       &packed_, error);
  }

  void Run(const float* input, float* output, ThreadPool* pool) const override {
    const ConvShape& s = shape_;
    const size_t tiles = size_t(geo_.tiles_y) * geo_.tiles_x;
    const size_t chunks = packed_.chunk_begin.size() - 1;
    // An item transforms one tile's input into a per-thread buffer (it stays in L2) and runs a
    // range of output-channel chunks on it. Small layers split the chunks over a few items so
    // every thread has work, at the price of transforming a tile more than once.
    const size_t threads = pool != nullptr ? size_t(pool->num_threads()) : 1;
    const size_t splits = std::min(chunks, std::max<size_t>(1, (4 * threads + tiles - 1) / tiles));
    for (int b = 0; b < s.batch; ++b) {
      Job job{this, input + size_t(b) * s.in_h * s.in_w * s.in_c,
              output + size_t(b) * s.out_h * s.out_w * s.out_c, splits};
      Parallel(pool, tiles * splits, &ComputeTask, &job);
    }
  }

  size_t packed_weight_bytes() const override {
    return packed_.kernels.size() * sizeof(kernels::PackedKernel) +
           packed_.runs.size() * sizeof(kernels::Run) +
           packed_.tasks.size() * sizeof(kernels::OcTask) + packed_.bias.size() * sizeof(float) +
           packed_.order.size() * sizeof(int32_t);
  }
  Isa isa() const override { return isa_; }
  KernelTuning kernel_params() const override {
    KernelTuning t;
    t.variant = variant_.name;
    t.params = {{"tile_oc", params_.tile_oc}, {"tile_ic", params_.tile_ic}};
    return t;
  }

 private:
  struct Job {
    const ConvImpl* self;
    const float* image;
    float* out;
    size_t splits;  // items per tile
  };

  static void Parallel(ThreadPool* pool, size_t n, void (*task)(void*, size_t), void* ctx) {
    if (pool != nullptr) {
      pool->ParallelFor(n, task, ctx);
    } else {
      for (size_t i = 0; i < n; ++i) task(ctx, i);
    }
  }

  static void ComputeTask(void* ctx, size_t i) {
    const Job& job = *static_cast<Job*>(ctx);
    job.self->ComputeItem(job, i);
  }

  // One output tile x a range of output-channel chunks: transform the tile's input, run the
  // chunks into one accumulator block (chunk by chunk, so each chunk's accumulators stay in L1
  // while its kernels pass over an input-channel block), then store the block.
  void ComputeItem(const Job& job, size_t item) const {
    const ConvShape& s = shape_;
    const PackedWeights& pw = packed_;
    const size_t chunks = pw.chunk_begin.size() - 1;
    const size_t tile = item / job.splits, split = item % job.splits;
    const size_t k0 = chunks * split / job.splits, k1 = chunks * (split + 1) / job.splits;
    const int begin = pw.chunk_begin[k0], n = pw.chunk_begin[k1] - begin;

    thread_local std::vector<float> x, acc_buffer;
    const float* tile_input = nullptr;
    if (pw.nonzero_kernels > 0) {
      if (x.size() < size_t(geo_.tile_stride)) x.resize(geo_.tile_stride);
      TransformTile(s, geo_, set_, job.image, x.data(), tile);
      tile_input = x.data();
    }
    const size_t acc_floats = size_t(n) * geo_.acc_floats;
    if (acc_buffer.size() < acc_floats) acc_buffer.resize(acc_floats);
    float* acc = acc_buffer.data();
    for (size_t k = k0; k < k1; ++k)
      ComputeChunk(tile_input, acc + size_t(pw.chunk_begin[k] - begin) * geo_.acc_floats, k);

    // The tile's pixels that are inside the output, to NHWC with the fused activation.
    const int ty = static_cast<int>(tile / geo_.tiles_x), tx = static_cast<int>(tile % geo_.tiles_x);
    const int y0 = ty * geo_.rows, x0 = tx * geo_.cols;
    kernels::StoreArgs store;
    store.acc = acc;
    store.acc_floats = geo_.acc_floats;
    store.acc_pitch = geo_.acc_pitch;
    store.rows = std::min(geo_.rows, s.out_h - y0);
    store.cols = std::min(geo_.cols, s.out_w - x0);
    store.order = pw.order.data() + begin;
    store.position = n == s.out_c ? pw.position.data() : nullptr;
    store.n = n;
    store.out = job.out + (size_t(y0) * s.out_w + x0) * s.out_c;
    store.out_row = ptrdiff_t{s.out_w} * s.out_c;
    store.out_c = s.out_c;
    store.lo = s.act_min;
    store.hi = s.act_max;
    set_.store(store);
  }

  // One chunk of output channels of a tile, all input channels, into acc (bias first).
  void ComputeChunk(const float* tile_input, float* acc, size_t k) const {
    const PackedWeights& pw = packed_;
    const int begin = pw.chunk_begin[k], n = pw.chunk_begin[k + 1] - begin;
    const int tile_floats = geo_.acc_floats;
    for (int j = 0; j < n; ++j) std::fill_n(acc + j * tile_floats, tile_floats, pw.bias[begin + j]);
    if (tile_input == nullptr) return;
    kernels::ChunkArgs args;
    args.x = tile_input;
    args.wq = geo_.wq;
    args.tap_off = geo_.tap_off;
    args.num_tasks = size_t(n);
    args.runs = pw.runs.data();
    args.kernels = pw.kernels.data();
    args.acc = acc;
    const kernels::OcTask* tasks = pw.tasks.data() + size_t(begin) * pw.num_cblocks;
    for (int cb = 0; cb < pw.num_cblocks; ++cb) {
      args.tasks = tasks + size_t(cb) * n;
      fn_(args);
    }
  }

  ConvShape shape_;
  Isa isa_;
  const kernels::KernelSet& set_;
  Params params_;
  kernels::Variant variant_;
  kernels::ChunkFn fn_ = nullptr;
  bool by_pattern_ = false;
  Geometry geo_;
  PackedWeights packed_;
};

}  // namespace

std::unique_ptr<PatternConv> PatternConv::Create(const ConvShape& shape, const float* weights,
                                                 const float* bias, const PatternPlan& plan,
                                                 Isa isa, std::string* error,
                                                 std::string* note) {
  std::string local_error, local_note;
  if (error == nullptr) error = &local_error;
  if (note == nullptr) note = &local_note;
  note->clear();
  const kernels::KernelSet* set = KernelSetFor(isa);
  if (set == nullptr) {
    *error = std::string("instruction set ") + IsaName(isa) + " not available";
    return nullptr;
  }
  if (weights == nullptr) {
    *error = "no weights";
    return nullptr;
  }
  *error = ValidatePlan(shape, plan);
  if (!error->empty()) return nullptr;
  const Params params = ChooseParams(plan.tuning, shape, isa, *set, note);
  auto conv = std::make_unique<ConvImpl>(shape, isa, *set, params);
  if (!conv->Pack(weights, bias, plan, params, error)) return nullptr;
  return conv;
}

bool WorthClaiming(const ConvShape& shape, const PatternPlan& plan, std::string* reason) {
  constexpr int kMinInputChannels = 4;
  if (plan.tuning.claim.has_value()) {
    if (!*plan.tuning.claim) *reason = "the plan's tuning measured TFLite's own kernel faster";
    return *plan.tuning.claim;
  }
  if (shape.in_c < kMinInputChannels) {
    *reason = std::to_string(shape.in_c) +
              " input channel(s): TFLite's dense kernel is faster on so few (convert with "
              "tune=True to measure)";
    return false;
  }
  return true;
}

std::vector<KernelTuning> TuningCandidates(const ConvShape& shape, Isa isa) {
  std::vector<KernelTuning> out;
  const kernels::KernelSet* set = KernelSetFor(isa);
  if (set == nullptr) return out;
  // Variants that waste far more lanes than the best one are not worth timing.
  double best_used = 0;
  for (int v = 0; v < set->num_variants; ++v)
    if (Fits(shape, set->variants[v], set->lanes))
      best_used = std::max(best_used, LanesUsed(shape, MakeGeometry(shape, set->variants[v], set->lanes)));
  for (int v = 0; v < set->num_variants; ++v) {
    if (!Fits(shape, set->variants[v], set->lanes)) continue;
    if (LanesUsed(shape, MakeGeometry(shape, set->variants[v], set->lanes)) < 0.6 * best_used)
      continue;
    const int tile_ic = DefaultTileIc(shape, set->variants[v], set->lanes);
    const auto candidate = [&](int tile_oc, int tile_ic_value) {
      KernelTuning t;
      t.variant = set->variants[v].name;
      t.params = {{"tile_oc", tile_oc}, {"tile_ic", tile_ic_value}};
      return t;
    };
    for (int oc : {16, 32, 64}) out.push_back(candidate(oc, tile_ic));
    if (tile_ic < shape.in_c) out.push_back(candidate(32, shape.in_c));
  }
  return out;
}

std::string DescribeTuning(const KernelTuning& tuning, Isa isa) {
  std::string s = IsaName(isa);
  if (tuning.claim.has_value()) s += *tuning.claim ? " claim=1" : " claim=0";
  if (!tuning.variant.empty()) s += " variant=" + tuning.variant;
  for (const auto& [key, value] : tuning.params) s += " " + key + "=" + std::to_string(value);
  return s;
}

void ReferenceConv(const ConvShape& s, const float* weights, const float* bias,
                   const float* input, float* output) {
  for (int b = 0; b < s.batch; ++b) {
    const float* in = input + size_t(b) * s.in_h * s.in_w * s.in_c;
    float* out = output + size_t(b) * s.out_h * s.out_w * s.out_c;
    for (int y = 0; y < s.out_h; ++y) {
      for (int x = 0; x < s.out_w; ++x) {
        for (int o = 0; o < s.out_c; ++o) {
          float sum = bias ? bias[o] : 0.0f;
          for (int dy = 0; dy < 3; ++dy) {
            const int iy = y * s.stride_h + dy - s.pad_top;
            if (iy < 0 || iy >= s.in_h) continue;
            for (int dx = 0; dx < 3; ++dx) {
              const int ix = x * s.stride_w + dx - s.pad_left;
              if (ix < 0 || ix >= s.in_w) continue;
              const float* w = weights + ((size_t(o) * 3 + dy) * 3 + dx) * s.in_c;
              const float* px = in + (size_t(iy) * s.in_w + ix) * s.in_c;
              for (int c = 0; c < s.in_c; ++c) sum += w[c] * px[c];
            }
          }
          out[(size_t(y) * s.out_w + x) * s.out_c + o] = std::min(std::max(sum, s.act_min), s.act_max);
        }
      }
    }
  }
}

}  // namespace tfpconv
