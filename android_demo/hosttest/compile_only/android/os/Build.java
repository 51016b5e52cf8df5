// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py,
// tests/test_android_latency.py): the app compiles against the real android.jar. Like android.jar's
// own stubs, every body throws.
package android.os;

public class Build {
  public Build() {
    throw new RuntimeException("compile-only signature");
  }

  // Not compile-time constants (as in android.jar), so nothing is inlined from here.
  public static final String MANUFACTURER = stub();
  public static final String MODEL = stub();
  public static final String HARDWARE = stub();
  /** Added in API 31. */
  public static final String SOC_MANUFACTURER = stub();
  /** Added in API 31. */
  public static final String SOC_MODEL = stub();
  public static final String[] SUPPORTED_ABIS = new String[0];

  public static class VERSION {
    public VERSION() {
      throw new RuntimeException("compile-only signature");
    }

    public static final int SDK_INT = Integer.parseInt("0");
  }

  private static String stub() {
    return null;
  }
}
