// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_*.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.widget;

import android.content.Context;
import android.view.ViewGroup;

public class LinearLayout extends ViewGroup {
  public static final int HORIZONTAL = 0;
  public static final int VERTICAL = 1;

  public LinearLayout(Context context) {
    super(context);
    throw new RuntimeException("compile-only signature");
  }

  public int getOrientation() {
    throw new RuntimeException("compile-only signature");
  }

  public void setOrientation(int orientation) {
    throw new RuntimeException("compile-only signature");
  }
}
