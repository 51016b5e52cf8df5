// ThreadPool over pthreadpool, or (TFPCONV_HAVE_PTHREADPOOL undefined, e.g. the aarch64 cross
// build) a small std::thread pool with the same semantics: the caller works too.
#include <algorithm>

#include "pattern_conv.h"

#if defined(TFPCONV_HAVE_PTHREADPOOL)
#include <pthreadpool.h>
#else
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>
#endif

namespace tfpconv {

#if defined(TFPCONV_HAVE_PTHREADPOOL)

struct ThreadPool::Impl {
  pthreadpool_t pool = nullptr;  // nullptr: run on the caller only
  int threads = 1;
};

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl) {
  impl_->threads = std::max(num_threads, 1);
  if (impl_->threads > 1) {
    impl_->pool = pthreadpool_create(static_cast<size_t>(impl_->threads));
    if (impl_->pool == nullptr) impl_->threads = 1;
  }
}

ThreadPool::~ThreadPool() {
  if (impl_->pool != nullptr) pthreadpool_destroy(impl_->pool);
}

int ThreadPool::num_threads() const { return impl_->threads; }

void ThreadPool::ParallelFor(size_t n, void (*task)(void* context, size_t i), void* context) {
  pthreadpool_parallelize_1d(impl_->pool, task, context, n, 0);
}

void ThreadPool::ReleaseWorkers() {
  if (impl_->pool == nullptr) return;
  // pthreadpool's workers spin for a while after a job, waiting for the next one; an empty job
  // with the yield flag sends them to sleep at once.
  const auto nothing = [](void*, size_t) {};
  pthreadpool_parallelize_1d(impl_->pool, nothing, nullptr, size_t(impl_->threads),
                             PTHREADPOOL_FLAG_YIELD_WORKERS);
}

#else  // std::thread fallback

struct ThreadPool::Impl {
  std::vector<std::thread> workers;
  std::mutex mu;
  std::condition_variable wake, done;
  // The current job; generation changes when a new one is posted.
  void (*task)(void*, size_t) = nullptr;
  void* context = nullptr;
  size_t n = 0;
  std::atomic<size_t> next{0};
  size_t generation = 0;
  int busy = 0;
  bool stop = false;
  int threads = 1;

  void Drain() {
    for (size_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) task(context, i);
  }

  void Worker() {
    size_t seen = 0;
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      wake.wait(lock, [&] { return stop || generation != seen; });
      if (stop) return;
      seen = generation;
      lock.unlock();
      Drain();
      lock.lock();
      if (--busy == 0) done.notify_all();
    }
  }
};

ThreadPool::ThreadPool(int num_threads) : impl_(new Impl) {
  impl_->threads = std::max(num_threads, 1);
  for (int t = 1; t < impl_->threads; ++t) impl_->workers.emplace_back([this] { impl_->Worker(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stop = true;
  }
  impl_->wake.notify_all();
  for (auto& w : impl_->workers) w.join();
}

int ThreadPool::num_threads() const { return impl_->threads; }

void ThreadPool::ParallelFor(size_t n, void (*task)(void* context, size_t i), void* context) {
  Impl& p = *impl_;
  if (p.workers.empty() || n <= 1) {
    for (size_t i = 0; i < n; ++i) task(context, i);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.task = task;
    p.context = context;
    p.n = n;
    p.next.store(0);
    p.busy = static_cast<int>(p.workers.size());
    ++p.generation;
  }
  p.wake.notify_all();
  p.Drain();
  std::unique_lock<std::mutex> lock(p.mu);
  p.done.wait(lock, [&] { return p.busy == 0; });
}

void ThreadPool::ReleaseWorkers() {}  // these workers never spin: they wait on a condition

#endif

}  // namespace tfpconv
