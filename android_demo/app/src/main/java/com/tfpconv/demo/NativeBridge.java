package com.tfpconv.demo;

/**
 * The JNI surface of the tfpconv delegate: {@code libtfpconv_jni.so} (app/src/main/cpp) wraps the C
 * API of {@code delegate/include/tfpconv/delegate.h} and hands the native {@code TfLiteDelegate*}
 * to Java as a {@code long} handle.
 *
 * <p>This class is Java on purpose: the host test (tests/test_android_bridge.py) compiles this very
 * file with the JDK and calls its native methods on a desktop JVM, against the same
 * {@code tfpconv_jni.cc}, so the JNI symbol names and signatures checked there are the app's own.
 * {@link TfpconvDelegate} (Kotlin) is the TFLite {@code Delegate} built on it.
 *
 * <p>Handles are owned by the caller: every non-zero handle from {@link #create} must be passed to
 * {@link #delete} exactly once, after every interpreter that used it has been closed.
 */
public final class NativeBridge {
  /** Name of the native library (libtfpconv_jni.so). */
  public static final String LIBRARY = "tfpconv_jni";

  /**
   * Log levels of the delegate (TfpconvLogLevel); on Android its messages go to logcat under the
   * tag "tfpconv" (elsewhere to the process's stderr).
   */
  public static final int LOG_ERROR = 0;
  public static final int LOG_WARNING = 1;
  public static final int LOG_INFO = 2;
  public static final int LOG_VERBOSE = 3;

  /** Largest thread count {@link #create} accepts (phones have at most a dozen cores). */
  public static final int MAX_THREADS = 64;

  /** Instruction-set names the delegate knows (null means "auto" too). */
  private static final String[] ISA_NAMES = {"auto", "neon", "avx512", "avx2", "scalar"};

  private static boolean loaded;

  private NativeBridge() {}

  /** Loads libtfpconv_jni.so once (it carries the delegate, linked in statically on Android). */
  public static synchronized void load() {
    if (!loaded) {
      System.loadLibrary(LIBRARY);
      loaded = true;
    }
  }

  /**
   * Creates a delegate after checking the arguments.
   *
   * @param numThreads threads for the pattern convolutions, 1..{@link #MAX_THREADS}
   * @param logLevel {@link #LOG_ERROR} .. {@link #LOG_VERBOSE}
   * @param isa null or "auto" for the best the CPU has, else "neon", "avx512", "avx2", "scalar"
   * @return a non-zero handle (a {@code TfLiteDelegate*})
   * @throws IllegalArgumentException for an argument out of range
   * @throws IllegalStateException if the native delegate could not be created
   */
  public static long create(int numThreads, int logLevel, String isa) {
    if (numThreads < 1 || numThreads > MAX_THREADS) {
      throw new IllegalArgumentException(
          "numThreads must be in 1.." + MAX_THREADS + ", got " + numThreads);
    }
    if (logLevel < LOG_ERROR || logLevel > LOG_VERBOSE) {
      throw new IllegalArgumentException(
          "logLevel must be in " + LOG_ERROR + ".." + LOG_VERBOSE + ", got " + logLevel);
    }
    if (isa != null && !isKnownIsa(isa)) {
      throw new IllegalArgumentException(
          "isa must be null, auto, neon, avx512, avx2 or scalar, got '" + isa + "'");
    }
    load();
    long handle = nativeCreate(numThreads, logLevel, isa);
    if (handle == 0L) {
      throw new IllegalStateException("TfpconvDelegateCreate failed (out of memory?)");
    }
    return handle;
  }

  /** Deletes a delegate from {@link #create}; 0 is ignored. */
  public static void delete(long handle) {
    if (handle != 0L) {
      nativeDelete(handle);
    }
  }

  /**
   * The CONV_2D node indices the delegate claimed the last time it was applied to a model (an
   * empty array before that, or when it claimed nothing).
   */
  public static int[] claimedNodes(long handle) {
    if (handle == 0L) {
      throw new IllegalArgumentException("claimedNodes of a null delegate handle");
    }
    int[] nodes = nativeClaimedNodes(handle);
    return nodes != null ? nodes : new int[0];
  }

  private static boolean isKnownIsa(String isa) {
    for (String name : ISA_NAMES) {
      if (name.equals(isa)) {
        return true;
      }
    }
    return false;
  }

  // --- native methods (tfpconv_jni.cc). Package-private: use the checked wrappers above. ---------

  /**
   * TfpconvDelegateCreate with these options; returns the TfLiteDelegate* or 0. The delegate itself
   * treats numThreads below 1 as 1; a logLevel outside 0..3 is clamped; isa may be null.
   */
  static native long nativeCreate(int numThreads, int logLevel, String isa);

  /** TfpconvDelegateDelete; 0 is ignored. */
  static native void nativeDelete(long handle);

  /** TfpconvDelegateClaimedNodes as an array; null for a 0 handle. */
  static native int[] nativeClaimedNodes(long handle);
}
