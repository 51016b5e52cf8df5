// The shared plan validity corpus (converter/plan_corpus, written by converter/make_plan_corpus.py):
// bare plan FlatBuffers and an index, one "<file> <verdict>" line each, that the Python reader is
// checked against too, so both readers apply the same validity rules. Verdicts, for this reader:
//   valid            ReadPlan succeeds and every op is usable (no error, no missing feature);
//   invalid          ReadPlan fails, or at least one op has an error;
//   declined:<name>  ReadPlan succeeds, no op has an error, and one op misses feature <name>.
// The corpus directory: $TFPCONV_PLAN_CORPUS, else TFPCONV_PLAN_CORPUS_DIR (CMake passes the source
// tree's; Bazel runs tests in the runfiles tree, where the relative default names it).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "plan_reader.h"
#include "test_plans.h"

#ifndef TFPCONV_PLAN_CORPUS_DIR
#define TFPCONV_PLAN_CORPUS_DIR "converter/plan_corpus"
#endif

namespace tfpconv {
namespace {

std::string CorpusDir() {
  const char* env = std::getenv("TFPCONV_PLAN_CORPUS");
  return env != nullptr && *env != '\0' ? env : TFPCONV_PLAN_CORPUS_DIR;
}

bool ReadFile(const std::string& path, std::vector<uint8_t>* bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  bytes->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

// Whether the plan bytes get `verdict`; else *what says what the reader made of them.
bool HasVerdict(const std::vector<uint8_t>& bytes, const std::string& verdict, std::string* what) {
  ModelPlan plan;
  std::string error;
  if (!ReadPlan(bytes.data(), bytes.size(), &plan, &error)) {
    *what = "ReadPlan failed: " + error;
    return verdict == "invalid";
  }
  std::set<std::string> missing;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const PlannedOp& op = plan.ops[i];
    if (!op.error.empty()) {
      *what = "op " + std::to_string(i) + " (operator " + std::to_string(op.operator_index) +
              ") is invalid: " + op.error;
      return verdict == "invalid";
    }
    if (!op.missing_feature.name.empty()) missing.insert(op.missing_feature.name);
  }
  if (missing.empty()) {
    *what = "valid (" + std::to_string(plan.ops.size()) + " usable ops)";
    return verdict == "valid";
  }
  *what = "declined, missing features:";
  for (const std::string& name : missing) *what += " '" + name + "'";
  const std::string prefix = "declined:";
  return verdict.compare(0, prefix.size(), prefix) == 0 &&
         missing.count(verdict.substr(prefix.size())) == 1;
}

// Checks every file of a corpus directory against its index; returns the number of files.
int CheckCorpus(const std::string& dir) {
  const std::string index_path = dir + "/index.txt";
  std::ifstream index(index_path);
  if (!index) {
    ADD_FAILURE() << "no plan corpus index at " << index_path
                  << " (write it with python3 converter/make_plan_corpus.py, or point "
                     "TFPCONV_PLAN_CORPUS at the directory)";
    return 0;
  }
  int files = 0;
  std::string line;
  for (int number = 1; std::getline(index, line); ++number) {
    const size_t start = line.find_first_not_of(" \t\r");
    if (start == std::string::npos || line[start] == '#') continue;
    std::istringstream fields(line);
    std::string name, verdict, extra;
    fields >> name >> verdict;
    if (verdict.empty() || (fields >> extra)) {
      ADD_FAILURE() << index_path << ":" << number << ": not '<file> <verdict>': " << line;
      continue;
    }
    if (verdict != "valid" && verdict != "invalid" && verdict.rfind("declined:", 0) != 0) {
      ADD_FAILURE() << index_path << ":" << number << ": unknown verdict '" << verdict << "'";
      continue;
    }
    ++files;
    std::vector<uint8_t> bytes;
    if (!ReadFile(dir + "/" + name, &bytes)) {
      ADD_FAILURE() << index_path << ":" << number << ": cannot read " << name;
      continue;
    }
    std::string what;
    EXPECT_TRUE(HasVerdict(bytes, verdict, &what))
        << name << ": the index says " << verdict << ", the C++ reader: " << what;
  }
  return files;
}

TEST(PlanCorpus, EveryFileGetsItsIndexedVerdict) {
  const std::string dir = CorpusDir();
  const int files = CheckCorpus(dir);
  EXPECT_GT(files, 0) << "the plan corpus index in " << dir << " lists no files";
  std::printf("plan corpus %s: %d files checked\n", dir.c_str(), files);
}

// The entries of unified weights (tfpconv 0.3): what the reader decodes from the valid ones, and
// that each invalid one breaks the rule it is named for (tests/test_plan_corpus.py checks the
// Python reader's messages for the same files).
ModelPlan ReadCorpusPlan(const std::string& name) {
  ModelPlan plan;
  std::vector<uint8_t> bytes;
  std::string error;
  EXPECT_TRUE(ReadFile(CorpusDir() + "/" + name + ".tfpconv", &bytes)) << name;
  EXPECT_TRUE(ReadPlan(bytes.data(), bytes.size(), &plan, &error)) << name << ": " << error;
  return plan;
}

TEST(PlanCorpus, UnifiedWeightsDecode) {
  const ModelPlan fc = ReadCorpusPlan("valid_unified_fc");
  ASSERT_EQ(fc.ops.size(), 1u);
  EXPECT_EQ(fc.ops[0].kind, PlannedOpKind::kUnifiedFc);
  EXPECT_EQ(fc.ops[0].unified_fc.out_features, 6);
  EXPECT_EQ(fc.ops[0].unified_fc.in_features, 20);
  EXPECT_EQ(fc.ops[0].unified_fc.block_size, 8);
  EXPECT_EQ(fc.ops[0].unified_fc.blocks(), 3);
  EXPECT_FALSE(fc.ops[0].unified_fc.conv1x1);
  EXPECT_EQ(fc.ops[0].unified_fc.states.size(), 18u);
  EXPECT_EQ(fc.ops[0].weight_bytes, 6u * 20u * 4u);

  const ModelPlan conv = ReadCorpusPlan("valid_unified_conv1x1");
  ASSERT_EQ(conv.ops.size(), 1u);
  EXPECT_TRUE(conv.ops[0].unified_fc.conv1x1);
  EXPECT_EQ(conv.ops[0].unified_fc.block_size, 16);
  EXPECT_EQ(conv.ops[0].unified_fc.states.size(), 12u);

  const ModelPlan mixed = ReadCorpusPlan("valid_unified_fc_tuned_with_pattern_conv");
  ASSERT_EQ(mixed.ops.size(), 2u);
  EXPECT_EQ(mixed.ops[0].kind, PlannedOpKind::kPatternConv);
  EXPECT_EQ(mixed.ops[1].kind, PlannedOpKind::kUnifiedFc);
  ASSERT_EQ(mixed.ops[1].tunings.size(), 1u);
  EXPECT_EQ(mixed.ops[1].tunings[0].isa, "avx2");

  const ModelPlan pattern = ReadCorpusPlan("valid_pattern_conv_unified");
  ASSERT_EQ(pattern.ops.size(), 1u);
  const PlannedOp& op = pattern.ops[0];
  ASSERT_EQ(op.pattern_unified.size(), op.pattern.codes.size());
  int flagged = 0;
  for (size_t k = 0; k < op.pattern_unified.size(); ++k) {
    flagged += op.pattern_unified[k];
    if (op.pattern_unified[k] == 1) {
      EXPECT_GE(op.pattern.codes[k], 0);
    }
  }
  EXPECT_GT(flagged, 0);
  EXPECT_TRUE(ReadCorpusPlan("valid_pattern_conv").ops.at(0).pattern_unified.empty());
}

TEST(PlanCorpus, EachInvalidUnifiedEntryBreaksItsRule) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"invalid_unified_states_length", "states length is not out * ceil(in / block_size)"},
      {"invalid_unified_state_3", "a block state is not 0, 1 or 2"},
      {"invalid_unified_block_size_0", "block_size is not in 1..64"},
      {"invalid_unified_block_size_65", "block_size is not in 1..64"},
      {"invalid_unified_shape_rank_3", "weight_shape is not [out, in] or [out, 1, 1, in]"},
      {"invalid_unified_shape_3x3", "weight_shape is not [out, in] or [out, 1, 1, in]"},
      {"invalid_unified_shape_zero", "weight_shape has a non-positive size"},
      {"invalid_unified_weight_bytes", "weight_bytes does not match weight_shape"},
      {"invalid_unified_weight_tensor", "negative weight_tensor_index"},
      {"invalid_pattern_unified_length", "unified length is not 0 or out * in"},
      {"invalid_pattern_unified_flag_2", "unified has a flag other than 0 and 1"},
      {"invalid_pattern_unified_removed_kernel", "unified flags a removed kernel (code -1)"},
  };
  for (const auto& [name, error] : cases) {
    const ModelPlan plan = ReadCorpusPlan(name);
    ASSERT_EQ(plan.ops.size(), 1u) << name;
    EXPECT_EQ(plan.ops[0].error, error) << name;
  }
  const ModelPlan twice = ReadCorpusPlan("invalid_unified_same_operator_as_pattern_conv");
  ASSERT_EQ(twice.ops.size(), 2u);
  for (const PlannedOp& op : twice.ops) {
    EXPECT_EQ(op.error, "the plan has several entries for this operator");
  }
}

