// The HTTP/1.1 client of upstream calls (http:// only): one request per call, on an idle
// keep-alive connection of the client's pool when there is one. Beast stays behind this header.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "http/message.hpp"

namespace buzzer::http {

/// A call that failed before a complete answer came; `retryable` when another try may work
/// (connection trouble, a malformed or oversized answer). Cancellation and timeouts are not
/// this: they stay boost::system::system_error(operation_aborted).
class upstream_error : public std::runtime_error {
  public:
    upstream_error(const std::string& detail, bool retryable)
        : std::runtime_error(detail), retryable_(retryable) {}
    /// Whether another try may succeed.
    bool retryable() const noexcept { return retryable_; }

  private:
    bool retryable_;
};

/// One request to the upstream.
struct upstream_request {
    std::string method;
    std::string target;          ///< path and query
    std::vector<field> headers;  ///< sent as given after Host and User-Agent, which they replace
    std::string body;
};

/// A complete answer (interim 1xx answers are skipped).
struct upstream_answer {
    unsigned status = 0;
    std::string content_type;  ///< empty when none was sent
    std::string location;
    std::string body;
};

/// An upstream at `host`:`port`, with its pool of idle connections (shared by every copy of
/// the client, from any thread; a pooled connection is adopted by the executor of the call).
class upstream_client {
  public:
    /// `host` to resolve (a name or an address without brackets), `host_header` the Host
    /// field, `max_body` the largest answer body accepted.
    upstream_client(std::string host, std::string port, std::string host_header,
                    std::size_t max_body);
    ~upstream_client();

    /// Sends `req` and reads its answer, on the calling coroutine's executor. Throws
    /// upstream_error, or operation_aborted when cancelled.
    boost::asio::awaitable<upstream_answer> call(upstream_request req);

    /// The Host field requests carry.
    const std::string& host_header() const;

    /// The client's state: its address and pool.
    struct impl;

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace buzzer::http
