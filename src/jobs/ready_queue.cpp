#include "jobs/ready_queue.hpp"

namespace buzzer::jobs {

bool ready_queue::add(const core::queued& q, core::millis now) {
    const bool delayed = q.run_after > now;
    if (!index_.emplace(q.id, info{q, delayed}).second) return false;
    if (delayed)
        delayed_.emplace(q.run_after, q.id);
    else
        ready_[q.kind].insert(entry_of(q));
    return true;
}

std::optional<core::queued> ready_queue::remove(std::string_view id) {
    auto it = index_.find(std::string(id));
    if (it == index_.end()) return std::nullopt;
    const auto& [q, delayed] = it->second;
    if (delayed) {
        for (auto d = delayed_.lower_bound(q.run_after);
             d != delayed_.end() && d->first == q.run_after; ++d) {
            if (d->second == q.id) {
                delayed_.erase(d);
                break;
            }
        }
    } else if (auto r = ready_.find(q.kind); r != ready_.end()) {
        r->second.erase(entry_of(q));
    }
    std::optional<core::queued> out(std::move(it->second.q));
    index_.erase(it);
    return out;
}

void ready_queue::release_due(core::millis now) {
    while (!delayed_.empty() && delayed_.begin()->first <= now) {
        auto it = index_.find(delayed_.begin()->second);
        delayed_.erase(delayed_.begin());
        if (it == index_.end()) continue;
        it->second.delayed = false;
        ready_[it->second.q.kind].insert(entry_of(it->second.q));
    }
}

std::optional<core::millis> ready_queue::next_due() const {
    if (delayed_.empty()) return std::nullopt;
    return delayed_.begin()->first;
}

core::queued ready_queue::pop(const core::queued* next) {
    auto it = index_.find(next->id);
    core::queued q = std::move(it->second.q);
    index_.erase(it);
    ready_[q.kind].erase(entry_of(q));
    return q;
}

}  // namespace buzzer::jobs
