// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.content.res;

import java.io.Closeable;
import java.io.FileDescriptor;
import java.io.IOException;

public class AssetFileDescriptor implements Closeable {
  private AssetFileDescriptor() {
    throw new RuntimeException("compile-only signature");
  }

  public FileDescriptor getFileDescriptor() {
    throw new RuntimeException("compile-only signature");
  }

  public long getStartOffset() {
    throw new RuntimeException("compile-only signature");
  }

  public long getDeclaredLength() {
    throw new RuntimeException("compile-only signature");
  }

  @Override
  public void close() throws IOException {
    throw new RuntimeException("compile-only signature");
  }
}
