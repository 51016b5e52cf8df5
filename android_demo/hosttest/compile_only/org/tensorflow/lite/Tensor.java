// Compile-only signature of TFLite's org.tensorflow.lite.Tensor, taken from TFLite's public Java
// API docs ("public interface Tensor"; only the methods the demo uses). Host tests only: the
// app compiles against the real AAR.
package org.tensorflow.lite;

public interface Tensor {
  DataType dataType();

  int numBytes();

  int numElements();

  int[] shape();
}