// The checker itself, on a corpus written here with the test builder.
TEST(PlanCorpus, CheckerAgreesWithHandWrittenPlans) {
  using testing::BuildPlan;
  using testing::ConvPlanSpec;
  using testing::SpecFor;
  const testing::PrunedFilter filter = testing::MakePrunedFilter(6, 4, 0.3, 5);
  const ConvPlanSpec good = SpecFor(filter, 1, 2);
  ConvPlanSpec equal_groups = good;
  equal_groups.group_offsets = {0, 3, 3, 6};
  ConvPlanSpec future = SpecFor(filter, 4, 5);
  future.requires_features.push_back({"unified_weights", "0.3.0"});
  ConvPlanSpec tuned = good;
  tuned.tunings = {{"avx2", "", false, "r8v1", {{"tile_oc", 16}}}, {"quantum", "", true, "", {}}};
  const std::vector<std::pair<std::string, std::vector<uint8_t>>> plans = {
      {"valid", BuildPlan({good})},
      {"valid", BuildPlan({tuned}, {{3, "1x1"}})},
      {"valid", BuildPlan({good}, {}, 1)},
      {"valid", BuildPlan({})},
      {"invalid", BuildPlan({equal_groups})},
      {"invalid", BuildPlan({good}, {{1, "also skipped"}})},
      {"invalid", BuildPlan({good}, {}, 3)},
      {"invalid", BuildPlan({good, future, equal_groups})},
      {"declined:unified_weights", BuildPlan({good, future})},
  };
  const std::string dir = ::testing::TempDir() + "tfpconv_plan_corpus_selftest";
  std::filesystem::create_directories(dir);
  std::ofstream index(dir + "/index.txt");
  index << "# hand-written\n\n";
  for (size_t i = 0; i < plans.size(); ++i) {
    const std::string name = "plan" + std::to_string(i) + ".tfpconv";
    std::ofstream(dir + "/" + name, std::ios::binary)
        .write(reinterpret_cast<const char*>(plans[i].second.data()),
               static_cast<std::streamsize>(plans[i].second.size()));
    index << name << " " << plans[i].first << "\n";
  }
  index.close();
  EXPECT_EQ(CheckCorpus(dir), static_cast<int>(plans.size()));

  std::string what;
  EXPECT_FALSE(HasVerdict(plans[0].second, "invalid", &what)) << what;
  EXPECT_FALSE(HasVerdict(plans[4].second, "valid", &what)) << what;
  EXPECT_FALSE(HasVerdict(plans[8].second, "declined:other", &what)) << what;
  EXPECT_FALSE(HasVerdict(plans[8].second, "valid", &what)) << what;
}

}  // namespace
}  // namespace tfpconv
