// Host-test-only JNI helper: bytes of the C heap in use (glibc's mallinfo2, all arenas), so the
// host test can tell whether creating and deleting delegates through the bridge leaks. Not part of
// the app.
#include <jni.h>
#include <malloc.h>

extern "C" JNIEXPORT jlong JNICALL Java_com_tfpconv_demo_HostHeapProbe_heapInUseBytes(JNIEnv*,
                                                                                      jclass) {
  const struct mallinfo2 info = mallinfo2();
  return static_cast<jlong>(info.uordblks + info.hblkhd);  // small/arena blocks + mmapped blocks
}
