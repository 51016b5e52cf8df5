// The engine's driver: picks a kernel variant, packs the weights, and runs a layer as
// (transform the input into phase planes) then (tiles x output-channel chunks) in parallel.
#include "pattern_conv.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "dispatch.h"
#include "kernels/kernels.h"
#include "packing.h"

namespace tfpconv {
namespace {

struct Params {
  int variant = 0;
  int tile_oc = 64;
  int tile_ic = 0;
};

// Whether a variant can run a shape (whole-row variants need the output width to fit).
bool Fits(const ConvShape& s, const kernels::Variant& v, int lanes) {
  return !v.whole_rows || WholeRowsPerTile(s, v.vecs * lanes) > 0;
}

// Input channels per block: a tile's transformed input of about 48 KiB. That is L1 on recent x86
// cores and spills a little to L2 elsewhere; measured on VGG-16's layers (AVX-512), blocks of a
// third of L1 left the kernels' loops too short (a task of 2 kernels pays its accumulator loads,
// stores and loop exit as much as its work), and 48 KiB was the best of 16/32/48/64 KiB.
int TileIcFor(const Geometry& g) {
  const size_t budget_floats = 48 * 1024 / sizeof(float);
  return static_cast<int>(std::max<size_t>(1, budget_floats / g.channel_stride));
}

int DefaultTileIc(const ConvShape& s, const kernels::Variant& v, int lanes) {
  return TileIcFor(MakeGeometry(s, v, lanes));
}

// The fraction of the accumulator lanes that land on output pixels.
double LanesUsed(const ConvShape& s, const Geometry& g) {
  return double(s.out_h) * s.out_w / (double(g.tiles_y) * g.tiles_x * g.acc_floats);
}

// The relative cost of a variant's input loads: whole-row tiles narrower than their vectors read
// at every offset, and a misaligned vector load that straddles two cache lines costs about two
// (it does with probability (lanes - 1) / 16 for 4-byte floats on 64-byte lines: nearly always
// with AVX-512). Row tiles read aligned vectors only (packing.h).
double LoadCost(const ConvShape& s, const kernels::Variant& v, int lanes) {
  if (!v.whole_rows || s.out_w % lanes == 0) return 1.0;
  return 1.0 + (lanes - 1) / 16.0;
}

// The fraction of the layer's kernels that the plan keeps.
double KernelDensity(const ConvShape& s, const PatternPlan& plan) {
  const size_t kept = size_t(std::count_if(plan.codes.begin(), plan.codes.end(),
                                           [](int8_t code) { return code >= 0; }));
  return double(std::max<size_t>(kept, 1)) / (double(s.out_c) * s.in_c);
}

// Defaults when the plan carries no tuned parameters: the flat variant with the most output pixels
// per load slot, in a cost model of the kernels' loops. A kernel loads 4 taps x its tile's vectors
// (x LoadCost) plus 4 weights and 4 offsets; a task (one output channel, one input-channel block:
// input-channel block x density kernels) loads and stores its accumulators and leaves its loop
// with a mispredicted branch; each tile's input is transformed once per kernel that reads it over
// all output channels. Useful work is the tile's vector lanes that land on output pixels (tile
// edges, rows of whole-row tiles). Input-channel blocks as DefaultTileIc says.
Params DefaultParams(const ConvShape& s, const kernels::KernelSet& set, double density) {
  constexpr double kTaskOverhead = 30;  // load slots: loop exit, bookkeeping
  constexpr int kMaxDefaultTile = 128;   // output pixels
  Params p;
  double best = -1;
  for (int i = 0; i < set.num_variants; ++i) {
    const kernels::Variant& v = set.variants[i];
    // The pattern-specialised loops pay a branch per pattern run; with ~28% of kernels kept and
    // L1-sized input-channel blocks the runs are short, and the flat loops measured faster.
    if (v.specialised || !Fits(s, v, set.lanes)) continue;
    // Tiles of more than 128 pixels (r8v2, r12v1 with AVX-512) measured slower than r8v1 on every
    // VGG-16 layer though the model prefers them: a chunk's accumulators (tile_oc x tile x 4 bytes)
    // no longer stay in L1. The tuner still times them.
    if (v.rows * v.vecs * set.lanes > kMaxDefaultTile) continue;
    const Geometry g = MakeGeometry(s, v, set.lanes);
    const double vectors = v.rows * v.vecs;
    const double kernels_per_task = std::max(1.0, TileIcFor(g) * density);
    const double transform = 2.0 * g.channel_stride / set.lanes / std::max(1.0, s.out_c * density);
    const double cost = 4 * vectors * LoadCost(s, v, set.lanes) + 8 +
                        (2 * vectors + kTaskOverhead) / kernels_per_task + transform;
    const double score = vectors * LanesUsed(s, g) / cost;
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
Params ChooseParams(const PatternPlan& plan, const ConvShape& s, Isa isa,
                    const kernels::KernelSet& set, std::string* note) {
  const KernelTuning& tuning = plan.tuning;
  const Params defaults = DefaultParams(s, set, KernelDensity(s, plan));
  Params p = defaults;
  std::string problem;
  if (!ApplyTuned(tuning, s, isa, set, &p, &problem)) {
    *note = problem + ": the engine's defaults run instead";
    return defaults;
  }
  return p;
}

// The start of `floats` floats in *buffer, on a 64-byte boundary (row tiles are laid out so that
// every vector load is aligned when the tile input starts on one: a load that straddles two cache
// lines costs twice, and with 64-byte AVX-512 vectors every misaligned load does).
float* CacheLineAligned(std::vector<float>* buffer, size_t floats) {
  constexpr size_t kFloats = 64 / sizeof(float);
  if (buffer->size() < floats + kFloats) buffer->resize(floats + kFloats);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer->data());
  return buffer->data() + ((64 - address % 64) % 64) / sizeof(float);
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
    } else {
      fn_ = variant_.flat;
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
    // range of output-channel chunks on it. With several threads and few tiles the chunks are
    // split over a few items per tile so every thread has work (at the price of transforming a
    // tile more than once); those items accumulate into the tile's block of a shared buffer, and
    // the last one to finish stores the tile (a store of every channel is a transpose; a store of
    // a few channels in filter order would be a scatter).
    const size_t threads = pool != nullptr ? size_t(pool->num_threads()) : 1;
    const size_t splits =
        threads == 1 ? 1 : std::min(chunks, std::max<size_t>(1, (4 * threads + tiles - 1) / tiles));
    float* shared_acc = nullptr;
    if (splits > 1) {
      shared_acc = CacheLineAligned(&shared_acc_, tiles * TileAccFloats());
      if (tiles_left_size_ < tiles) {
        tiles_left_.reset(new std::atomic<size_t>[tiles]);
        tiles_left_size_ = tiles;
      }
    }
    for (int b = 0; b < s.batch; ++b) {
      for (size_t t = 0; shared_acc != nullptr && t < tiles; ++t)
        tiles_left_[t].store(splits, std::memory_order_relaxed);
      Job job{this, input + size_t(b) * s.in_h * s.in_w * s.in_c,
              output + size_t(b) * s.out_h * s.out_w * s.out_c, splits, shared_acc};
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
    size_t splits;      // items per tile
    float* shared_acc;  // splits > 1: every tile's accumulators, TileAccFloats() apart
  };

  // Accumulator floats of one tile, all output channels, with a vector of slack: the store reads
  // whole vectors of a tile's last row (StoreArgs); a multiple of 16 keeps tiles cache-aligned.
  size_t TileAccFloats() const {
    return (size_t(shape_.out_c) * geo_.acc_floats + set_.lanes + 15) / 16 * 16;
  }

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

    thread_local std::vector<float> x_buffer, acc_buffer;
    const float* tile_input = nullptr;
    if (pw.nonzero_kernels > 0) {
      float* x = CacheLineAligned(&x_buffer, size_t(geo_.tile_stride));
      TransformTile(s, geo_, set_, job.image, x, tile);
      tile_input = x;
    }
    float* acc = job.shared_acc != nullptr ? job.shared_acc + tile * TileAccFloats()
                                           : CacheLineAligned(&acc_buffer, TileAccFloats());
    for (size_t k = k0; k < k1; ++k)
      ComputeChunk(tile_input, acc + size_t(pw.chunk_begin[k]) * geo_.acc_floats, k);
    // With split tiles, the last item of the tile stores it (acquire: the other items' sums).
    if (job.shared_acc != nullptr && tiles_left_[tile].fetch_sub(1, std::memory_order_acq_rel) != 1)
      return;

    // The tile's pixels that are inside the output, to NHWC with the fused activation.
    const int ty = static_cast<int>(tile / geo_.tiles_x), tx = static_cast<int>(tile % geo_.tiles_x);
    const int y0 = ty * geo_.rows, x0 = tx * geo_.cols;
    kernels::StoreArgs store;
    store.acc = acc;
    store.acc_floats = geo_.acc_floats;
    store.acc_pitch = geo_.acc_pitch;
    store.rows = std::min(geo_.rows, s.out_h - y0);
    store.cols = std::min(geo_.cols, s.out_w - x0);
    store.position = pw.position.data();
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
  // Run's buffers for split tiles (Run is called from one thread at a time).
  mutable std::vector<float> shared_acc_;
  mutable std::unique_ptr<std::atomic<size_t>[]> tiles_left_;
  mutable size_t tiles_left_size_ = 0;
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
  const Params params = ChooseParams(plan, shape, isa, *set, note);
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
