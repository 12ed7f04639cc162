// SPDX-License-Identifier: MIT
// Long-lived inference threads. LibTorch's OpenMP keeps one thread team per calling thread: running
// batches from whichever libuv pool thread is free builds several teams whose idle workers spin
// against each other (measured: 34 ms instead of 5 ms for MobileNet 256² on 2 cores). So every batch
// of an engine runs on the engine's own threads; the AsyncWorker just waits for it.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace facedet {

class Executor {
 public:
  explicit Executor(size_t threads) { grow(threads); }
  ~Executor() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& worker : workers_) worker.join();
  }
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Adds threads up to `threads` in all (call before any concurrent run).
  void grow(size_t threads) {
    while (workers_.size() < threads) workers_.emplace_back([this] { loop(); });
  }

  // Runs `task` on one of the executor's threads and waits for it; its exception is rethrown here.
  void run(std::function<void()> task) {
    std::packaged_task<void()> packaged(std::move(task));
    std::future<void> done = packaged.get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(packaged));
    }
    ready_.notify_one();
    done.get();
  }

 private:
  void loop() {
    for (;;) {
      std::packaged_task<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<void()>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace facedet
