// Internal to tests/support: driving a private io_context with a deadline.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>

namespace buzzer::test::detail {

using clock = std::chrono::steady_clock;

// Runs handlers on `ioc` until `done()` holds (true) or `deadline` passes (false).
// Pending operations are left pending on timeout, so a later call can pick them up.
template <class Done>
bool run_until(boost::asio::io_context& ioc, Done done, clock::time_point deadline) {
    while (!done()) {
        if (ioc.stopped()) ioc.restart();
        if (ioc.run_one_until(deadline) == 0) {
            // Nothing ran: either the deadline passed or there is no work left to wait for.
            if (done()) return true;
            if (clock::now() >= deadline || ioc.stopped()) return false;
        }
    }
    return true;
}

}  // namespace buzzer::test::detail
