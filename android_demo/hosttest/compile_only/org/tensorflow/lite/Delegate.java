// Compile-only signature of TFLite's org.tensorflow.lite.Delegate, taken from TFLite's public Java
// API docs (org.tensorflow:tensorflow-lite 2.16: "public interface Delegate", inheriting Closeable).
// Host tests only (tests/test_android_bridge.py): the app compiles against the real AAR.
package org.tensorflow.lite;

import java.io.Closeable;

public interface Delegate extends Closeable {
  /** The native TfLiteDelegate* that TFLite's JNI passes to ModifyGraphWithDelegate. */
  long getNativeHandle();

  /** Documented as not throwing checked exceptions (narrower than Closeable.close()). */
  @Override
  default void close() {}
}
