// Times the masked dense path (dense_conv.h) on ResNet-18 224's convolutions (every 3x3 and the
// 1x1 downsamples; not the 7x7 stem, with its 3 input channels), each without a mask and with
// --mask of its units masked (default 0.2), the two timed alternately. Not a test: run by hand, e.g.
//   tfpconv_dense_conv_bench [--threads=1] [--isa=avx2] [--mask=0.2] [--min_ms=400] [--layer=l1_3x3]
//                            [--xnnpack=xnn.txt]   (bench/xnnpack_resnet18_layers.py --out: ratios)
// ms are medians of per-run CPU time divided by the threads (on a shared machine the steadier
// number: it does not count time spent descheduled), wall ms next to them; GF/s counts every
// pixel's multiply-adds (the dense work), so a masked run's GF/s is its effective rate.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "dense_conv.h"

namespace {

using tfpconv::DenseConv;
using tfpconv::DenseConvShape;
using tfpconv::Isa;

struct Layer {
  const char* name;
  int hw, in_c, out_c, kernel, stride, count;  // count: occurrences in ResNet-18
};
// Keep in step with LAYERS in xnnpack_resnet18_layers.py.
const Layer kLayers[] = {
    {"l1_3x3", 56, 64, 64, 3, 1, 4},    {"l2_3x3s2", 56, 64, 128, 3, 2, 1},
    {"l2_3x3", 28, 128, 128, 3, 1, 3},  {"l2_1x1s2", 56, 64, 128, 1, 2, 1},
    {"l3_3x3s2", 28, 128, 256, 3, 2, 1}, {"l3_3x3", 14, 256, 256, 3, 1, 3},
    {"l3_1x1s2", 28, 128, 256, 1, 2, 1}, {"l4_3x3s2", 14, 256, 512, 3, 2, 1},
    {"l4_3x3", 7, 512, 512, 3, 1, 3},    {"l4_1x1s2", 14, 256, 512, 1, 2, 1},
};

// TFLite SAME padding.
DenseConvShape ShapeOf(const Layer& l) {
  DenseConvShape s;
  s.in_h = s.in_w = l.hw;
  s.in_c = l.in_c;
  s.out_c = l.out_c;
  s.kernel_h = s.kernel_w = l.kernel;
  s.stride_h = s.stride_w = l.stride;
  s.out_h = s.out_w = (l.hw + l.stride - 1) / l.stride;
  s.pad_top = s.pad_left = std::max((s.out_h - 1) * l.stride + l.kernel - l.hw, 0) / 2;
  s.act_min = 0.0f;  // ReLU
  return s;
}

double Gflop(const DenseConvShape& s) {
  return 2e-9 * s.kernel_h * s.kernel_w * s.in_c * s.out_c * s.out_h * s.out_w;
}

// Exactly round(fraction * units) whole units masked, chosen at random.
std::vector<uint8_t> UnitMask(const DenseConvShape& s, double fraction, uint32_t seed) {
  std::vector<std::pair<int, int>> units;
  for (int y = 0; y < s.out_h; ++y)
    for (int x0 = 0; x0 < s.out_w; x0 += tfpconv::kActivationUnitPixels) units.push_back({y, x0});
  std::mt19937 rng(seed);
  std::shuffle(units.begin(), units.end(), rng);
  std::vector<uint8_t> mask(size_t(s.out_h) * s.out_w, 1);
  const size_t masked = size_t(fraction * units.size() + 0.5);
  for (size_t i = 0; i < masked; ++i) {
    const int y = units[i].first, x0 = units[i].second;
    const int x1 = std::min(s.out_w, x0 + tfpconv::kActivationUnitPixels);
    std::fill(mask.begin() + size_t(y) * s.out_w + x0, mask.begin() + size_t(y) * s.out_w + x1, 0);
  }
  return mask;
}

double CpuMs() {
  timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Timing {
  double cpu_ms, wall_ms;
};

// Runs a, b, a, b, ... (so both see the same machine load); medians of each.
void TimeInterleaved(const DenseConv& a, const DenseConv& b, const std::vector<float>& in,
                     std::vector<float>* out, tfpconv::ThreadPool* pool, double min_ms,
                     Timing* ta, Timing* tb) {
  const DenseConv* convs[2] = {&a, &b};
  std::vector<double> cpu[2], wall[2];
  for (const DenseConv* c : convs) c->Run(in.data(), out->data(), pool);  // warm-up
  double total = 0;
  while (cpu[0].size() < 7 || (total < 2 * min_ms && cpu[0].size() < 400)) {
    for (int k = 0; k < 2; ++k) {
      const double c0 = CpuMs();
      const auto t0 = std::chrono::steady_clock::now();
      convs[k]->Run(in.data(), out->data(), pool);
      const double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      cpu[k].push_back((CpuMs() - c0) / pool->num_threads());
      wall[k].push_back(ms);
      total += ms;
    }
  }
  *ta = {Median(cpu[0]), Median(wall[0])};
  *tb = {Median(cpu[1]), Median(wall[1])};
}

const char* Arg(int argc, char** argv, const char* key) {
  const size_t n = std::strlen(key);
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], key, n) == 0 && argv[i][n] == '=') return argv[i] + n + 1;
  return nullptr;
}

