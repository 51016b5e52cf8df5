// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.content.res;

import java.io.IOException;
import java.io.InputStream;

public final class AssetManager implements AutoCloseable {
  private AssetManager() {
    throw new RuntimeException("compile-only signature");
  }

  public InputStream open(String fileName) throws IOException {
    throw new RuntimeException("compile-only signature");
  }

  public AssetFileDescriptor openFd(String fileName) throws IOException {
    throw new RuntimeException("compile-only signature");
  }

  @Override
  public void close() {
    throw new RuntimeException("compile-only signature");
  }
}
