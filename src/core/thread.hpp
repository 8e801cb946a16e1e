// The server's own threads: names (as `top -H`, `ps -L` and debuggers show them) and the
// priority of background work.
#pragma once

namespace buzzer::core {

/// Names the calling thread (Linux keeps the first 15 characters).
void name_this_thread(const char* name);

/// Lowers the calling thread's CPU priority by `nice` steps (Linux schedules threads one by
/// one): its work waits while the CPUs are busy with requests. Failing to is harmless.
void lower_this_thread_priority(int nice);

}  // namespace buzzer::core
