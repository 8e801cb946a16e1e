#include "jobs/outcome_writer.hpp"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "core/log.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;

outcome_writer::outcome_writer(asio::io_context& io, strand_type strand, store::store& db,
                               done_fn done)
    : io_(io), strand_(strand), db_(db), done_(std::move(done)), retry_timer_(strand) {}

void outcome_writer::record(settled s) {
    hand_over(incoming_, std::move(s), io_.get_executor(), strand_, [this] { take_incoming(); });
}

void outcome_writer::take_incoming() {
    asio::co_spawn(strand_, write(incoming_.take()), core::log_failures("recording outcomes: "));
}

asio::awaitable<void> outcome_writer::write(std::vector<settled> batch) {
    std::vector<store::change> changes;
    changes.reserve(batch.size());
    for (const auto& s : batch)
        changes.push_back({s.op, s.events, s.result ? &*s.result : nullptr, s.attempt});
    auto written = co_await db_.record(changes);
    bool all_written = true;
    for (std::size_t i = 0; i < batch.size(); ++i) {
        auto& s = batch[i];
        ++s.tries;
        if (written[i].error) {
            all_written = false;
            if (abandoned_) {
                core::log(core::level::warn,
                          "job " + s.op.id + ": outcome not recorded before the shutdown");
                continue;
            }
            if (s.tries == 1)
                core::log_failure(written[i].error,
                                  "job " + s.op.id + ": cannot record the outcome, retrying: ");
            retry_.push_back(std::move(s));
            continue;
        }
        if (s.tries > 1)
            core::log(core::level::info, "job " + s.op.id + ": outcome recorded after " +
                                             std::to_string(s.tries) + " tries");
        if (!written[i].written)
            core::log(core::level::warn,
                      "job " + s.op.id + ": outcome dropped, the operation is no longer running");
        const bool stored = written[i].written;
        done_(std::move(s), stored);
    }
    // A round that went through brings the pause back to its start.
    if (all_written) pause_ = std::chrono::milliseconds(100);
    arm_retry();
}

void outcome_writer::arm_retry() {
    if (retry_armed_ || retry_.empty() || abandoned_) return;
    retry_armed_ = true;
    retry_timer_.expires_after(pause_);
    pause_ = std::min<std::chrono::milliseconds>(pause_ * 2, std::chrono::seconds(1));
    retry_timer_.async_wait([this](boost::system::error_code ec) {
        retry_armed_ = false;
        if (ec || abandoned_) return;
        auto batch = std::exchange(retry_, {});
        asio::co_spawn(strand_, write(std::move(batch)),
                       core::log_failures("recording outcomes: "));
    });
}

void outcome_writer::abandon() {
    abandoned_ = true;
    retry_timer_.cancel();
    for (const auto& s : retry_)
        core::log(core::level::warn,
                  "job " + s.op.id + ": outcome not recorded before the shutdown");
    retry_.clear();
}

}  // namespace buzzer::jobs
