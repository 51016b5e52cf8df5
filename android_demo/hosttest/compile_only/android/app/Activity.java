// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_*.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.app;

import android.content.Context;
import android.content.Intent;
import android.content.pm.PackageManager;
import android.content.res.AssetManager;
import android.os.Bundle;
import android.view.LayoutInflater;
import android.view.View;
import java.io.File;

/** The real class extends Context through ContextThemeWrapper and ContextWrapper. */
public class Activity extends Context {
  public Activity() {
    throw new RuntimeException("compile-only signature");
  }

  protected void onCreate(Bundle savedInstanceState) {
    throw new RuntimeException("compile-only signature");
  }

  protected void onDestroy() {
    throw new RuntimeException("compile-only signature");
  }

  public void setContentView(int layoutResID) {
    throw new RuntimeException("compile-only signature");
  }

  public void setContentView(View view) {
    throw new RuntimeException("compile-only signature");
  }

  public <T extends View> T findViewById(int id) {
    throw new RuntimeException("compile-only signature");
  }

  public Intent getIntent() {
    throw new RuntimeException("compile-only signature");
  }

  @Override
  public AssetManager getAssets() {
    throw new RuntimeException("compile-only signature");
  }

  /** From ContextWrapper in the real class hierarchy. */
  @Override
  public File getExternalFilesDir(String type) {
    throw new RuntimeException("compile-only signature");
  }

  /** From ContextWrapper in the real class hierarchy. */
  @Override
  public PackageManager getPackageManager() {
    throw new RuntimeException("compile-only signature");
  }

  /** From ContextWrapper in the real class hierarchy. */
  @Override
  public String getPackageName() {
    throw new RuntimeException("compile-only signature");
  }

  public LayoutInflater getLayoutInflater() {
    throw new RuntimeException("compile-only signature");
  }

  public final void runOnUiThread(Runnable action) {
    throw new RuntimeException("compile-only signature");
  }

  public boolean isDestroyed() {
    throw new RuntimeException("compile-only signature");
  }
}
