// Delegate settings: from the C options struct or from external-delegate key/value strings.
#ifndef TFPCONV_SRC_OPTIONS_H_
#define TFPCONV_SRC_OPTIONS_H_

#include <string>

#include "tfpconv/delegate.h"

namespace tfpconv {

struct DelegateSettings {
  int num_threads = 1;
  TfpconvLogLevel log_level = kTfpconvLogWarning;
  std::string isa = "auto";  // "auto" or an engine ISA name
  bool claim_all = false;    // claim every planned node the engine runs, faster or not
  TfpconvLogCallback log_callback = nullptr;  // null: log lines go to stderr
  void* log_user_data = nullptr;
};

// Copies `options` (NULL means the defaults), clamping num_threads to >= 1.
DelegateSettings SettingsFromOptions(const TfpconvDelegateOptions* options);

// Applies one external-delegate option ("num_threads", "log_level", "isa", "claim"). Returns false and sets
// *error for an unknown key or a bad value; `settings` is unchanged then.
bool ApplyOption(const std::string& key, const std::string& value, DelegateSettings* settings,
                 std::string* error);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_OPTIONS_H_
