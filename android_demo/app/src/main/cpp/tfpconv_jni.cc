// JNI bridge between com.tfpconv.demo.NativeBridge (Java) and the tfpconv delegate's C API.
//
// The native TfLiteDelegate* travels through Java as a jlong handle; TFLite's Android Interpreter
// takes it back from org.tensorflow.lite.Delegate#getNativeHandle() and applies it with
// ModifyGraphWithDelegate. Nothing here knows TFLite's structs: only delegate.h is used.
// On Android the delegate's log lines go to logcat (tag "tfpconv") through the options' log
// callback, since Android discards stderr; elsewhere (the host tests) they stay on stderr.
#include <jni.h>

#if defined(__ANDROID__)
#include <android/log.h>
#endif

#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include "tfpconv/delegate.h"

namespace {

static_assert(sizeof(jlong) >= sizeof(void*), "a jlong must hold a pointer");

TfLiteDelegate* FromHandle(jlong handle) {
  return reinterpret_cast<TfLiteDelegate*>(static_cast<intptr_t>(handle));
}

jlong ToHandle(TfLiteDelegate* delegate) {
  return static_cast<jlong>(reinterpret_cast<intptr_t>(delegate));
}

TfpconvLogLevel ClampLogLevel(jint level) {
  if (level <= kTfpconvLogError) return kTfpconvLogError;
  if (level >= kTfpconvLogVerbose) return kTfpconvLogVerbose;
  return static_cast<TfpconvLogLevel>(level);
}

#if defined(__ANDROID__)
int AndroidPriority(TfpconvLogLevel level) {
  switch (level) {
    case kTfpconvLogError: return ANDROID_LOG_ERROR;
    case kTfpconvLogWarning: return ANDROID_LOG_WARN;
    case kTfpconvLogInfo: return ANDROID_LOG_INFO;
    case kTfpconvLogVerbose: return ANDROID_LOG_VERBOSE;
  }
  return ANDROID_LOG_INFO;
}

void LogToLogcat(TfpconvLogLevel level, const char* message, void*) {
  __android_log_print(AndroidPriority(level), "tfpconv", "%s", message);
}
#endif

void ThrowOutOfMemory(JNIEnv* env, const char* what) {
  if (env->ExceptionCheck()) return;  // keep the exception already pending
  jclass error = env->FindClass("java/lang/OutOfMemoryError");
  if (error != nullptr) env->ThrowNew(error, what);
}

}  // namespace

extern "C" {

JNIEXPORT jlong JNICALL Java_com_tfpconv_demo_NativeBridge_nativeCreate(JNIEnv* env, jclass,
                                                                        jint num_threads,
                                                                        jint log_level,
                                                                        jstring isa) {
  try {
    TfpconvDelegateOptions options = TfpconvDelegateOptionsDefault();
    options.num_threads = static_cast<int>(num_threads);  // the delegate treats < 1 as 1
    options.log_level = ClampLogLevel(log_level);
#if defined(__ANDROID__)
    options.log_callback = LogToLogcat;
#endif
    std::string isa_name;  // the delegate copies it; it only has to live through the call
    if (isa != nullptr) {
      const char* chars = env->GetStringUTFChars(isa, nullptr);
      if (chars == nullptr) return 0;  // OutOfMemoryError is pending
      isa_name.assign(chars);
      env->ReleaseStringUTFChars(isa, chars);
      options.isa = isa_name.c_str();
    }
    return ToHandle(TfpconvDelegateCreate(&options));
  } catch (const std::bad_alloc&) {
    ThrowOutOfMemory(env, "tfpconv: out of memory creating the delegate");
    return 0;
  }
}

JNIEXPORT void JNICALL Java_com_tfpconv_demo_NativeBridge_nativeDelete(JNIEnv*, jclass,
                                                                       jlong handle) {
  TfpconvDelegateDelete(FromHandle(handle));  // NULL is a no-op
}

JNIEXPORT jintArray JNICALL Java_com_tfpconv_demo_NativeBridge_nativeClaimedNodes(JNIEnv* env,
                                                                                  jclass,
                                                                                  jlong handle) {
  const TfLiteDelegate* delegate = FromHandle(handle);
  if (delegate == nullptr) return nullptr;
  try {
    int count = TfpconvDelegateClaimedNodes(delegate, nullptr, 0);
    if (count < 0) return nullptr;
    std::vector<int> nodes(static_cast<size_t>(count));
    count = TfpconvDelegateClaimedNodes(delegate, nodes.data(), count);
    if (count < 0) return nullptr;
    if (static_cast<size_t>(count) < nodes.size()) nodes.resize(static_cast<size_t>(count));
    std::vector<jint> values(nodes.begin(), nodes.end());
    jintArray array = env->NewIntArray(static_cast<jsize>(values.size()));
    if (array == nullptr) return nullptr;  // OutOfMemoryError is pending
    env->SetIntArrayRegion(array, 0, static_cast<jsize>(values.size()), values.data());
    return array;
  } catch (const std::bad_alloc&) {
    ThrowOutOfMemory(env, "tfpconv: out of memory listing the claimed nodes");
    return nullptr;
  }
}

}  // extern "C"
