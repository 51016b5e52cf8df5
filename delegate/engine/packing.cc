#include "packing.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <type_traits>

namespace tfpconv {
namespace {

// Filters of execution positions [begin, end) with equal kernel codes on every input channel
// share their kernels' loads (kernels.h, SharedKernel). Reorders that range of `order` so equal
// filters sit together, in groups of 4, then 2, from the first filter of each kind on, and writes
// each position's group into filters: 4 or 2 at a group's first position, 0 at the others, 1
// for a filter that runs alone.
void GroupEqualFilters(const PatternPlan& plan, int in_c, int begin, int end,
                       std::vector<int32_t>* order, std::vector<uint32_t>* filters) {
  std::map<std::string, std::vector<int32_t>> kinds;
  std::vector<const std::vector<int32_t>*> first_seen;
  for (int j = begin; j < end; ++j) {
    const int o = (*order)[j];
    const auto* row = reinterpret_cast<const char*>(plan.codes.data() + size_t(o) * in_c);
    auto [it, added] = kinds.try_emplace(std::string(row, row + in_c));
    it->second.push_back(o);
    if (added) first_seen.push_back(&it->second);
  }
  int j = begin;
  for (const std::vector<int32_t>* kind : first_seen) {
    size_t left = kind->size();
    for (int32_t o : *kind) (*order)[j++] = o;
    for (int at = j - static_cast<int>(left); left > 0;) {
      const uint32_t g = left >= 4 ? 4 : (left >= 2 ? 2 : 1);
      (*filters)[at] = g;
      for (uint32_t f = 1; f < g; ++f) (*filters)[at + f] = 0;
      at += g;
      left -= g;
    }
  }
}

}  // namespace

int WholeRowsPerTile(const ConvShape& s, int vector_floats) {
  if (vector_floats < s.out_w) return 0;
  return std::min(s.out_h, vector_floats / s.out_w);
}

Geometry MakeGeometry(const ConvShape& s, const kernels::Variant& v, int lanes) {
  Geometry g;
  const int vector_floats = v.vecs * lanes;
  g.rows = v.whole_rows ? std::max(1, WholeRowsPerTile(s, vector_floats)) : v.rows;
  g.cols = v.whole_rows ? s.out_w : vector_floats;
  g.ph = std::min(s.stride_h, 3);
  g.pw = 3;
  // Tile row y, tap dy reads plane row y + dy / stride: at most rows - 1 + 2 / stride.
  g.hq = g.rows + 2 / s.stride_h;
  g.wq = g.cols;
  g.plane = ptrdiff_t{g.hq} * g.wq;
  g.channel_stride = g.plane * g.ph * g.pw;
  g.tile_stride = g.channel_stride * s.in_c + (v.whole_rows ? vector_floats : 0);
  for (int dy = 0; dy < 3; ++dy) {
    for (int dx = 0; dx < 3; ++dx) {
      const ptrdiff_t off =
          ((dy % s.stride_h) * g.pw + dx) * g.plane + (dy / s.stride_h) * ptrdiff_t{g.wq};
      g.tap_off[3 * dy + dx] = static_cast<int32_t>(off);
    }
  }
  g.acc_pitch = g.cols;
  g.acc_floats = v.whole_rows ? vector_floats : g.rows * g.cols;
  g.tiles_y = (s.out_h + g.rows - 1) / g.rows;
  g.tiles_x = (s.out_w + g.cols - 1) / g.cols;
  return g;
}

void TransformTile(const ConvShape& s, const Geometry& g, const kernels::KernelSet& set,
                   const float* image, float* x, size_t tile, bool prefetch_next) {
  const int ty = static_cast<int>(tile / g.tiles_x), tx = static_cast<int>(tile % g.tiles_x);
  kernels::TransformArgs t;
  t.image = image;
  t.in_h = s.in_h;
  t.in_w = s.in_w;
  t.channels = s.in_c;
  t.row0 = s.stride_h * ty * g.rows - s.pad_top;
  t.col0 = s.stride_w * tx * g.cols - s.pad_left;
  t.stride_h = s.stride_h;
  t.stride_w = s.stride_w;
  t.ph = g.ph;
  t.pw = g.pw;
  t.hq = g.hq;
  t.wq = g.wq;
  t.plane = g.plane;
  t.channel_stride = g.channel_stride;
  t.tail = g.tile_stride - g.channel_stride * s.in_c;
  t.x = x;
  t.prefetch_next = prefetch_next;
  set.transform(t);
}

Geometry MakeGatheredGeometry(const ConvShape& s, const kernels::Variant& v, int lanes,
                              size_t units) {
  Geometry g;
  g.rows = v.rows;
  g.cols = v.vecs * lanes;
  g.ph = 3;
  g.pw = 3;
  g.hq = g.rows;
  g.wq = g.cols;
  g.plane = ptrdiff_t{g.hq} * g.wq;
  g.channel_stride = 9 * g.plane;
  g.tile_stride = g.channel_stride * s.in_c;
  for (int k = 0; k < 9; ++k) g.tap_off[k] = static_cast<int32_t>(k * g.plane);
  g.acc_pitch = g.cols;
  g.acc_floats = g.rows * g.cols;
  g.tiles_y = static_cast<int>((units + g.rows - 1) / g.rows);
  g.tiles_x = 1;
  return g;
}

void TransformUnit(const ConvShape& s, const Geometry& g, const kernels::KernelSet& set,
                   const float* image, float* x, int row, int out_y, int out_x0) {
  // One plane row per call: with hq = 1 the transform's plane (a, b) row 0 is input row row0 + a
  // whatever the stride, so ph = 3 row "phases" are the 3 tap rows.
  kernels::TransformArgs t;
  t.image = image;
  t.in_h = s.in_h;
  t.in_w = s.in_w;
  t.channels = s.in_c;
  t.row0 = s.stride_h * out_y - s.pad_top;
  t.col0 = s.stride_w * out_x0 - s.pad_left;
  t.stride_h = s.stride_h;
  t.stride_w = s.stride_w;
  t.ph = 3;
  t.pw = 3;
  t.hq = 1;
  t.wq = g.wq;
  t.plane = g.plane;
  t.channel_stride = g.channel_stride;
  t.tail = 0;
  t.x = x + ptrdiff_t{row} * g.wq;
  set.transform(t);
}

void ClearGatheredRows(const ConvShape& s, const Geometry& g, float* x, int first_row) {
  if (first_row >= g.rows) return;
  const size_t n = size_t(g.rows - first_row) * g.wq;
  for (ptrdiff_t plane = 0; plane < ptrdiff_t{9} * s.in_c; ++plane)
    std::fill_n(x + plane * g.plane + ptrdiff_t{first_row} * g.wq, n, 0.0f);
}

namespace {

int PopCount9(int m) {
  int n = 0;
  for (int b = 0; b < 9; ++b) n += (m >> b) & 1;
  return n;
}

}  // namespace

std::string ValidatePlan(const ConvShape& s, const PatternPlan& plan) {
  if (s.batch < 1 || s.in_h < 1 || s.in_w < 1 || s.in_c < 1 || s.out_h < 1 || s.out_w < 1 ||
      s.out_c < 1)
    return "non-positive dimension";
  if (s.stride_h < 1 || s.stride_w < 1 || s.pad_top < 0 || s.pad_left < 0)
    return "bad stride or padding";
  if (!(s.act_min <= s.act_max)) return "bad activation range";
  // Every tap must stay within the 32-bit offsets of the packed kernels.
  // (Tile-local offsets stay far below 2^31 for any channel count a plan can describe.)
  if (double(s.in_c) * 64 * 64 * 9 > double(std::numeric_limits<int32_t>::max()))
    return "too many input channels";
  if (plan.library.size() > 127) return "pattern library too large";
  for (uint16_t m : plan.library) {
    if (m >= 512 || PopCount9(m) != 4 || !(m & 16))
      return "library mask " + std::to_string(m) + " is not 4 taps including the centre";
  }
  const size_t kernels = size_t(s.out_c) * s.in_c;
  if (plan.codes.size() != kernels)
    return "expected " + std::to_string(kernels) + " codes, got " +
           std::to_string(plan.codes.size());
  for (int8_t code : plan.codes) {
    if (code < -1 || code >= static_cast<int>(plan.library.size()))
      return "code " + std::to_string(code) + " outside the library";
  }
  if (!plan.filter_order.empty()) {
    if (plan.filter_order.size() != size_t(s.out_c)) return "filter_order has the wrong size";
    std::vector<char> seen(s.out_c, 0);
    for (int32_t o : plan.filter_order) {
      if (o < 0 || o >= s.out_c || seen[o]) return "filter_order is not a permutation";
      seen[o] = 1;
    }
  }
  if (!plan.pixel_mask.empty()) {
    const size_t pixels = size_t(s.out_h) * s.out_w;
    if (plan.pixel_mask.size() != pixels)
      return "pixel_mask has " + std::to_string(plan.pixel_mask.size()) +
             " flags, expected out_h * out_w = " + std::to_string(pixels);
    for (size_t p = 0; p < pixels; ++p) {
      if (plan.pixel_mask[p] > 1)
        return "pixel_mask flag " + std::to_string(plan.pixel_mask[p]) + " at pixel " +
               std::to_string(p) + " is not 0 or 1";
    }
  }
  if (!plan.group_offsets.empty()) {
    const auto& g = plan.group_offsets;
    if (g.front() != 0 || g.back() != s.out_c) return "group_offsets must span [0, out_c]";
    for (size_t i = 1; i < g.size(); ++i)
      if (g[i] < g[i - 1]) return "group_offsets must not decrease";
  }
  return "";
}

bool PackWeights(const ConvShape& s, const Geometry& geo, const float* weights,
                 const float* bias, const PatternPlan& plan, int tile_oc, int tile_ic,
                 bool by_pattern, PackedWeights* p, std::string* error) {
  const int oc = s.out_c, ic = s.in_c;
  const auto weight = [&](int o, int tap, int c) { return weights[(size_t(o) * 9 + tap) * ic + c]; };

  // Every weight outside its kernel's pattern must be zero.
  for (int o = 0; o < oc; ++o) {
    for (int c = 0; c < ic; ++c) {
      const int code = plan.codes[size_t(o) * ic + c];
      const int mask = code < 0 ? 0 : plan.library[code];
      for (int tap = 0; tap < 9; ++tap) {
        if (!((mask >> tap) & 1) && weight(o, tap, c) != 0.0f) {
          *error = "non-zero weight outside the pattern of kernel (out " + std::to_string(o) +
                   ", in " + std::to_string(c) + ") tap " + std::to_string(tap);
          return false;
        }
      }
    }
  }

  std::vector<int> mask_id(plan.library.size(), -1);
  for (size_t l = 0; l < plan.library.size(); ++l)
    for (int id = 0; id < kernels::kNumMasks; ++id)
      if (kernels::kMasks.mask[id] == plan.library[l]) mask_id[l] = id;

  p->order = plan.filter_order;
  if (p->order.empty())
    for (int o = 0; o < oc; ++o) p->order.push_back(o);
  std::vector<int32_t> groups = plan.group_offsets;
  if (groups.empty()) groups = {0, oc};
  // Chunks are runs of whole groups of at most tile_oc channels (a larger group is cut into
  // tile_oc pieces): the plan's groups are units of about equal work, often smaller than a chunk
  // that keeps the kernels busy (16 filters against tile_oc 32).
  auto& chunks = p->chunk_begin;
  chunks.assign(1, 0);
  tile_oc = std::max(tile_oc, 1);
  for (size_t gi = 1; gi < groups.size(); ++gi) {
    const int group_begin = groups[gi - 1], group_end = groups[gi];
    if (group_end == group_begin) continue;
    if (chunks.size() >= 2 && group_end - chunks[chunks.size() - 2] <= tile_oc) {
      chunks.back() = group_end;  // the group joins the chunk before it
      continue;
    }
    for (int b = group_begin; b < group_end; b += tile_oc)
      chunks.push_back(std::min(group_end, b + tile_oc));
  }
  // Filters per task at each execution position (flat packing groups equal filters).
  std::vector<uint32_t> filters(oc, 1);
  if (!by_pattern) {
    for (size_t k = 0; k + 1 < chunks.size(); ++k)
      GroupEqualFilters(plan, ic, chunks[k], chunks[k + 1], &p->order, &filters);
  }
  p->position.assign(oc, 0);
  for (int j = 0; j < oc; ++j) p->position[p->order[j]] = j;
  p->bias.resize(oc);
  for (int j = 0; j < oc; ++j) p->bias[j] = bias ? bias[p->order[j]] : 0.0f;
  p->cblock = std::min(std::max(tile_ic, 1), ic);
  p->num_cblocks = (ic + p->cblock - 1) / p->cblock;

  p->kernels.clear();
  p->kernels2.clear();
  p->kernels4.clear();
  p->runs.clear();
  p->tasks.clear();
  p->nonzero_kernels = 0;
  const size_t num_chunks = p->chunk_begin.size() - 1;
  for (size_t k = 0; k < num_chunks; ++k) {
    for (int cb = 0; cb < p->num_cblocks; ++cb) {
      const int c0 = cb * p->cblock, c1 = std::min(ic, c0 + p->cblock);
      for (int j = p->chunk_begin[k]; j < p->chunk_begin[k + 1]; ++j) {
        const int o = p->order[j];
        kernels::OcTask task;
        task.filters = filters[j];
        if (task.filters != 1) {
          // The group's kernels (or, at a follower's position, nothing).
          const auto add_shared = [&](auto* shared) {
            constexpr int kG = sizeof(shared->front().w[0]) / sizeof(float);
            task.run_begin = task.run_end = 0;
            task.kernel_begin = static_cast<uint32_t>(shared->size());
            for (int c = c0; c < c1; ++c) {
              const int code = plan.codes[size_t(o) * ic + c];
              if (code < 0) continue;
              const int mask = plan.library[code];
              typename std::remove_pointer_t<decltype(shared)>::value_type sk;
              for (int t = 0; t < 4; ++t) {
                const int tap = kernels::TapOf(mask, t);
                sk.off[t] = static_cast<int32_t>(c * geo.channel_stride + geo.tap_off[tap]);
                for (int f = 0; f < kG; ++f) sk.w[t][f] = weight(p->order[j + f], tap, c);
              }
              shared->push_back(sk);
            }
            task.kernel_end = static_cast<uint32_t>(shared->size());
            p->nonzero_kernels += size_t(kG) * (task.kernel_end - task.kernel_begin);
          };
          if (task.filters == 2) add_shared(&p->kernels2);
          if (task.filters == 4) add_shared(&p->kernels4);
          if (task.filters == 0) task.run_begin = task.run_end = task.kernel_begin = task.kernel_end = 0;
          p->tasks.push_back(task);
          continue;
        }
        task.run_begin = static_cast<uint32_t>(p->runs.size());
        task.kernel_begin = static_cast<uint32_t>(p->kernels.size());
        const auto add_kernel = [&](int c, int mask) {
          kernels::PackedKernel pk;
          for (int t = 0; t < 4; ++t) {
            const int tap = kernels::TapOf(mask, t);
            pk.off[t] = static_cast<int32_t>(c * geo.channel_stride +
                                             (by_pattern ? 0 : geo.tap_off[tap]));
            pk.w[t] = weight(o, tap, c);
          }
          p->kernels.push_back(pk);
        };
        if (by_pattern) {
          for (size_t l = 0; l < plan.library.size(); ++l) {
            kernels::Run run{static_cast<uint16_t>(mask_id[l]), 0, 0};
            for (int c = c0; c < c1; ++c) {
              if (plan.codes[size_t(o) * ic + c] != static_cast<int>(l)) continue;
              add_kernel(c, plan.library[l]);
              ++run.count;
            }
            if (run.count > 0) p->runs.push_back(run);
          }
        } else {
          for (int c = c0; c < c1; ++c) {
            const int code = plan.codes[size_t(o) * ic + c];
            if (code >= 0) add_kernel(c, plan.library[code]);
          }
        }
        task.run_end = static_cast<uint32_t>(p->runs.size());
        task.kernel_end = static_cast<uint32_t>(p->kernels.size());
        p->nonzero_kernels += task.kernel_end - task.kernel_begin;
        p->tasks.push_back(task);
      }
    }
  }
  return true;
}

}  // namespace tfpconv
