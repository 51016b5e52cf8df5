#include "conv_geometry.h"

#include <gtest/gtest.h>

namespace tfpconv {
namespace {

tfl::ConvParams Params(tfl::Padding padding, int stride_h, int stride_w,
                       tfl::FusedActivation activation = tfl::kActNone) {
  tfl::ConvParams params{};
  params.padding = padding;
  params.stride_height = stride_h;
  params.stride_width = stride_w;
  params.activation = activation;
  params.dilation_height_factor = 1;
  params.dilation_width_factor = 1;
  return params;
}

TEST(ConvGeometry, SamePaddingTheTfliteWay) {
  ConvShape shape;
  std::string error;
  // in 5, stride 2: out 3, total padding (3-1)*2+3-5 = 2, one on top.
  ASSERT_TRUE(ResolveConvShape(Params(tfl::kPaddingSame, 2, 2), 1, 5, 6, 3, 4, &shape, &error));
  EXPECT_EQ(shape.out_h, 3);
  EXPECT_EQ(shape.pad_top, 1);
  // in 6, stride 2: out 3, total padding 1, the odd one at the bottom/right.
  EXPECT_EQ(shape.out_w, 3);
  EXPECT_EQ(shape.pad_left, 0);
  ASSERT_TRUE(ResolveConvShape(Params(tfl::kPaddingSame, 1, 1), 2, 1, 1, 3, 4, &shape, &error));
  EXPECT_EQ(shape.out_h, 1);
  EXPECT_EQ(shape.pad_top, 1);
  EXPECT_EQ(shape.batch, 2);
}

TEST(ConvGeometry, ValidPadding) {
  ConvShape shape;
  std::string error;
  ASSERT_TRUE(ResolveConvShape(Params(tfl::kPaddingValid, 2, 1), 1, 7, 3, 3, 4, &shape, &error));
  EXPECT_EQ(shape.out_h, 3);
  EXPECT_EQ(shape.out_w, 1);
  EXPECT_EQ(shape.pad_top, 0);
  EXPECT_EQ(shape.pad_left, 0);
  EXPECT_FALSE(ResolveConvShape(Params(tfl::kPaddingValid, 1, 1), 1, 2, 5, 3, 4, &shape, &error));
  EXPECT_FALSE(ResolveConvShape(Params(tfl::kPaddingSame, 1, 1), 0, 5, 5, 3, 4, &shape, &error));
}

TEST(ConvGeometry, ActivationClamp) {
  ConvShape shape;
  std::string error;
  ASSERT_TRUE(ResolveConvShape(Params(tfl::kPaddingSame, 1, 1, tfl::kActRelu6), 1, 4, 4, 1, 1, &shape,
                               &error));
  EXPECT_EQ(shape.act_min, 0.0f);
  EXPECT_EQ(shape.act_max, 6.0f);
  ASSERT_TRUE(ResolveConvShape(Params(tfl::kPaddingSame, 1, 1, tfl::kActRelu), 1, 4, 4, 1, 1, &shape,
                               &error));
  EXPECT_EQ(shape.act_min, 0.0f);
  EXPECT_GT(shape.act_max, 1e38f);
}

TEST(ConvGeometry, UnsupportedParams) {
  EXPECT_EQ(UnsupportedConvParams(Params(tfl::kPaddingSame, 1, 2, tfl::kActRelu)), "");
  EXPECT_NE(UnsupportedConvParams(Params(tfl::kPaddingUnknown, 1, 1)), "");
  EXPECT_NE(UnsupportedConvParams(Params(tfl::kPaddingSame, 3, 1)), "");
  EXPECT_NE(UnsupportedConvParams(Params(tfl::kPaddingSame, 1, 1, tfl::kActReluN1To1)), "");
  tfl::ConvParams dilated = Params(tfl::kPaddingSame, 1, 1);
  dilated.dilation_width_factor = 2;
  EXPECT_NE(UnsupportedConvParams(dilated), "");
}

}  // namespace
}  // namespace tfpconv
