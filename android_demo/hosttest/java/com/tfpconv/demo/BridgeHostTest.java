package com.tfpconv.demo;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;

/**
 * Host test of the app's JNI bridge on a desktop JVM: drives the real {@link NativeBridge} (the
 * app's own Java file) and libtfpconv_jni.so (the app's own tfpconv_jni.cc, linked against the
 * real x86-64 libtfpconv_delegate.so) through create / claimed nodes / delete.
 *
 * <p>Lives in the bridge's package so it can call the package-private native methods directly.
 * Prints one line per check, "PASS name" or "FAIL name: why", and exits non-zero if any failed.
 * Run by tests/test_android_bridge.py (with -Xcheck:jni).
 *
 * <p>Arguments: [leak cycles] (default 20000).
 */
public final class BridgeHostTest {
  private interface Check {
    void run() throws Exception;
  }

  private static final List<String> failures = new ArrayList<>();
  private static int passed;

  private BridgeHostTest() {}

  public static void main(String[] args) {
    final int leakCycles = args.length > 0 ? Integer.parseInt(args[0]) : 20000;

    check("load", NativeBridge::load);
    check("create_default", BridgeHostTest::createDefault);
    check("create_two_threads", BridgeHostTest::createTwoThreads);
    check("create_each_isa", BridgeHostTest::createEachIsa);
    check("handles_distinct", BridgeHostTest::handlesDistinct);
    check("invalid_arguments_rejected", BridgeHostTest::invalidArgumentsRejected);
    check("invalid_num_threads_native", BridgeHostTest::invalidNumThreadsNative);
    check("null_handle", BridgeHostTest::nullHandle);
    check("create_delete_100", BridgeHostTest::createDelete100);
    check("no_leak", () -> noLeak(leakCycles));

    System.out.println("host bridge checks: " + passed + " ok, " + failures.size() + " failing");
    System.exit(failures.isEmpty() ? 0 : 1);
  }

  private static void check(String name, Check body) {
    try {
      body.run();
      passed++;
      System.out.println("PASS " + name);
    } catch (Throwable e) {
      failures.add(name);
      System.out.println("FAIL " + name + ": " + e);
    }
    System.out.flush();
  }

  private static void require(boolean condition, String message) {
    if (!condition) {
      throw new AssertionError(message);
    }
  }

  private static void expectIllegalArgument(String what, Runnable body) {
    try {
      body.run();
    } catch (IllegalArgumentException expected) {
      return;
    }
    throw new AssertionError(what + ": no IllegalArgumentException");
  }

  /** A fresh delegate is the delegate's own object: it answers the claimed-nodes query (0 nodes). */
  private static void requireFreshDelegate(long handle, String what) {
    require(handle != 0L, what + ": handle is 0");
    int[] nodes = NativeBridge.nativeClaimedNodes(handle);
    require(nodes != null, what + ": claimed nodes is null for a live handle");
    require(nodes.length == 0, what + ": a fresh delegate claims " + nodes.length + " nodes");
  }

  private static void createDefault() {
    long handle = NativeBridge.create(1, NativeBridge.LOG_WARNING, null);
    try {
      requireFreshDelegate(handle, "create(1)");
      require(NativeBridge.claimedNodes(handle).length == 0, "claimedNodes wrapper");
    } finally {
      NativeBridge.delete(handle);
    }
  }

  private static void createTwoThreads() {
    long handle = NativeBridge.create(2, NativeBridge.LOG_WARNING, null);
    try {
      requireFreshDelegate(handle, "create(2)");
    } finally {
      NativeBridge.delete(handle);
    }
  }

  private static void createEachIsa() {
    // A set this CPU lacks (neon on x86-64) falls back to the best available one, with a warning.
    String[] names = {"auto", "scalar", "avx2", "avx512", "neon"};
    for (String isa : names) {
      long handle = NativeBridge.create(2, NativeBridge.LOG_ERROR, isa);
      try {
        requireFreshDelegate(handle, "create(isa=" + isa + ")");
      } finally {
        NativeBridge.delete(handle);
      }
    }
  }

  private static void handlesDistinct() {
    long first = NativeBridge.create(1, NativeBridge.LOG_WARNING, null);
    long second = NativeBridge.create(2, NativeBridge.LOG_WARNING, null);
    try {
      require(first != 0L && second != 0L, "zero handle");
      require(first != second, "two live delegates share the handle " + first);
    } finally {
      NativeBridge.delete(second);
      NativeBridge.delete(first);
    }
  }

