// Compile-only signature of TFLite's org.tensorflow.lite.Interpreter, taken from TFLite's public
// Java API docs ("public final class Interpreter", an InterpreterApi; Interpreter.Options is a
// subclass of InterpreterApi.Options whose setters return Interpreter.Options). Only the members
// the demo uses. Host tests only: the app compiles against the real AAR. Every body throws:
// nothing here runs a model.
package org.tensorflow.lite;

import java.nio.ByteBuffer;
import java.util.Map;

public final class Interpreter implements InterpreterApi {
  public static class Options extends InterpreterApi.Options {
    public Options() {}

    @Override
    public Options setNumThreads(int numThreads) {
      throw new UnsupportedOperationException("compile-only signature");
    }

    @Override
    public Options addDelegate(Delegate delegate) {
      throw new UnsupportedOperationException("compile-only signature");
    }
  }

  public Interpreter(ByteBuffer byteBuffer, Options options) {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public void run(Object input, Object output) {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public void runForMultipleInputsOutputs(Object[] inputs, Map<Integer, Object> outputs) {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public int getInputTensorCount() {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public int getOutputTensorCount() {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public Tensor getInputTensor(int inputIndex) {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public Tensor getOutputTensor(int outputIndex) {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public Long getLastNativeInferenceDurationNanoseconds() {
    throw new UnsupportedOperationException("compile-only signature");
  }

  @Override
  public void close() {
    throw new UnsupportedOperationException("compile-only signature");
  }
}
