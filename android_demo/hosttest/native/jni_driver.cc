// Drives libtfpconv_jni.so's entry points without a JVM, for targets where no JVM runs here (the
// aarch64 cross build, under qemu-aarch64). A minimal JNIEnv provides just the two functions the
// bridge calls on its success paths (NewIntArray, SetIntArrayRegion); any other use of the JNIEnv
// would crash the driver, and so fail the test. Prints "PASS name" lines; exits non-zero on failure.
#include <jni.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

extern "C" {
jlong Java_com_tfpconv_demo_NativeBridge_nativeCreate(JNIEnv*, jclass, jint, jint, jstring);
void Java_com_tfpconv_demo_NativeBridge_nativeDelete(JNIEnv*, jclass, jlong);
jintArray Java_com_tfpconv_demo_NativeBridge_nativeClaimedNodes(JNIEnv*, jclass, jlong);
}

namespace {

struct FakeArray {
  std::vector<jint> values;
};
std::vector<FakeArray*> g_arrays;

jintArray NewIntArray(JNIEnv*, jsize length) {
  auto* array = new FakeArray{std::vector<jint>(static_cast<size_t>(length))};
  g_arrays.push_back(array);
  return reinterpret_cast<jintArray>(array);
}

void SetIntArrayRegion(JNIEnv*, jintArray array, jsize start, jsize length, const jint* values) {
  auto* fake = reinterpret_cast<FakeArray*>(array);
  for (jsize i = 0; i < length; ++i) fake->values[static_cast<size_t>(start + i)] = values[i];
}

int g_failures = 0;

void Expect(bool condition, const char* name) {
  std::printf("%s %s\n", condition ? "PASS" : "FAIL", name);
  std::fflush(stdout);
  if (!condition) ++g_failures;
}

}  // namespace

int main() {
  JNINativeInterface_ table{};  // every function NULL except the two below
  table.NewIntArray = NewIntArray;
  table.SetIntArrayRegion = SetIntArrayRegion;
  JNIEnv env_storage{};
  env_storage.functions = &table;
  JNIEnv* env = &env_storage;

  // Verbose: the delegate logs "delegate created: N thread(s), isa <name>" to stderr.
  jlong handle = Java_com_tfpconv_demo_NativeBridge_nativeCreate(env, nullptr, 2, 3, nullptr);
  Expect(handle != 0, "create_two_threads");
  jintArray claimed = Java_com_tfpconv_demo_NativeBridge_nativeClaimedNodes(env, nullptr, handle);
  Expect(claimed != nullptr && reinterpret_cast<FakeArray*>(claimed)->values.empty(),
         "fresh_delegate_claims_nothing");
  Java_com_tfpconv_demo_NativeBridge_nativeDelete(env, nullptr, handle);
  Expect(Java_com_tfpconv_demo_NativeBridge_nativeClaimedNodes(env, nullptr, 0) == nullptr,
         "null_handle");
  Java_com_tfpconv_demo_NativeBridge_nativeDelete(env, nullptr, 0);

  bool all_created = true;
  for (int i = 0; i < 1000; ++i) {
    jlong h = Java_com_tfpconv_demo_NativeBridge_nativeCreate(env, nullptr, i % 4 - 1, 0, nullptr);
    all_created = all_created && h != 0;
    Java_com_tfpconv_demo_NativeBridge_nativeDelete(env, nullptr, h);
  }
  Expect(all_created, "create_delete_1000");

  for (FakeArray* array : g_arrays) delete array;
  std::printf("jni driver: %s\n", g_failures == 0 ? "all ok" : "failures");
  return g_failures == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