  private static void invalidArgumentsRejected() {
    int[] badThreads = {0, -1, -7, Integer.MIN_VALUE, NativeBridge.MAX_THREADS + 1, Integer.MAX_VALUE};
    for (int threads : badThreads) {
      expectIllegalArgument(
          "create(numThreads=" + threads + ")",
          () -> NativeBridge.create(threads, NativeBridge.LOG_WARNING, null));
    }
    expectIllegalArgument("create(logLevel=4)", () -> NativeBridge.create(1, 4, null));
    expectIllegalArgument("create(logLevel=-1)", () -> NativeBridge.create(1, -1, null));
    expectIllegalArgument(
        "create(isa=sse)", () -> NativeBridge.create(1, NativeBridge.LOG_WARNING, "sse"));
    expectIllegalArgument("claimedNodes(0)", () -> NativeBridge.claimedNodes(0L));
    // The limits themselves are accepted.
    long max = NativeBridge.create(NativeBridge.MAX_THREADS, NativeBridge.LOG_ERROR, null);
    try {
      requireFreshDelegate(max, "create(MAX_THREADS)");
    } finally {
      NativeBridge.delete(max);
    }
  }

  private static void invalidNumThreadsNative() {
    // Below the Java checks: the delegate's documented rule (< 1 means 1), and log levels out of
    // range clamped by the bridge. No crash, a usable delegate.
    int[][] cases = {
      {0, NativeBridge.LOG_WARNING}, {-5, NativeBridge.LOG_WARNING},
      {Integer.MIN_VALUE, NativeBridge.LOG_WARNING}, {1, 99}, {1, -4}, {3, Integer.MIN_VALUE},
    };
    for (int[] c : cases) {
      long handle = NativeBridge.nativeCreate(c[0], c[1], null);
      try {
        requireFreshDelegate(handle, "nativeCreate(" + c[0] + ", " + c[1] + ")");
      } finally {
        NativeBridge.nativeDelete(handle);
      }
    }
  }

  private static void nullHandle() {
    NativeBridge.nativeDelete(0L);
    NativeBridge.delete(0L);
    require(NativeBridge.nativeClaimedNodes(0L) == null, "nativeClaimedNodes(0) is not null");
  }

  private static void createDelete100() {
    for (int i = 0; i < 100; i++) {
      long handle = NativeBridge.create(2, NativeBridge.LOG_WARNING, null);
      require(handle != 0L, "cycle " + i + ": handle is 0");
      NativeBridge.delete(handle);
    }
  }

  private static long statusKb(String field) throws IOException {
    for (String line : Files.readAllLines(Paths.get("/proc/self/status"), StandardCharsets.UTF_8)) {
      if (line.startsWith(field + ":")) {
        String[] parts = line.substring(field.length() + 1).trim().split("\\s+");
        return Long.parseLong(parts[0]);
      }
    }
    throw new IOException("no " + field + " in /proc/self/status");
  }

  private static void cycles(int count) {
    for (int i = 0; i < count; i++) {
      // Alternate the paths: with and without an isa string (GetStringUTFChars / Release).
      long handle = NativeBridge.create(2, NativeBridge.LOG_ERROR, (i & 1) == 0 ? null : "scalar");
      if (handle == 0L) {
        throw new AssertionError("cycle " + i + ": handle is 0");
      }
      NativeBridge.delete(handle);
    }
  }

  private static void noLeak(int count) throws IOException {
    HostHeapProbe.load();
    // Warm up: lazy JVM and libc state, including what the measurements themselves allocate once.
    cycles(500);
    statusKb("VmRSS");
    statusKb("Threads");
    HostHeapProbe.heapInUseBytes();
    long threadsBefore = statusKb("Threads");
    long rssBefore = statusKb("VmRSS");
    long heapGrowth =
        HostHeapProbe.smallestGrowth(count + " create/delete cycles", () -> cycles(count));
    long rssAfter = statusKb("VmRSS");
    long threadsAfter = statusKb("Threads");
    System.out.println("  VmRSS " + rssBefore + " -> " + rssAfter + " kB, threads " + threadsBefore
        + " -> " + threadsAfter + " over " + HostHeapProbe.LEAK_ROUNDS + " rounds");
    // A leak is at least one malloc chunk (>= 32 bytes) every other cycle; the noise is far below.
    long heapLimit = Math.max(64L * 1024L, 8L * count);
    require(heapGrowth < heapLimit, "C heap grew by at least " + heapGrowth + " bytes in each of "
        + HostHeapProbe.LEAK_ROUNDS + " rounds of " + count + " cycles (limit " + heapLimit + ")");
    require(rssAfter - rssBefore < 32L * 1024L, "VmRSS grew by " + (rssAfter - rssBefore)
        + " kB over " + HostHeapProbe.LEAK_ROUNDS * count + " cycles");
    require(threadsAfter <= threadsBefore + 4,
        "threads grew from " + threadsBefore + " to " + threadsAfter);
  }
}
