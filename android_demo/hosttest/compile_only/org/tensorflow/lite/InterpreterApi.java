// Compile-only signature of TFLite's org.tensorflow.lite.InterpreterApi, taken from TFLite's public
// Java API docs ("public interface InterpreterApi extends AutoCloseable"; the methods the demo
// uses). Host tests only: the app compiles against the real AAR. Every body throws: nothing here
// runs a model.
package org.tensorflow.lite;

import java.util.Map;

public interface InterpreterApi extends AutoCloseable {
  /** InterpreterApi.Options: its setters return InterpreterApi.Options. */
  class Options {
    public Options() {}

    public Options setNumThreads(int numThreads) {
      throw new UnsupportedOperationException("compile-only signature");
    }

    public Options addDelegate(Delegate delegate) {
      throw new UnsupportedOperationException("compile-only signature");
    }
  }

  void run(Object input, Object output);

  void runForMultipleInputsOutputs(Object[] inputs, Map<Integer, Object> outputs);

  int getInputTensorCount();

  int getOutputTensorCount();

  Tensor getInputTensor(int inputIndex);

  Tensor getOutputTensor(int outputIndex);

  /** Boxed: the docs declare {@code Long}. */
  Long getLastNativeInferenceDurationNanoseconds();

  /** Declared without checked exceptions. */
  @Override
  void close();
}
