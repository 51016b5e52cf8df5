// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.content;

import android.content.res.AssetManager;

public abstract class Context {
  public Context() {
    throw new RuntimeException("compile-only signature");
  }

  public abstract AssetManager getAssets();

  public final String getString(int resId) {
    throw new RuntimeException("compile-only signature");
  }

  public final String getString(int resId, Object... formatArgs) {
    throw new RuntimeException("compile-only signature");
  }
}
