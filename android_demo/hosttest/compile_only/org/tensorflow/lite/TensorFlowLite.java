// Compile-only signature of TFLite's org.tensorflow.lite.TensorFlowLite, taken from TFLite's public
// Java API docs ("public final class TensorFlowLite"; only the method the demo uses). Host tests
// only: the app compiles against the real AAR.
package org.tensorflow.lite;

public final class TensorFlowLite {
  private TensorFlowLite() {}

  /** The version of the native TFLite runtime, e.g. "2.16.1". */
  public static String runtimeVersion() {
    throw new UnsupportedOperationException("compile-only signature");
  }
}
