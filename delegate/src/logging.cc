#include "logging.h"

#include <cstdarg>
#include <cstdio>

namespace tfpconv {

const char* LogLevelName(TfpconvLogLevel level) {
  switch (level) {
    case kTfpconvLogError: return "error";
    case kTfpconvLogWarning: return "warning";
    case kTfpconvLogInfo: return "info";
    case kTfpconvLogVerbose: return "verbose";
  }
  return "?";
}

void Logger::Log(TfpconvLogLevel level, const char* format, ...) const {
  if (!Enabled(level)) return;
  char message[1024];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  if (callback_ != nullptr) {
    callback_(level, message, user_data_);
    return;
  }
  // One fprintf per line keeps lines whole when several threads log.
  std::fprintf(stderr, "tfpconv %s: %s\n", LogLevelName(level), message);
}

}  // namespace tfpconv
