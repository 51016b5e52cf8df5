// One-line diagnostics of the delegate, filtered by the log level of the options.
#ifndef TFPCONV_SRC_LOGGING_H_
#define TFPCONV_SRC_LOGGING_H_

#include "tfpconv/delegate.h"

namespace tfpconv {

class Logger {
 public:
  explicit Logger(TfpconvLogLevel level = kTfpconvLogWarning) : level_(level) {}
  TfpconvLogLevel level() const { return level_; }
  bool Enabled(TfpconvLogLevel level) const { return level <= level_; }
  // printf-style; writes "tfpconv <LEVEL>: message\n" to stderr when `level` is enabled.
  void Log(TfpconvLogLevel level, const char* format, ...) const
      __attribute__((format(printf, 3, 4)));

 private:
  TfpconvLogLevel level_;
};

const char* LogLevelName(TfpconvLogLevel level);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_LOGGING_H_
