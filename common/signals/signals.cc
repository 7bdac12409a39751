#include "common/signals/signals.h"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <ctime>

namespace onedomain {
namespace {

sigset_t ProcessSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  return set;
}

}  // namespace

void BlockProcessSignals() {
  const sigset_t set = ProcessSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  // A peer that resets mid-write must yield EPIPE, not kill the process.
  signal(SIGPIPE, SIG_IGN);
}

SignalWatcher::SignalWatcher(Handler handler)
    : handler_(std::move(handler)), thread_([this] { Run(); }) {}

SignalWatcher::~SignalWatcher() {
  stop_.store(true);
  thread_.join();
}

void SignalWatcher::Run() {
  const sigset_t set = ProcessSignals();
  // Poll the stop flag every 100 ms; signals themselves are taken at once.
  const timespec tick{0, 100 * 1000 * 1000};
  while (!stop_.load()) {
    const int signo = sigtimedwait(&set, nullptr, &tick);
    if (signo > 0) handler_(signo);
  }
}

}  // namespace onedomain
