#include "options.h"

#include <gtest/gtest.h>

#include <cstring>

namespace tfpconv {
namespace {

TEST(Options, DefaultsAndClamping) {
  DelegateSettings defaults = SettingsFromOptions(nullptr);
  EXPECT_EQ(defaults.num_threads, 1);
  EXPECT_EQ(defaults.log_level, kTfpconvLogWarning);
  EXPECT_EQ(defaults.isa, "auto");

  TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
  EXPECT_EQ(options.num_threads, 1);
  options.num_threads = -3;
  options.isa = "scalar";
  const int out_of_range = 42;  // what a C caller could pass
  std::memcpy(&options.log_level, &out_of_range, sizeof(int));
  DelegateSettings settings = SettingsFromOptions(&options);
  EXPECT_EQ(settings.num_threads, 1);
  EXPECT_EQ(settings.isa, "scalar");
  EXPECT_EQ(settings.log_level, kTfpconvLogVerbose);
}

TEST(Options, ParsesKeyValueStrings) {
  DelegateSettings settings;
  std::string error;
  EXPECT_TRUE(ApplyOption("num_threads", "4", &settings, &error));
  EXPECT_EQ(settings.num_threads, 4);
  EXPECT_TRUE(ApplyOption("num_threads", "0", &settings, &error));
  EXPECT_EQ(settings.num_threads, 1);
  EXPECT_TRUE(ApplyOption("log_level", "info", &settings, &error));
  EXPECT_EQ(settings.log_level, kTfpconvLogInfo);
  EXPECT_TRUE(ApplyOption("log_level", "0", &settings, &error));
  EXPECT_EQ(settings.log_level, kTfpconvLogError);
  EXPECT_TRUE(ApplyOption("isa", "scalar", &settings, &error));
  EXPECT_EQ(settings.isa, "scalar");
  EXPECT_TRUE(ApplyOption("isa", "auto", &settings, &error));
  EXPECT_FALSE(settings.claim_all);
  EXPECT_TRUE(ApplyOption("claim", "all", &settings, &error));
  EXPECT_TRUE(settings.claim_all);
  EXPECT_TRUE(ApplyOption("claim", "auto", &settings, &error));
  EXPECT_FALSE(settings.claim_all);
}

TEST(Options, RejectsUnknownKeysAndBadValues) {
  DelegateSettings settings;
  std::string error;
  EXPECT_FALSE(ApplyOption("threads", "2", &settings, &error));
  EXPECT_NE(error.find("unknown option"), std::string::npos);
  for (const char* bad : {"", "two", "2x", "99999999999999999999", "5000"}) {
    EXPECT_FALSE(ApplyOption("num_threads", bad, &settings, &error)) << bad;
  }
  EXPECT_FALSE(ApplyOption("log_level", "loud", &settings, &error));
  EXPECT_FALSE(ApplyOption("log_level", "4", &settings, &error));
  EXPECT_FALSE(ApplyOption("isa", "sse9", &settings, &error));
  EXPECT_FALSE(ApplyOption("claim", "some", &settings, &error));
  EXPECT_EQ(settings.num_threads, 1);  // unchanged by the failures
}

}  // namespace
}  // namespace tfpconv
