// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members the app's Kotlin uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_*.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.view;

import android.content.Context;

public class View {
  public interface OnClickListener {
    void onClick(View v);
  }

  public View(Context context) {
    throw new RuntimeException("compile-only signature");
  }

  public final <T extends View> T findViewById(int id) {
    throw new RuntimeException("compile-only signature");
  }

  public void setOnClickListener(OnClickListener l) {
    throw new RuntimeException("compile-only signature");
  }

  public boolean isEnabled() {
    throw new RuntimeException("compile-only signature");
  }

  public void setEnabled(boolean enabled) {
    throw new RuntimeException("compile-only signature");
  }

  public void setPadding(int left, int top, int right, int bottom) {
    throw new RuntimeException("compile-only signature");
  }
}
