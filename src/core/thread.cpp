#include "core/thread.hpp"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>

namespace buzzer::core {

void name_this_thread(const char* name) { ::pthread_setname_np(::pthread_self(), name); }

void lower_this_thread_priority(int nice) {
    const auto tid = static_cast<id_t>(::gettid());
    errno = 0;
    const int current = ::getpriority(PRIO_PROCESS, tid);
    if (errno == 0) ::setpriority(PRIO_PROCESS, tid, current + nice);
}

}  // namespace buzzer::core
