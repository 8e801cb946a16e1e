// A job as the scheduler hands it to a kind's function, recording what the function reports.
#pragma once

#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <buzzer/server.hpp>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace buzzer::test {

/// Records progress reports and set_result calls; can be told to fail progress reports.
class fake_job final : public job {
  public:
    /// A job with `input`, at attempt `attempt`, of kind `kind`.
    explicit fake_job(boost::json::value input = nullptr, int attempt = 1,
                      std::string kind = "thumbnail")
        : kind_(std::move(kind)),
          input_(std::move(input)),
          input_text_(boost::json::serialize(input_)),
          attempt_(attempt) {}

    const std::string& id() const override { return id_; }
    const std::string& kind() const override { return kind_; }
    int attempt() const override { return attempt_; }
    const boost::json::value& input() const override { return input_; }
    std::string_view input_text() const override { return input_text_; }

    boost::asio::awaitable<void> progress(int percent, std::string message) override {
        reports.emplace_back(percent, std::move(message));
        if (on_progress) on_progress();
        if (progress_fails) throw std::runtime_error("database is locked");
        co_return;
    }

    void set_result(std::string body, std::string media_type) override {
        raw_body = std::move(body);
        raw_media_type = std::move(media_type);
        ++results;
    }

    std::vector<std::pair<int, std::string>> reports;  ///< every progress report
    std::optional<std::string> raw_body;               ///< the last set_result body
    std::string raw_media_type;                        ///< the last set_result media type
    int results = 0;                                   ///< set_result calls
    std::function<void()> on_progress;                 ///< called on each report
    bool progress_fails = false;                       ///< make progress() throw

  private:
    std::string id_ = "01JDB6Q6X8Z3M9J1V7QJ4T2N5K";
    std::string kind_;
    boost::json::value input_;
    std::string input_text_;
    int attempt_;
};

}  // namespace buzzer::test
