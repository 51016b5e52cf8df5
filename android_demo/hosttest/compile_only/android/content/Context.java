// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_*.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.content;

import android.content.pm.PackageManager;
import android.content.res.AssetManager;
import java.io.File;

public abstract class Context {
  public Context() {
    throw new RuntimeException("compile-only signature");
  }

  public abstract AssetManager getAssets();

  public abstract File getExternalFilesDir(String type);

  public abstract PackageManager getPackageManager();

  public abstract String getPackageName();

  public final String getString(int resId) {
    throw new RuntimeException("compile-only signature");
  }

  public final String getString(int resId, Object... formatArgs) {
    throw new RuntimeException("compile-only signature");
  }
}
