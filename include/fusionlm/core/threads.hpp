#pragma once
// A fixed pool of worker threads owned by a model (or the caller). No global state: every
// parallel op takes the pool it runs on, so one thread count governs GEMM, GEMV and attention.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cpu.hpp"
#include "error.hpp"

namespace fusionlm {

class ThreadPool {
public:
    // threads <= 0 means all hardware threads.
    explicit ThreadPool(int threads = 0) {
        int n = threads > 0 ? threads : int(std::max(1u, std::thread::hardware_concurrency()));
        workers_.reserve(std::size_t(n - 1));
        for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
    }
    ThreadPool(const ThreadPool&) = delete;
    ThreadPool& operator=(const ThreadPool&) = delete;
    ~ThreadPool() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_start_.notify_all();
        for (auto& t : workers_) t.join();
    }

    int size() const { return int(workers_.size()) + 1; }

    // The instruction set the matrix kernels run on this pool use: best_isa() (f32 compute) unless set,
    // e.g. to fastest_isa() for bf16 dot products, or lower to compare paths.
    Isa isa() const { return isa_; }
    void set_isa(Isa isa) {
        if (!isa_supported(isa))
            throw UnsupportedError("ThreadPool: instruction set " + std::string(isa_name(isa)) +
                                   " is not supported by this CPU");
        isa_ = isa;
    }

    // Runs fn(thread_index) on every thread of the pool (the caller is thread 0) and waits.
    void run(const std::function<void(int)>& fn) {
        if (workers_.empty()) { fn(0); return; }
        {
            std::lock_guard lock(mu_);
            job_ = &fn;
            error_ = nullptr;
            pending_.store(int(workers_.size()), std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);
        }
        cv_start_.notify_all();
        std::exception_ptr mine;
        try { fn(0); } catch (...) { mine = std::current_exception(); }
        const auto done = [this] { return pending_.load(std::memory_order_acquire) == 0; };
        if (!spin_until(done)) {
            std::unique_lock lock(mu_);
            cv_done_.wait(lock, done);
        }
        if (mine) std::rethrow_exception(mine);
        if (error_) std::rethrow_exception(error_);
    }

    // Splits [0, n) into one contiguous chunk per thread, chunk sizes multiples of `align`
    // (except the last), and calls fn(begin, end) on each non-empty chunk.
    template <class Fn>
    void parallel_for(std::size_t n, std::size_t align, Fn&& fn) {
        const std::size_t threads = std::size_t(size());
        if (n == 0) return;
        align = std::max<std::size_t>(align, 1);
        const std::size_t blocks = (n + align - 1) / align;
        if (threads == 1 || blocks == 1) { fn(std::size_t(0), n); return; }
        run([&](int t) {
            const std::size_t b0 = blocks * std::size_t(t) / threads;
            const std::size_t b1 = blocks * std::size_t(t + 1) / threads;
            const std::size_t begin = std::min(n, b0 * align), end = std::min(n, b1 * align);
            if (begin < end) fn(begin, end);
        });
    }

private:
    // A model runs hundreds of parallel ops back to back; between them each thread busy-waits this long
    // before it sleeps, because waking a sleeping thread (on a virtual machine, a halted virtual CPU)
    // can take longer than a whole decode-step matrix product.
    static constexpr std::chrono::microseconds kSpin{500};

    template <class Ready>
    static bool spin_until(const Ready& ready) {
        const auto deadline = std::chrono::steady_clock::now() + kSpin;
        for (;;) {
            for (int i = 0; i < 64; ++i) {
                if (ready()) return true;
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
            if (std::chrono::steady_clock::now() >= deadline) return false;
        }
    }

    void worker_loop(int index) {
        unsigned long seen = 0;
        for (;;) {
            const auto started = [&] { return generation_.load(std::memory_order_acquire) != seen; };
            if (!spin_until(started)) {
                std::unique_lock lock(mu_);
                cv_start_.wait(lock, [&] { return stop_ || started(); });
                if (stop_) return;
            }
            seen = generation_.load(std::memory_order_acquire);
            std::exception_ptr err;
            try { (*job_)(index); } catch (...) { err = std::current_exception(); }
            if (err) {
                std::lock_guard lock(mu_);
                if (!error_) error_ = err;
            }
            if (pending_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                std::lock_guard lock(mu_);
                cv_done_.notify_one();
            }
        }
    }

    std::vector<std::thread> workers_;
    std::mutex mu_;
    std::condition_variable cv_start_, cv_done_;
    const std::function<void(int)>* job_ = nullptr;
    std::atomic<int> pending_{0};
    std::atomic<unsigned long> generation_{0};
    bool stop_ = false;
    std::exception_ptr error_;
    Isa isa_ = best_isa();
};

}  // namespace fusionlm
