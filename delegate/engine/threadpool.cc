// ThreadPool over pthreadpool (on every target: delegate/engine/cmake/pthreadpool.cmake); the caller
// works too.
#include <pthreadpool.h>

#include <algorithm>

#include "pattern_conv.h"

namespace tfpconv {

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

}  // namespace tfpconv
