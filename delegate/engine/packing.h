// Layout decisions of the engine: the transformed input buffer (phase planes), plan validation, and
// the weights packed in execution order.
#ifndef TFPCONV_ENGINE_PACKING_H_
#define TFPCONV_ENGINE_PACKING_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "pattern_conv.h"

namespace tfpconv {

// The input of one image, transformed tile by tile so that a tile's kernels read only its own
// small contiguous block (one input channel of one tile is a few kilobytes, so a block of channels
// stays in or near L1 while every output channel of a chunk passes over it). For output tile
// (ty, tx) of rows x cols pixels and channel c, the block holds ph x 3 planes of hq x wq floats
// (wq = cols): plane (a, dx) row i column j is padded input pixel
// (a + stride_h * (ty * rows + i), dx + stride_w * (tx * cols + j)). So there is one plane per tap
// column dx (each already shifted by its dx) and, at stride 2, one per row phase (even and odd
// rows split so the rows of consecutive output rows are contiguous). Every tap (dy, dx) of tile
// pixel (y, x) is then at offset tap_off[3 * dy + dx] + y * wq + x from the channel's block, and
// with cols a multiple of the vector width every vector load of a row tile starts on a vector
// boundary: three copies of the input cost less than loads that straddle cache lines (each
// misaligned 64-byte AVX-512 load does, and costs two).
//
// Whole-row variants (kernels.h) take tiles of whole output rows (cols = out_w, tiles_x = 1) and
// compute one output channel's tile as a single run of vectors over the flattened planes: tile
// pixel (y, x) is accumulator element y * out_w + x, nothing is wasted between rows, the lanes
// past the tile's last pixel are thrown away, and tile_stride has a tail of zeros for the last
// channel's overreach.
struct Geometry {
  int ph = 1, pw = 3;  // planes: row phases min(stride_h, 3) x tap columns 3
  int hq = 0, wq = 0;  // plane size: rows + 2 / stride_h, cols
  ptrdiff_t plane = 0, channel_stride = 0, tile_stride = 0;
  int32_t tap_off[9] = {};  // tap (dy, dx) at index 3 * dy + dx
  int rows = 1, cols = 1;   // output tile: rows x cols pixels
  int acc_pitch = 1;        // accumulator floats between tile rows of one output channel
  int acc_floats = 1;       // accumulator floats per output channel: rows * cols, or vecs * lanes
  int tiles_y = 0, tiles_x = 0;
};

// Gathered tiles (pattern_conv.h's pixel_mask): a tile's `rows` rows are active units of
// kActivationUnitPixels output pixels along one output row, taken from anywhere in the image, so no
// two rows of a tile share input rows and the row phases of the layout above do not apply. Each
// channel's block holds 9 planes of rows x cols floats (cols = vecs * lanes = the unit), one per
// tap: plane (dy, dx) row i column j is padded input pixel (dy + stride_h * y_i,
// dx + stride_w * (x_i + j)) for unit i starting at output pixel (y_i, x_i), so tap (dy, dx) of
// unit i's pixel j is at tap_off[3 * dy + dx] + i * wq + j with tap_off[k] = k * plane. That is
// 9 transformed floats per output pixel and input channel against 3 * (rows + 2) / rows for a row
// tile at stride 1 (2.4x an 8-row tile's), the price of skipping masked units. Only flat packing
// runs them. tiles_y = ceil(units / rows) tiles, tiles_x = 1.
Geometry MakeGatheredGeometry(const ConvShape& shape, const kernels::Variant& variant, int lanes,
                              size_t units);

// Writes the planes of the unit starting at output pixel (out_y, out_x0) into row `row` of the
// gathered tile at x (tile_stride floats).
void TransformUnit(const ConvShape& shape, const Geometry& geo, const kernels::KernelSet& set,
                   const float* image, float* x, int row, int out_y, int out_x0);

// Zeros rows [first_row, rows) of every plane of a gathered tile (a last tile with fewer units).
void ClearGatheredRows(const ConvShape& shape, const Geometry& geo, float* x, int first_row);

// The tile rows a whole-row variant of `vector_floats` (vecs * lanes) covers; 0 when the layer is
// wider than that.
int WholeRowsPerTile(const ConvShape& shape, int vector_floats);

// The geometry of a variant on a shape (for whole-row variants, WholeRowsPerTile must be > 0).
Geometry MakeGeometry(const ConvShape& shape, const kernels::Variant& variant, int lanes);

// Writes the transformed input of tile `tile` (ty * tiles_x + tx), tile_stride floats, to x, with
// the instruction set's transform; with prefetch_next it also asks for the input of the tile to
// the right (TransformArgs).
void TransformTile(const ConvShape& shape, const Geometry& geo, const kernels::KernelSet& set,
                   const float* image, float* x, size_t tile, bool prefetch_next);

// Returns an empty string when shape and plan are consistent, else what is wrong.
std::string ValidatePlan(const ConvShape& shape, const PatternPlan& plan);

// Weights of all non-pruned kernels in execution order: for each chunk of output channels (in
// plan.filter_order, chunks are runs of whole plan groups), for each block of input channels, for
// each output channel of the chunk, its kernels. Pattern packing (by_pattern): grouped in runs of
// one pattern (library order), ascending input channel within a run. Flat packing: ascending
// input channel, tap offsets folded into each kernel.
// Flat packing also groups filters with equal kernel codes (in each chunk, in groups of 4, then 2):
// a group's task holds its kernels once, in kernels2 or kernels4 (kernels.h, OcTask).
struct PackedWeights {
  std::vector<kernels::PackedKernel> kernels;
  std::vector<kernels::SharedKernel<2>> kernels2;
  std::vector<kernels::SharedKernel<4>> kernels4;
  std::vector<kernels::Run> runs;
  std::vector<kernels::OcTask> tasks;  // chunk k's tasks start at chunk_begin[k] * num_cblocks
  std::vector<int32_t> order;          // output channel of each execution position
  std::vector<int32_t> position;       // execution position of each output channel
  std::vector<float> bias;             // bias of each execution position (0 without bias)
  std::vector<int32_t> chunk_begin;    // chunk boundaries in `order`, [0, ..., out_c]
  int cblock = 1, num_cblocks = 1;     // input channels per block, number of blocks
  size_t nonzero_kernels = 0;
};

// tile_oc: most output channels per chunk; tile_ic: input channels per block (>= in_c: one
// block). Returns false with *error set when a weight lies outside its kernel's pattern.
bool PackWeights(const ConvShape& shape, const Geometry& geo, const float* weights,
                 const float* bias, const PatternPlan& plan, int tile_oc, int tile_ic,
                 bool by_pattern, PackedWeights* packed, std::string* error);

}  // namespace tfpconv

#endif  // TFPCONV_ENGINE_PACKING_H_