// "name ms" lines (xnnpack_resnet18_layers.py --out).
std::map<std::string, double> ReadXnnpack(const char* path) {
  std::map<std::string, double> ms;
  std::ifstream f(path);
  std::string name;
  double v;
  while (f >> name >> v) ms[name] = v;
  if (ms.empty()) std::fprintf(stderr, "no timings in %s\n", path);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = Arg(argc, argv, "--threads") ? std::atoi(Arg(argc, argv, "--threads")) : 1;
  const double fraction = Arg(argc, argv, "--mask") ? std::atof(Arg(argc, argv, "--mask")) : 0.2;
  const double min_ms = Arg(argc, argv, "--min_ms") ? std::atof(Arg(argc, argv, "--min_ms")) : 400;
  const char* only = Arg(argc, argv, "--layer");
  Isa isa = Isa::kAvx512;
  if (const char* name = Arg(argc, argv, "--isa")) {
    if (!tfpconv::ParseIsa(name, &isa)) {
      std::fprintf(stderr, "unknown --isa=%s\n", name);
      return 2;
    }
  } else if (!tfpconv::DenseConvAvailable(isa)) {
    isa = Isa::kAvx2;
  }
  std::map<std::string, double> xnn;
  if (const char* path = Arg(argc, argv, "--xnnpack")) xnn = ReadXnnpack(path);

  tfpconv::ThreadPool pool(threads);
  std::printf("dense path, isa %s, %d thread(s), mask %.2f of the units; ms = median CPU ms / "
              "threads\n",
              tfpconv::IsaName(isa), threads, fraction);
  std::printf("%-9s %7s | %8s %8s %6s | %8s %8s %6s %6s", "layer", "GFLOP", "ms", "wall", "GF/s",
              "ms@mask", "wall", "GF/s", "m/unm");
  if (!xnn.empty()) std::printf(" | %8s %7s %7s", "xnn ms", "xnn/unm", "xnn/msk");
  std::printf("\n");
  double total_xnn = 0, total_dense = 0, total_masked = 0;
  bool all_layers = true;
  for (const Layer& l : kLayers) {
    if (only != nullptr && std::strcmp(only, l.name) != 0) continue;
    const DenseConvShape s = ShapeOf(l);
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> uni(-1.0f, 1.0f);
    std::vector<float> w(size_t(s.out_c) * s.kernel_h * s.kernel_w * s.in_c), bias(s.out_c);
    std::vector<float> in(size_t(s.in_h) * s.in_w * s.in_c), out(size_t(s.out_h) * s.out_w * s.out_c);
    for (float& v : w) v = uni(rng) * 0.05f;
    for (float& v : bias) v = uni(rng);
    for (float& v : in) v = uni(rng);
    std::string error;
    auto dense = DenseConv::Create(s, w.data(), bias.data(), {}, isa, &error);
    auto masked = dense ? DenseConv::Create(s, w.data(), bias.data(), UnitMask(s, fraction, 11),
                                            isa, &error)
                        : nullptr;
    if (!dense || !masked) {
      std::fprintf(stderr, "%s: %s\n", l.name, error.c_str());
      return 1;
    }
    Timing td, tm;
    TimeInterleaved(*dense, *masked, in, &out, &pool, min_ms, &td, &tm);
    const double gf = Gflop(s);
    std::printf("%-9s %7.3f | %8.3f %8.3f %6.1f | %8.3f %8.3f %6.1f %6.3f", l.name, gf, td.cpu_ms,
                td.wall_ms, gf / td.cpu_ms * 1e3, tm.cpu_ms, tm.wall_ms, gf / tm.cpu_ms * 1e3,
                tm.cpu_ms / td.cpu_ms);
    const auto x = xnn.find(l.name);
    if (x != xnn.end()) {
      std::printf(" | %8.3f %7.3f %7.3f", x->second, x->second / td.cpu_ms,
                  x->second / tm.cpu_ms);
      total_xnn += x->second * l.count;
    } else {
      all_layers = false;
    }
    std::printf("\n");
    std::fflush(stdout);
    total_dense += td.cpu_ms * l.count;
    // The target masks every 3x3 convolution; the 1x1 downsamples run unmasked.
    total_masked += (l.kernel == 3 ? tm.cpu_ms : td.cpu_ms) * l.count;
  }
  if (only == nullptr) {
    std::printf("ResNet-18 convolutions but the stem (x occurrences): dense %.2f ms, 3x3 masked "
                "%.2f ms",
                total_dense, total_masked);
    if (!xnn.empty() && all_layers)
      std::printf(", XNNPACK %.2f ms: speed-up %.3fx unmasked, %.3fx masked", total_xnn,
                  total_xnn / total_dense, total_xnn / total_masked);
    std::printf("\n");
  }
  return 0;
}
