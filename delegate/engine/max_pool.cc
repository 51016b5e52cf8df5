#include "max_pool.h"

#include <algorithm>
#include <cstddef>
#include <limits>

namespace tfpconv {
namespace {

struct PoolJob {
  const PoolShape* shape;
  const float* input;
  float* output;
};

// One output row (image b = row / out_h). The channel loops are contiguous and branch-free, so the
// compiler vectorises them.
void PoolRow(void* context, size_t row) {
  const PoolJob& job = *static_cast<const PoolJob*>(context);
  const PoolShape& s = *job.shape;
  const size_t channels = static_cast<size_t>(s.in_c);
  const int b = static_cast<int>(row / static_cast<size_t>(s.out_h));
  const int oy = static_cast<int>(row % static_cast<size_t>(s.out_h));
  const int y0 = oy * s.stride_h - s.pad_top;
  const int y_begin = std::max(y0, 0), y_end = std::min(y0 + s.filter_h, s.in_h);
  const float* image = job.input + size_t(b) * size_t(s.in_h) * size_t(s.in_w) * channels;
  float* out = job.output + row * size_t(s.out_w) * channels;
  for (int ox = 0; ox < s.out_w; ++ox, out += channels) {
    const int x0 = ox * s.stride_w - s.pad_left;
    const int x_begin = std::max(x0, 0), x_end = std::min(x0 + s.filter_w, s.in_w);
    std::fill_n(out, channels, std::numeric_limits<float>::lowest());
    for (int y = y_begin; y < y_end; ++y) {
      for (int x = x_begin; x < x_end; ++x) {
        const float* in = image + (size_t(y) * size_t(s.in_w) + size_t(x)) * channels;
        for (size_t c = 0; c < channels; ++c) out[c] = std::max(out[c], in[c]);
      }
    }
    for (size_t c = 0; c < channels; ++c) out[c] = std::min(std::max(out[c], s.act_min), s.act_max);
  }
}

}  // namespace

void MaxPool(const PoolShape& shape, const float* input, float* output, ThreadPool* pool) {
  PoolJob job{&shape, input, output};
  const size_t rows = size_t(shape.batch) * size_t(shape.out_h);
  if (pool != nullptr && pool->num_threads() > 1) {
    pool->ParallelFor(rows, &PoolRow, &job);
    return;
  }
  for (size_t row = 0; row < rows; ++row) PoolRow(&job, row);
}

}  // namespace tfpconv
