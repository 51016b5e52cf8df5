#include "tests/test_util.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "kernels/kernels.h"

namespace tfpconv {
namespace testing {

ConvShape MakeShape(int batch, int h, int w, int in_c, int out_c, int stride, bool same) {
  ConvShape s;
  s.batch = batch;
  s.in_h = h;
  s.in_w = w;
  s.in_c = in_c;
  s.out_c = out_c;
  s.stride_h = s.stride_w = stride;
  if (same) {
    s.out_h = (h + stride - 1) / stride;
    s.out_w = (w + stride - 1) / stride;
    s.pad_top = std::max((s.out_h - 1) * stride + 3 - h, 0) / 2;
    s.pad_left = std::max((s.out_w - 1) * stride + 3 - w, 0) / 2;
  } else {
    s.out_h = (h - 3) / stride + 1;
    s.out_w = (w - 3) / stride + 1;
  }
  return s;
}

ConvShape MakeOddlyPaddedShape(int batch, int in_h, int in_w, int in_c, int out_c, int stride_h,
                               int stride_w) {
  ConvShape s = MakeShape(batch, in_h, in_w, in_c, out_c, stride_h, /*same=*/false);
  s.stride_w = stride_w;
  s.pad_top = 1;
  s.pad_left = 2;
  s.out_h = (in_h + 2 - 3) / stride_h + 1;
  s.out_w = (in_w + 3 - 3) / stride_w + 1;
  return s;
}

RandomLayer MakeRandomLayer(const ConvShape& shape, const LayerOptions& opt, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  RandomLayer l;
  l.shape = shape;
  const int oc = shape.out_c, ic = shape.in_c;

  std::vector<int> ids(kernels::kNumMasks);
  for (int i = 0; i < kernels::kNumMasks; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), rng);
  for (int i = 0; i < std::min(opt.library_size, kernels::kNumMasks); ++i)
    l.plan.library.push_back(kernels::kMasks.mask[ids[i]]);

  const float scale = 1.0f / std::sqrt(std::max(1.0f, float(ic) * 4 * float(opt.keep)));
  l.weights.assign(size_t(oc) * 9 * ic, 0.0f);
  l.plan.codes.assign(size_t(oc) * ic, -1);
  const int filter_group = std::max(1, opt.filter_group);
  for (int o = 0; o < oc; ++o) {
    for (int c = 0; c < ic; ++c) {
      int code = -1;
      if (o % filter_group != 0) {
        code = l.plan.codes[size_t(o - o % filter_group) * ic + c];
      } else if (!l.plan.library.empty() && coin(rng) < opt.keep) {
        code = int(rng() % l.plan.library.size());
      }
      if (code < 0) continue;
      l.plan.codes[size_t(o) * ic + c] = int8_t(code);
      ++l.kept_kernels;
      for (int tap = 0; tap < 9; ++tap)
        if ((l.plan.library[code] >> tap) & 1)
          l.weights[(size_t(o) * 9 + tap) * ic + c] = uni(rng) * scale;
    }
  }
  for (int o = 0; o < oc; ++o) l.plan.filter_order.push_back(o);
  if (opt.shuffle_order) std::shuffle(l.plan.filter_order.begin(), l.plan.filter_order.end(), rng);
  const int groups = std::max(1, std::min(opt.groups, oc));
  for (int g = 0; g <= groups; ++g) l.plan.group_offsets.push_back(int32_t(int64_t(oc) * g / groups));
  if (opt.bias) {
    l.bias.resize(oc);
    for (float& b : l.bias) b = uni(rng);
  }
  l.input.resize(size_t(shape.batch) * shape.in_h * shape.in_w * ic);
  for (float& v : l.input) v = uni(rng);
  return l;
}

std::vector<uint8_t> RandomUnitMask(const ConvShape& s, double masked, uint32_t seed,
                                    int unit_rows) {
  const int units_per_row = (s.out_w + kActivationUnitPixels - 1) / kActivationUnitPixels;
  const int unit_bands = (s.out_h + unit_rows - 1) / unit_rows;
  std::vector<size_t> units(size_t(unit_bands) * units_per_row);
  for (size_t u = 0; u < units.size(); ++u) units[u] = u;
  std::mt19937 rng(seed);
  std::shuffle(units.begin(), units.end(), rng);
  const size_t zeros = std::min(units.size(), size_t(std::lround(masked * double(units.size()))));
  std::vector<uint8_t> mask(size_t(s.out_h) * s.out_w, 1);
  for (size_t k = 0; k < zeros; ++k) {
    const int y0 = int(units[k] / units_per_row) * unit_rows;
    const int x0 = int(units[k] % units_per_row) * kActivationUnitPixels;
    const int x1 = std::min(s.out_w, x0 + kActivationUnitPixels);
    for (int y = y0; y < std::min(s.out_h, y0 + unit_rows); ++y)
      std::fill(mask.begin() + size_t(y) * s.out_w + x0, mask.begin() + size_t(y) * s.out_w + x1, 0);
  }
  return mask;
}

void ApplyPixelMask(const ConvShape& s, const std::vector<uint8_t>& mask,
                    std::vector<float>* output) {
  const size_t pixels = size_t(s.out_h) * s.out_w;
  for (size_t p = 0; p < size_t(s.batch) * pixels; ++p)
    if (mask[p % pixels] == 0)
      std::fill_n(output->begin() + p * s.out_c, s.out_c, 0.0f);
}

double MaxRelError(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = a.size() == b.size() ? 0.0 : 1e30;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    const double e = std::fabs(double(a[i]) - b[i]) / (1.0 + std::fabs(double(b[i])));
    if (std::isnan(e)) return INFINITY;
    worst = std::max(worst, e);
  }
  return worst;
}

}  // namespace testing
}  // namespace tfpconv
