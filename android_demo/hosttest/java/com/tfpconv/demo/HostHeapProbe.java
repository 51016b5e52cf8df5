package com.tfpconv.demo;

/** Host-test-only: the C heap in use, from libtfpconv_heap_probe.so (hosttest/native). */
final class HostHeapProbe {
  private HostHeapProbe() {}

  static void load() {
    System.loadLibrary("tfpconv_heap_probe");
  }

  /** glibc's mallinfo2(): bytes in use in all arenas plus mmapped blocks. */
  static native long heapInUseBytes();
}
