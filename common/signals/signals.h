#pragma once

// Signal handling without async-signal-safety traps: the signals are blocked in every thread
// and one watcher thread takes them with sigtimedwait and calls a plain function.

#include <atomic>
#include <functional>
#include <thread>

namespace onedomain {

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread. Call first thing in main, before
// any thread starts, so every thread inherits the mask.
void BlockProcessSignals();

// Owns a thread that delivers SIGTERM, SIGINT and SIGHUP to `handler` (on that thread).
class SignalWatcher {
 public:
  using Handler = std::function<void(int signo)>;

  explicit SignalWatcher(Handler handler);
  ~SignalWatcher();  // Stops and joins the thread.

  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

 private:
  void Run();

  Handler handler_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace onedomain
