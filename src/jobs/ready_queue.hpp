// The scheduler's ready queue: pending operations by kind, in the order they run (priority,
// then age), with delayed retries held until they are due. Plain data: no I/O, no clock of
// its own, no threads; the scheduler owns it on its strand.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>

#include "core/operation.hpp"

namespace buzzer::jobs {

/// Pending operations waiting for a slot.
class ready_queue {
  public:
    /// Queues `q` unless its id is queued already; it waits until `q.run_after` when that is
    /// later than `now`. Returns whether it was added.
    bool add(const core::queued& q, core::millis now);

    /// Takes `id` out, ready or delayed; returns the entry when it was queued.
    std::optional<core::queued> remove(std::string_view id);

    /// Makes the delayed entries due at `now` ready.
    void release_due(core::millis now);

    /// When the first delayed entry is due; none while nothing is delayed.
    std::optional<core::millis> next_due() const;

    /// The entry that runs next among the ready ones of the kinds `may_run(kind)` accepts: the
    /// highest priority, then the oldest (by order, then id); null when there is none. Valid
    /// until the queue changes.
    template <class MayRun>
    const core::queued* peek(MayRun&& may_run) const;

    /// Takes out the entry that peek() returned.
    core::queued pop(const core::queued* next);

    /// Whether `id` is queued, ready or delayed.
    bool contains(std::string_view id) const { return index_.count(std::string(id)) > 0; }

    /// Entries queued, ready and delayed.
    std::size_t size() const { return index_.size(); }

  private:
    struct entry {
        int priority;
        std::int64_t order;
        std::string id;
        bool operator<(const entry& o) const {
            if (priority != o.priority) return priority > o.priority;
            if (order != o.order) return order < o.order;
            return id < o.id;
        }
    };
    struct info {
        core::queued q;
        bool delayed;
    };
    static entry entry_of(const core::queued& q) { return {q.priority, q.order, q.id}; }

    std::map<std::string, std::set<entry>, std::less<>> ready_;  ///< by kind
    std::multimap<core::millis, std::string> delayed_;           ///< by due time
    std::unordered_map<std::string, info> index_;                ///< by id
};

template <class MayRun>
const core::queued* ready_queue::peek(MayRun&& may_run) const {
    const entry* best = nullptr;
    for (const auto& [kind, queue] : ready_) {
        if (queue.empty() || !may_run(std::string_view(kind))) continue;
        if (!best || *queue.begin() < *best) best = &*queue.begin();
    }
    return best ? &index_.at(best->id).q : nullptr;
}

}  // namespace buzzer::jobs
