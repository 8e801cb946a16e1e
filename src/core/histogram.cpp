#include "core/histogram.hpp"

#include <algorithm>
#include <cstdio>

namespace buzzer::core {

void histogram::observe(std::chrono::steady_clock::duration d) {
    const double s = std::chrono::duration<double>(d).count();
    const auto i = static_cast<std::size_t>(std::lower_bound(bounds.begin(), bounds.end(), s) -
                                            bounds.begin());
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    sum_ns_.fetch_add(static_cast<std::uint64_t>(std::max<std::int64_t>(ns, 0)),
                      std::memory_order_relaxed);
}

void histogram::render(std::string& out, std::string_view name, std::string_view help) const {
    char line[160];
    auto append = [&out, &line](int n) {
        if (n > 0) out.append(line, std::min(static_cast<std::size_t>(n), sizeof line - 1));
    };
    const std::string n(name);
    out += "# HELP " + n + ' ' + std::string(help) + "\n# TYPE " + n + " histogram\n";
    std::uint64_t total = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
        total += counts_[i].load(std::memory_order_relaxed);
        if (i < bounds.size())
            append(std::snprintf(line, sizeof line, "%s_bucket{le=\"%g\"} %llu\n", n.c_str(),
                                 bounds[i], static_cast<unsigned long long>(total)));
        else
            append(std::snprintf(line, sizeof line, "%s_bucket{le=\"+Inf\"} %llu\n", n.c_str(),
                                 static_cast<unsigned long long>(total)));
    }
    append(std::snprintf(line, sizeof line, "%s_sum %.9g\n%s_count %llu\n", n.c_str(),
                         static_cast<double>(sum_ns_.load(std::memory_order_relaxed)) / 1e9,
                         n.c_str(), static_cast<unsigned long long>(total)));
}

}  // namespace buzzer::core
