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
  int gather = -1;  // tuned path for a masked layer: 1 gathered, 0 normal, -1 the cost model's
};

// Whether a variant can run a shape (whole-row variants need the output width to fit).
bool Fits(const ConvShape& s, const kernels::Variant& v, int lanes) {
  return !v.whole_rows || WholeRowsPerTile(s, v.vecs * lanes) > 0;
}

// Input channels per block: a tile's transformed input takes a share of the core's L1 data cache
// (L1DataCacheBytes) that shrinks as more of the layer's kernels are kept, from all of it with none
// to two thirds with every kernel. Every task (one output channel) re-reads its kernels' channels
// of the block while the other tasks' kernels and accumulators stream through the same L1, so a
// block that fills the cache keeps evicting its own lines once most kernels are kept; with few
// kept, a task reads little of the block and smaller blocks only shorten the kernels' loops (a task
// of 2 kernels pays its accumulator loads, stores and loop exit as much as its work). Measured:
//  - AVX-512: on a 48 KiB L1 (Intel Xeon) at 28% kept, blocks of a third of L1 ran slower and
//    48 KiB was the best of 16/32/48/64 KiB; on a 32 KiB L1 (AMD EPYC Zen 4), 48 KiB blocks ran within 2%
//    of 32 KiB ones at 28% kept and 8-22% slower with every kernel kept;
//  - AVX2, 32 KiB L1 (AMD EPYC Zen 3, tfpconv_engine_bench --against_tile_ic, VGG-16's conv1_2 to
//    conv3_2): 16-channel blocks (0.47-0.75 of L1) against the whole-L1 default ran 7.6-14.8%
//    faster with every kernel kept, 2-7% at 69% kept and -1.7% to +1.2% at 28% kept, where 12
//    channels ran 1-5% slower; half the L1 with every kernel kept ran as fast as two thirds. The
//    shares below against the whole L1 on all 8 layers: 5.5-9.5% faster with every kernel kept,
//    2.7-5.2% at 69%, -0.2% to +1.6% at 28%.
int TileIcFor(const Geometry& g, double density) {
  const double share = 1.0 - std::clamp(density, 0.0, 1.0) / 3.0;
  const size_t budget_floats = size_t(share * double(L1DataCacheBytes()) / sizeof(float));
  return static_cast<int>(std::max<size_t>(1, budget_floats / g.channel_stride));
}

