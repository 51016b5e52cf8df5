// One-line diagnostics of the delegate, filtered by the log level of the options.
#ifndef TFPCONV_SRC_LOGGING_H_
#define TFPCONV_SRC_LOGGING_H_

#include "tfpconv/delegate.h"

namespace tfpconv {

class Logger {
 public:
  explicit Logger(TfpconvLogLevel level = kTfpconvLogWarning, TfpconvLogCallback callback = nullptr,
                  void* user_data = nullptr)
      : level_(level), callback_(callback), user_data_(user_data) {}
  TfpconvLogLevel level() const { return level_; }
  bool Enabled(TfpconvLogLevel level) const { return level <= level_; }
  // printf-style; when `level` is enabled, passes the message to the callback, or without one
  // writes "tfpconv <level>: message\n" to stderr.
  void Log(TfpconvLogLevel level, const char* format, ...) const
      __attribute__((format(printf, 3, 4)));

 private:
  TfpconvLogLevel level_;
  TfpconvLogCallback callback_;
  void* user_data_;
};

const char* LogLevelName(TfpconvLogLevel level);

}  // namespace tfpconv

#endif  // TFPCONV_SRC_LOGGING_H_
