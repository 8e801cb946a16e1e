// The HTTP/1.1 front: an acceptor and one coroutine per connection. Connections are spread
// over I/O contexts that one thread each runs, so a connection's handlers need no strand.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "http/router.hpp"

namespace buzzer::http {

/// Counters of the HTTP front, for /metrics.
struct server_stats {
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::uint64_t> responses_2xx{0};
    std::atomic<std::uint64_t> responses_3xx{0};
    std::atomic<std::uint64_t> responses_4xx{0};
    std::atomic<std::uint64_t> responses_5xx{0};
    std::atomic<std::int64_t> connections{0};
    std::atomic<std::uint64_t> connections_refused{0};  ///< closed at max_connections
    std::atomic<std::int64_t> streams{0};
    std::atomic<std::uint64_t> tls_handshakes_failed{0};  ///< closed before a request
};

/// Limits and timeouts of connections (buzzer::options has their documented defaults).
struct server_settings {
    std::size_t header_limit = 16 * 1024;              ///< a request's header block, bytes
    std::size_t body_limit = 1 << 20;                  ///< a request's body, bytes
    std::chrono::milliseconds header_timeout{10'000};  ///< to receive a request's headers
    std::chrono::milliseconds idle_timeout{60'000};    ///< between requests; for a body
    std::chrono::milliseconds write_timeout{30'000};   ///< a response, or one stream write
    std::size_t max_connections = 20'000;  ///< open at once; more are closed when accepted
};

/// Accepts connections and serves them with a router.
class server {
  public:
    /// `io` runs the acceptor; connections go to `connection_contexts` in turn, each of which
    /// must be run by exactly one thread.
    server(boost::asio::io_context& io, std::vector<boost::asio::io_context*> connection_contexts,
           const router& routes, server_settings settings);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    /// Binds `host:port` (SO_REUSEADDR) and returns the bound address as "HOST:PORT".
    std::string listen(const std::string& host_port);

    /// Makes the listener speak HTTPS only, with the certificate chain of `cert_file` (PEM,
    /// the leaf first) and the key of `key_file`. Call before start(); a later call reloads
    /// them: new connections use the new ones, open connections keep theirs. Throws
    /// std::runtime_error naming the file and why when either does not load or the key does
    /// not match, and then what was in use stays.
    void use_tls(const std::string& cert_file, const std::string& key_file);

    /// Whether the listener speaks HTTPS.
    bool secure() const;

    /// Starts accepting.
    void start();

    /// Stops accepting; idle connections close now, busy ones after their current response.
    void stop();

    /// Closes every remaining connection at once.
    void close_all();

    /// Open connections.
    std::int64_t connections() const;

    /// Request and response counters.
    server_stats& stats();

  private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace buzzer::http