int DefaultTileIc(const ConvShape& s, const kernels::Variant& v, int lanes, double density) {
  return TileIcFor(MakeGeometry(s, v, lanes), density);
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

// The cost model of the kernels' loops, in load slots per kept kernel of one tile. A kernel loads
// 4 taps x its tile's vectors (x LoadCost) plus 4 weights and 4 offsets; a task (one output
// channel, one input-channel block: tile_ic x density kernels) loads and stores its accumulators
// and leaves its loop with a mispredicted branch; each tile's input is transformed once per kernel
// that reads it over all output channels.
double KernelCost(const ConvShape& s, const kernels::Variant& v, int lanes, const Geometry& g,
                  double tile_ic, double density) {
  constexpr double kTaskOverhead = 30;  // load slots: loop exit, bookkeeping
  const double vectors = v.rows * v.vecs;
  const double kernels_per_task = std::max(1.0, tile_ic * density);
  const double transform = 2.0 * g.channel_stride / lanes / std::max(1.0, s.out_c * density);
  return 4 * vectors * LoadCost(s, v, lanes) + 8 + (2 * vectors + kTaskOverhead) / kernels_per_task +
         transform;
}

// Per tile of g (row-major, tiles_y x tiles_x): 1 when the pixel mask keeps a pixel of it. Run
// skips the others (writing their pixels as 0). Empty without a mask.
std::vector<uint8_t> ActiveTiles(const ConvShape& s, const Geometry& g,
                                 const std::vector<uint8_t>& mask) {
  std::vector<uint8_t> active;
  if (mask.empty()) return active;
  active.assign(size_t(g.tiles_y) * g.tiles_x, 0);
  for (int y = 0; y < s.out_h; ++y) {
    const uint8_t* row = mask.data() + size_t(y) * s.out_w;
    for (int x = 0; x < s.out_w; ++x)
      if (row[x] != 0) active[size_t(y / g.rows) * g.tiles_x + x / g.cols] = 1;
  }
  return active;
}

// The fraction of g's tiles that Run computes with this mask (1 without one).
double ActiveTileFraction(const ConvShape& s, const Geometry& g, const std::vector<uint8_t>& mask) {
  if (mask.empty()) return 1.0;
  const std::vector<uint8_t> active = ActiveTiles(s, g, mask);
  return double(std::count(active.begin(), active.end(), uint8_t{1})) / double(active.size());
}

// Tiles of more than 128 pixels (r8v2, r12v1 with AVX-512) measured slower than r8v1 on every
// VGG-16 layer though the model prefers them: a chunk's accumulators (tile_oc x tile x 4 bytes) no
// longer stay in L1. The tuner still times them.
constexpr int kMaxDefaultTile = 128;  // output pixels

// Defaults when the plan carries no tuned parameters: the flat variant with the most output pixels
// per load slot (KernelCost). Useful work is the tile's vector lanes that land on output pixels
// (tile edges, rows of whole-row tiles); with a pixel mask, only the tiles it keeps cost anything
// (a variant whose tiles divide the mask's units skips every masked unit). Input-channel blocks as
// DefaultTileIc says.
Params DefaultParams(const ConvShape& s, const kernels::KernelSet& set, double density,
                     const std::vector<uint8_t>& mask) {
  Params p;
  double best = -1;
  for (int i = 0; i < set.num_variants; ++i) {
    const kernels::Variant& v = set.variants[i];
    // The pattern-specialised loops pay a branch per pattern run; with ~28% of kernels kept and
    // L1-sized input-channel blocks the runs are short, and the flat loops measured faster.
    if (v.specialised || !Fits(s, v, set.lanes)) continue;
    if (v.rows * v.vecs * set.lanes > kMaxDefaultTile) continue;
    const Geometry g = MakeGeometry(s, v, set.lanes);
    const double vectors = v.rows * v.vecs;
    const double cost = KernelCost(s, v, set.lanes, g, TileIcFor(g, density), density);
    const double score = vectors * LanesUsed(s, g) / (cost * ActiveTileFraction(s, g, mask));
    if (score > best + 1e-9) {
      best = score;
      p.variant = i;
    }
  }
  p.tile_ic = DefaultTileIc(s, set.variants[p.variant], set.lanes, density);
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
                const kernels::KernelSet& set, double density, Params* p, std::string* problem) {
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
    p->tile_ic = DefaultTileIc(s, set.variants[v], set.lanes, density);
  }
  for (const auto& [key, value] : tuning.params) {
    if (key == "gather") {
      if (value != 0 && value != 1) {
        *problem = "tuned gather " + std::to_string(value) + " is not 0 or 1";
        return false;
      }
      p->gather = static_cast<int>(value);
      continue;
    }
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
  const double density = KernelDensity(s, plan);
  const Params defaults = DefaultParams(s, set, density, plan.pixel_mask);
  Params p = defaults;
  std::string problem;
  if (!ApplyTuned(tuning, s, isa, set, density, &p, &problem)) {
    *note = problem + ": the engine's defaults run instead";
    return defaults;
  }
  return p;
}

using Unit = ActivationUnit;

// Whether a layer's input or output is so much larger than the core's L2 that it streams from L3
// or DRAM. Each tile reads its input rows from separate pages, a few kilobytes each, and writes its
// output rows likewise, and the hardware prefetchers left the transform and the store waiting on
// those lines: on VGG-16's conv1_2 (12.8 MB in and out) 29% and 15% of the perf samples on an AVX2
// AMD EPYC Zen 3 (L2 512 KiB), against 23% and 14% when the transform and the store ask for the
// next tile's lines as they go, and the 3x3 layers of VGG-16 (engine bench, 7 interleaved rounds)
// 95.8 / 102.9 ms (min / median) against 102.2 / 106.7 ms without. Where the layer fits in about
// the L2 (VGG-16 at 56x56, ResNet-50's 3x3 shapes) the lines are there already and the requests
// only take load slots (no gain measurable in 8 interleaved rounds), so the engine asks only
// beyond 4x the L2.
bool Streams(const ConvShape& s) {
  const size_t in_bytes = size_t(s.in_h) * s.in_w * s.in_c * sizeof(float);
  const size_t out_bytes = size_t(s.out_h) * s.out_w * s.out_c * sizeof(float);
  return std::max(in_bytes, out_bytes) > 4 * L2CacheBytes();
}

size_t UnitCount(const ConvShape& s) {
  return size_t(s.out_h) * size_t((s.out_w + kActivationUnitPixels - 1) / kActivationUnitPixels);
}

// The gathered path's variant (KernelSet::gathered), or -1 when the set names none that fits.
int GatheredVariant(const kernels::KernelSet& set) {
  const int v = set.gathered != nullptr ? FindVariant(set, set.gathered) : -1;
  if (v < 0) return -1;
  const kernels::Variant& gv = set.variants[v];
  const bool fits = !gv.specialised && !gv.whole_rows && gv.vecs * set.lanes == kActivationUnitPixels;
  return fits ? v : -1;
}

// What the masked-layer decision compares: the accumulator lanes a path computes (whole tiles), each
// costing its share of the kernels' FMAs (the same loop on either path) plus its share of the
// transform. Per lane and input channel a tile transforms channel_stride / acc_floats floats (3.75
// for an 8-row tile at stride 1, 9 for gathered units) against 4 x out_c x density FMA lanes; a
// transformed float costs about 6 FMA lanes (a 16x16 AVX-512 transpose block is 16 loads, 64
// shuffles and 16 stores: 6 instructions per vector of 16 floats, an FMA vector is one), which put
// the transform at the ~10% of the normal path's time profiles show on VGG-16's conv3_2.
double PathCost(const ConvShape& s, const Geometry& g, double density) {
  constexpr double kTransformFmaLanes = 6;
  const double lanes = double(g.tiles_y) * g.tiles_x * g.acc_floats;
  const double transformed = double(g.channel_stride) / g.acc_floats;
  const double fmas = 4 * std::max(1.0, s.out_c * density);
  return lanes * (1 + kTransformFmaLanes * transformed / fmas);
}

// With a pixel mask: the normal tiles (the tiles with a kept pixel computed, then their masked
// pixels zeroed; free when the mask's units are whole tiles, as trained masks' are) or
// gathered tiles of the active units (packing.h), whichever PathCost finds cheaper by a margin,
// or what the tuning says ("gather"). PathCost charges gathered units 16 lanes (a narrow layer's
// short units waste some) and 9 transform planes; the margin covers what it leaves out, a
// transform and a store call per unit and the zeroing. With every unit of VGG-16's conv3_2 and
// conv4_2 gathered, the model says 0.91x and 0.96x the normal tiles' speed; measured with AVX-512
// 0.86-0.90x and 0.90-0.93x, with AVX2 (whose normal tiles have 2.4x larger input-channel blocks,
// so fewer loop exits) 0.78x and 0.90x. With 30% of the units masked, the speedups measured on
// VGG-16's 3x3 layers (AVX-512) were 8-15% below the model's, hence a 10% margin: at 15% masked,
// where the model saw a few percent to gain, gathering measured even. A mask without a whole
// masked unit runs the normal tiles: gathering could only add work.
//
// Gathered tiles take their own variant and blocks: input-channel blocks of the whole L1 (TileIcFor
// at density 0, as measured; as many input channels as an 8-row tile's block for a 4-unit tile),
// and chunks of 256 output channels (measured 5-10% faster than 64 on VGG-16's layers: a gathered
// tile's transformed input is larger than L2 from 256 input channels on, and each chunk passes over
// it once).
Params ChooseMaskedPath(const ConvShape& s, const kernels::KernelSet& set, double density,
                        const Params& normal, const std::vector<uint8_t>& mask,
                        size_t active_units) {
  constexpr double kGatherMargin = 1.1;
  constexpr int kGatheredTileOc = 256;
  const int v = GatheredVariant(set);
  Params p = normal;
  p.gather = 0;
  if (v < 0 || normal.gather == 0) return p;
  const Geometry gathered = MakeGatheredGeometry(s, set.variants[v], set.lanes, active_units);
  if (normal.gather < 0) {
    const Geometry g = MakeGeometry(s, set.variants[normal.variant], set.lanes);
    if (active_units == UnitCount(s) ||
        kGatherMargin * PathCost(s, gathered, density) >=
            PathCost(s, g, density) * ActiveTileFraction(s, g, mask))
      return p;
  }
  p = Params{};
  p.variant = v;
  p.tile_oc = kGatheredTileOc;
  p.tile_ic = TileIcFor(gathered, /*density=*/0.0);
  p.gather = 1;
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
  // mask: the plan's pixel_mask; units: its active units (when params.gather == 1).
  ConvImpl(const ConvShape& shape, Isa isa, const kernels::KernelSet& set, const Params& params,
           std::vector<uint8_t> mask, std::vector<Unit> units)
      : shape_(shape),
        isa_(isa),
        set_(set),
        params_(params),
        variant_(set.variants[params.variant]),
        gathered_(params.gather == 1),
        mask_(std::move(mask)),
        units_(std::move(units)) {
    by_pattern_ = false;
    if (gathered_) {
      geo_ = MakeGatheredGeometry(shape, variant_, set.lanes, units_.size());
      fn_ = variant_.flat;
      SetTilePixelRanges();
      return;
    }
    units_.clear();
    geo_ = MakeGeometry(shape, variant_, set.lanes);
    prefetch_ = Streams(shape);
    tile_active_ = ActiveTiles(shape, geo_, mask_);
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
    if (tiles == 0) {  // gathered, and the mask has no 1
      std::fill_n(output, size_t(s.batch) * s.out_h * s.out_w * s.out_c, 0.0f);
      return;
    }
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
           packed_.kernels2.size() * sizeof(kernels::SharedKernel<2>) +
           packed_.kernels4.size() * sizeof(kernels::SharedKernel<4>) +
           packed_.runs.size() * sizeof(kernels::Run) +
           packed_.tasks.size() * sizeof(kernels::OcTask) + packed_.bias.size() * sizeof(float) +
           packed_.order.size() * sizeof(int32_t);
  }
  Isa isa() const override { return isa_; }
  KernelTuning kernel_params() const override {
    KernelTuning t;
    t.variant = variant_.name;
    t.params = {{"tile_oc", params_.tile_oc}, {"tile_ic", params_.tile_ic}};
    if (!mask_.empty()) t.params["gather"] = gathered_ ? 1 : 0;
    return t;
  }
  bool gathers_units() const override { return gathered_; }
  double computed_fraction() const override {
    const double pixels = double(shape_.out_h) * shape_.out_w;
    if (gathered_) {
      double computed = 0;
      for (const Unit& u : units_) computed += u.width;
      return computed / pixels;
    }
    if (tile_active_.empty()) return 1.0;
    double computed = 0;
    for (size_t t = 0; t < tile_active_.size(); ++t) {
      if (tile_active_[t] == 0) continue;
      const TileRect r = RectOf(t);
      computed += double(r.rows) * r.cols;
    }
    return computed / pixels;
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
    if (!tile_active_.empty() && tile_active_[tile] == 0) {
      if (split == 0) ZeroTile(job.out, tile);
      return;
    }

    thread_local std::vector<float> x_buffer, acc_buffer;
    const float* tile_input = nullptr;
    if (pw.nonzero_kernels > 0) {
      float* x = CacheLineAligned(&x_buffer, size_t(geo_.tile_stride));
      if (gathered_) {
        TransformGathered(job.image, x, tile);
      } else {
        TransformTile(s, geo_, set_, job.image, x, tile, prefetch_);
      }
      tile_input = x;
    }
    float* acc = job.shared_acc != nullptr ? job.shared_acc + tile * TileAccFloats()
                                           : CacheLineAligned(&acc_buffer, TileAccFloats());
    for (size_t k = k0; k < k1; ++k)
      ComputeChunk(tile_input, acc + size_t(pw.chunk_begin[k]) * geo_.acc_floats, k);
    // With split tiles, the last item of the tile stores it (acquire: the other items' sums).
    if (job.shared_acc != nullptr && tiles_left_[tile].fetch_sub(1, std::memory_order_acq_rel) != 1)
      return;
    if (gathered_) {
      StoreGathered(acc, job.out, tile);
      return;
    }

    // The tile's pixels that are inside the output, to NHWC with the fused activation.
    const TileRect rect = RectOf(tile);
    kernels::StoreArgs store = StoreBase(acc);
    store.rows = rect.rows;
    store.cols = rect.cols;
    store.out = job.out + (size_t(rect.y0) * s.out_w + rect.x0) * s.out_c;
    if (prefetch_) store.next_cols = std::min(geo_.cols, s.out_w - (rect.x0 + rect.cols));
    set_.store(store);
    if (!mask_.empty()) {
      for (int r = 0; r < rect.rows; ++r) {
        const size_t row_pixel = size_t(rect.y0 + r) * s.out_w;
        ZeroMasked(job.out, row_pixel + rect.x0, row_pixel + rect.x0 + rect.cols);
      }
    }
  }

  // The output pixels of a normal tile: rows x cols from (y0, x0), clipped to the output.
  struct TileRect {
    int y0, x0, rows, cols;
  };
  TileRect RectOf(size_t tile) const {
    const int y0 = static_cast<int>(tile / geo_.tiles_x) * geo_.rows;
    const int x0 = static_cast<int>(tile % geo_.tiles_x) * geo_.cols;
    return {y0, x0, std::min(geo_.rows, shape_.out_h - y0), std::min(geo_.cols, shape_.out_w - x0)};
  }

  // Writes 0 to every channel of a normal tile's pixels.
  void ZeroTile(float* out, size_t tile) const {
    const ConvShape& s = shape_;
    const TileRect r = RectOf(tile);
    for (int y = r.y0; y < r.y0 + r.rows; ++y)
      std::fill_n(out + (size_t(y) * s.out_w + r.x0) * s.out_c, size_t(r.cols) * s.out_c, 0.0f);
  }

  kernels::StoreArgs StoreBase(const float* acc) const {
    kernels::StoreArgs store;
    store.acc = acc;
    store.acc_floats = geo_.acc_floats;
    store.acc_pitch = geo_.acc_pitch;
    store.position = packed_.position.data();
    store.out_row = ptrdiff_t{shape_.out_w} * shape_.out_c;
    store.out_c = shape_.out_c;
    store.lo = shape_.act_min;
    store.hi = shape_.act_max;
    return store;
  }

  // Gathered tile t owns the output pixels [tile_pixel_[t], tile_pixel_[t + 1]) (row-major): its
  // units and the masked units after them, up to the next tile's first unit.
  void SetTilePixelRanges() {
    const size_t tiles = size_t(geo_.tiles_y);
    tile_pixel_.assign(tiles + 1, 0);
    for (size_t t = 1; t < tiles; ++t) {
      const Unit& u = units_[t * geo_.rows];
      tile_pixel_[t] = size_t(u.y) * shape_.out_w + u.x0;
    }
    tile_pixel_[tiles] = size_t(shape_.out_h) * shape_.out_w;
  }

  size_t UnitsInTile(size_t tile) const {
    return std::min(size_t(geo_.rows), units_.size() - tile * geo_.rows);
  }

  void TransformGathered(const float* image, float* x, size_t tile) const {
    const Unit* units = units_.data() + tile * geo_.rows;
    const int n = static_cast<int>(UnitsInTile(tile));
    for (int i = 0; i < n; ++i) TransformUnit(shape_, geo_, set_, image, x, i, units[i].y, units[i].x0);
    ClearGatheredRows(shape_, geo_, x, n);  // rows past the last unit: finite, never stored
  }

  // Each unit of the tile as a one-row tile, then every masked pixel the tile owns to 0.
  void StoreGathered(const float* acc, float* out, size_t tile) const {
    const Unit* units = units_.data() + tile * geo_.rows;
    const int n = static_cast<int>(UnitsInTile(tile));
    kernels::StoreArgs store = StoreBase(acc);
    store.rows = 1;
    for (int i = 0; i < n; ++i) {
      store.acc = acc + ptrdiff_t{i} * geo_.acc_pitch;
      store.cols = units[i].width;
      store.out = out + (size_t(units[i].y) * shape_.out_w + units[i].x0) * shape_.out_c;
      set_.store(store);
    }
    ZeroMasked(out, tile_pixel_[tile], tile_pixel_[tile + 1]);
  }

  // Writes 0 to every channel of the masked pixels among the row-major pixels [begin, end).
  void ZeroMasked(float* out, size_t begin, size_t end) const {
    const uint8_t* mask = mask_.data();
    for (size_t p = begin; p < end;) {
      if (mask[p] != 0) {
        ++p;
        continue;
      }
      size_t q = p + 1;
      while (q < end && mask[q] == 0) ++q;
      std::fill(out + p * shape_.out_c, out + q * shape_.out_c, 0.0f);
      p = q;
    }
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
    args.kernels2 = pw.kernels2.data();
    args.kernels4 = pw.kernels4.data();
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
  bool gathered_ = false;
  bool prefetch_ = false;  // normal tiles: Streams(shape_)
  std::vector<uint8_t> mask_;      // the plan's pixel_mask (empty: none)
  std::vector<Unit> units_;        // gathered: the active units, row-major
  std::vector<size_t> tile_pixel_;  // gathered: the pixels each tile owns (SetTilePixelRanges)
  std::vector<uint8_t> tile_active_;  // normal tiles with a mask: 0 = every pixel masked, skipped
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
  Params params = ChooseParams(plan, shape, isa, *set, note);
  std::vector<Unit> units;
  if (!plan.pixel_mask.empty()) {
    units = ActiveUnits(plan.pixel_mask, shape.out_h, shape.out_w);
    params = ChooseMaskedPath(shape, *set, KernelDensity(shape, plan), params, plan.pixel_mask,
                              units.size());
  } else {
    params.gather = -1;  // a tuned "gather" means nothing without a mask
  }
  auto conv =
      std::make_unique<ConvImpl>(shape, isa, *set, params, plan.pixel_mask, std::move(units));
  if (!conv->Pack(weights, bias, plan, params, error)) return nullptr;
  return conv;
}

int ActivationUnitRows(int out_h) {
  if (out_h >= 56) return 8;
  return out_h >= 14 ? 4 : 1;
}

std::vector<ActivationUnit> ActiveUnits(const std::vector<uint8_t>& pixel_mask, int out_h,
                                        int out_w) {
  std::vector<ActivationUnit> units;
  for (int y = 0; y < out_h; ++y) {
    for (int x0 = 0; x0 < out_w; x0 += kActivationUnitPixels) {
      const int width = std::min(kActivationUnitPixels, out_w - x0);
      const uint8_t* flags = pixel_mask.data() + size_t(y) * out_w + x0;
      if (std::any_of(flags, flags + width, [](uint8_t f) { return f != 0; }))
        units.push_back(ActivationUnit{y, x0, width});
    }
  }
  return units;
}

bool WorthClaiming(const ConvShape& shape, const PatternPlan& plan, std::string* reason) {
  constexpr int kMinInputChannels = 4;
  if (plan.tuning.claim.has_value()) {
    if (!*plan.tuning.claim) *reason = "the plan's tuning measured TFLite's own kernel faster";
    return *plan.tuning.claim;
  }
  // Also with its activation mask, though the delegate would then take TFLite's MUL too: VGG-16's
  // block1_conv1 with 30% of its pixels masked took 2.9 ms on the engine against 2.9 + 1.2 ms (MUL)
  // in TFLite on an AMD EPYC Zen 4, but 1.41 ms against 0.80 ms on a Zen 5, whose XNNPACK runs
  // it 5x faster (AVX-512, one thread). Only the tuner, timing both here, claims it.
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
    // Whole-L1 blocks (density 0); the tuner times the engine's defaults, whose blocks follow the
    // plan's density, as a candidate too.
    const int tile_ic = DefaultTileIc(shape, set->variants[v], set->lanes, /*density=*/0.0);
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
                   const float* input, float* output, int kernel_h, int kernel_w) {
  for (int b = 0; b < s.batch; ++b) {
    const float* in = input + size_t(b) * s.in_h * s.in_w * s.in_c;
    float* out = output + size_t(b) * s.out_h * s.out_w * s.out_c;
    for (int y = 0; y < s.out_h; ++y) {
      for (int x = 0; x < s.out_w; ++x) {
        for (int o = 0; o < s.out_c; ++o) {
          float sum = bias ? bias[o] : 0.0f;
          for (int dy = 0; dy < kernel_h; ++dy) {
            const int iy = y * s.stride_h + dy - s.pad_top;
            if (iy < 0 || iy >= s.in_h) continue;
            for (int dx = 0; dx < kernel_w; ++dx) {
              const int ix = x * s.stride_w + dx - s.pad_left;
              if (ix < 0 || ix >= s.in_w) continue;
              const float* w = weights + ((size_t(o) * kernel_h + dy) * kernel_w + dx) * s.in_c;
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
