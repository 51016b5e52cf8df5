#include "options.h"

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "pattern_conv.h"

namespace tfpconv {
namespace {

bool ParseInt(const std::string& text, long min, long max, long* value) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  const long parsed = std::strtol(text.c_str(), &end, 10);
  if (errno != 0 || end != text.c_str() + text.size() || parsed < min || parsed > max) return false;
  *value = parsed;
  return true;
}

bool ParseLogLevel(const std::string& text, TfpconvLogLevel* level) {
  static const struct {
    const char* name;
    TfpconvLogLevel level;
  } kNames[] = {{"error", kTfpconvLogError},
                {"warning", kTfpconvLogWarning},
                {"info", kTfpconvLogInfo},
                {"verbose", kTfpconvLogVerbose}};
  for (const auto& entry : kNames) {
    if (text == entry.name) {
      *level = entry.level;
      return true;
    }
  }
  long number = 0;
  if (!ParseInt(text, kTfpconvLogError, kTfpconvLogVerbose, &number)) return false;
  *level = static_cast<TfpconvLogLevel>(number);
  return true;
}

bool IsIsaName(const std::string& text) {
  Isa isa;
  return text == "auto" || ParseIsa(text, &isa);
}

}  // namespace

DelegateSettings SettingsFromOptions(const TfpconvDelegateOptions* options) {
  DelegateSettings settings;
  if (options == nullptr) return settings;
  settings.num_threads = options->num_threads < 1 ? 1 : options->num_threads;
  // Read as an int: a C caller may store any value, and an enum outside its range is undefined.
  int level = 0;
  static_assert(sizeof(level) == sizeof(options->log_level), "enum TfpconvLogLevel is not int-sized");
  std::memcpy(&level, &options->log_level, sizeof(level));
  if (level < kTfpconvLogError) level = kTfpconvLogError;
  if (level > kTfpconvLogVerbose) level = kTfpconvLogVerbose;
  settings.log_level = static_cast<TfpconvLogLevel>(level);
  if (options->isa != nullptr && options->isa[0] != '\0') settings.isa = options->isa;
  settings.claim_all = options->claim_all != 0;
  settings.log_callback = options->log_callback;
  settings.log_user_data = options->log_user_data;
  return settings;
}

bool ApplyOption(const std::string& key, const std::string& value, DelegateSettings* settings,
                 std::string* error) {
  if (key == "num_threads") {
    long threads = 0;
    if (!ParseInt(value, LONG_MIN, 4096, &threads)) {
      *error = "num_threads must be an integer <= 4096, got '" + value + "'";
      return false;
    }
    settings->num_threads = threads < 1 ? 1 : static_cast<int>(threads);
    return true;
  }
  if (key == "log_level") {
    if (!ParseLogLevel(value, &settings->log_level)) {
      *error = "log_level must be error, warning, info, verbose or 0..3, got '" + value + "'";
      return false;
    }
    return true;
  }
  if (key == "isa") {
    if (!IsIsaName(value)) {
      *error = "isa must be auto, avx512, avx2, neon or scalar, got '" + value + "'";
      return false;
    }
    settings->isa = value;
    return true;
  }
  if (key == "claim") {
    if (value != "auto" && value != "all") {
      *error = "claim must be auto or all, got '" + value + "'";
      return false;
    }
    settings->claim_all = value == "all";
    return true;
  }
  *error = "unknown option '" + key + "' (known: num_threads, log_level, isa, claim)";
  return false;
}

}  // namespace tfpconv
