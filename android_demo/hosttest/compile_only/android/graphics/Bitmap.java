// Compile-only signature of the Android SDK class named below, taken from its public API reference
// (android-34); only the members MainActivity.kt uses, without the SDK's nullability annotations
// (which Kotlin reads as warnings only). Host tests only (tests/test_android_bridge.py): the app
// compiles against the real android.jar. Like android.jar's own stubs, every body throws.
package android.graphics;

public final class Bitmap {
  private Bitmap() {
    throw new RuntimeException("compile-only signature");
  }

  public static Bitmap createScaledBitmap(Bitmap src, int dstWidth, int dstHeight, boolean filter) {
    throw new RuntimeException("compile-only signature");
  }

  public int getWidth() {
    throw new RuntimeException("compile-only signature");
  }

  public int getHeight() {
    throw new RuntimeException("compile-only signature");
  }

  public void getPixels(
      int[] pixels, int offset, int stride, int x, int y, int width, int height) {
    throw new RuntimeException("compile-only signature");
  }
}
