// One entry of the durable event log: what the store keeps, replays and hands to the hub.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace buzzer::core {

/// A state change or progress report of one operation, as its event stream carries it.
struct event {
    std::int64_t seq = 0;  ///< global id, increasing, never reused; 0 until stored
    std::string operation_id;
    std::string type;  ///< pending, running, progress, completed, failed or canceled
    std::string data;  ///< JSON text (a state event: the representation without its links)
    /// When its transaction committed (for events handed to the hub).
    std::chrono::steady_clock::time_point committed{};
};

}  // namespace buzzer::core
