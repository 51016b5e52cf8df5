package com.tfpconv.demo;

/** Host-test-only: the C heap in use, from libtfpconv_heap_probe.so (hosttest/native). */
final class HostHeapProbe {
  private HostHeapProbe() {}

  static void load() {
    System.loadLibrary("tfpconv_heap_probe");
  }

  /** glibc's mallinfo2(): bytes in use in all arenas plus mmapped blocks. */
  static native long heapInUseBytes();

  /** Rounds of a leak check; a leak must show in every one (see smallestGrowth). */
  static final int LEAK_ROUNDS = 3;

  /**
   * The smallest C heap growth over {@link #LEAK_ROUNDS} runs of {@code work}, each measured
   * between {@code System.gc()} calls and printed as "round N: {@code what}, ...". The JVM's own
   * threads (JIT compiler, GC) malloc and free while we measure, so one round can catch a transient
   * megabyte; a leak shows in every round, so the smallest growth is what counts.
   */
  static long smallestGrowth(String what, Runnable work) {
    long smallest = Long.MAX_VALUE;
    for (int round = 1; round <= LEAK_ROUNDS; round++) {
      System.gc();
      long before = heapInUseBytes();
      work.run();
      System.gc();
      long growth = heapInUseBytes() - before;
      System.out.println(
          "  round " + round + ": " + what + ", C heap grew by " + growth + " bytes");
      smallest = Math.min(smallest, growth);
    }
    return smallest;
  }
}
