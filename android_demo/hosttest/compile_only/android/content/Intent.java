// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_*.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.content;

public class Intent {
  public Intent() {
    throw new RuntimeException("compile-only signature");
  }

  public int getIntExtra(String name, int defaultValue) {
    throw new RuntimeException("compile-only signature");
  }

  public String getStringExtra(String name) {
    throw new RuntimeException("compile-only signature");
  }
}
