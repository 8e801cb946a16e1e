// Polling with a deadline: the one place in the tests where sleeping is allowed.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace buzzer::test {

// Polls `pred` every `step` until it returns true (then true) or `deadline` passes (then false).
template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds deadline,
                std::chrono::milliseconds step = std::chrono::milliseconds(20)) {
    using clock = std::chrono::steady_clock;
    auto const end = clock::now() + deadline;
    for (;;) {
        if (pred()) return true;
        auto const now = clock::now();
        if (now >= end) return false;
        // Never oversleep the deadline; the condition gets one last look after it.
        std::this_thread::sleep_for(std::min<clock::duration>(
            step, std::chrono::ceil<std::chrono::milliseconds>(end - now)));
    }
}

}  // namespace buzzer::test
