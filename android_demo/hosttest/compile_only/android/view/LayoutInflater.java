// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.view;

public abstract class LayoutInflater {
  protected LayoutInflater() {
    throw new RuntimeException("compile-only signature");
  }

  public View inflate(int resource, ViewGroup root, boolean attachToRoot) {
    throw new RuntimeException("compile-only signature");
  }
}
