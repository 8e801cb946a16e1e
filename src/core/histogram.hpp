// A latency histogram with fixed buckets, updated lock-free from any thread and rendered in
// the Prometheus text format.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace buzzer::core {

class histogram {
  public:
    /// Upper bounds of the buckets, in seconds (a last bucket, +Inf, follows).
    static constexpr std::array<double, 14> bounds = {
        0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};

    void observe(std::chrono::steady_clock::duration d);

    /// Appends `NAME_bucket{le="…"}` (cumulative), `NAME_sum` and `NAME_count` with HELP/TYPE.
    void render(std::string& out, std::string_view name, std::string_view help) const;

  private:
    std::array<std::atomic<std::uint64_t>, bounds.size() + 1> counts_{};
    std::atomic<std::uint64_t> sum_ns_{0};
};

}  // namespace buzzer::core
