// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.widget;

import android.content.Context;
import android.graphics.Bitmap;
import android.view.View;

public class ImageView extends View {
  public ImageView(Context context) {
    super(context);
    throw new RuntimeException("compile-only signature");
  }

  public void setImageBitmap(Bitmap bm) {
    throw new RuntimeException("compile-only signature");
  }
}
