// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.view;

import android.content.Context;

public abstract class ViewGroup extends View {
  public ViewGroup(Context context) {
    super(context);
    throw new RuntimeException("compile-only signature");
  }

  public void addView(View child) {
    throw new RuntimeException("compile-only signature");
  }

  public void removeAllViews() {
    throw new RuntimeException("compile-only signature");
  }
}
