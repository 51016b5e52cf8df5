// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py,
// tests/test_android_latency.py): the app compiles against the real android.jar. Like android.jar's
// own stubs, every body throws.
package android.util;

public class AndroidException extends Exception {
  private static final long serialVersionUID = 1L;

  public AndroidException() {
    throw new RuntimeException("compile-only signature");
  }
}
