// Compile-only signature of TFLite's org.tensorflow.lite.DataType, taken from TFLite's public Java
// API docs ("public final enum DataType"). Host tests only: the app compiles against the real AAR.
package org.tensorflow.lite;

public enum DataType {
  FLOAT32,
  INT32,
  UINT8,
  INT64,
  STRING,
  BOOL,
  INT16,
  INT8
}
