// A small synchronous HTTP/1.1 client for tests, and raw TCP helpers for malformed requests.
#pragma once

#include <boost/asio/ip/tcp.hpp>
#include <boost/json/value.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace buzzer::test {

// Header fields in order, as {name, value}; names may repeat.
using headers = std::vector<std::pair<std::string, std::string>>;

// True if two header names are equal ignoring ASCII case.
[[nodiscard]] bool iequals(std::string_view a, std::string_view b) noexcept;

// A complete HTTP response as received.
struct response {
    // The status code, e.g. 202.
    int status = 0;
    // Every header field in the order received.
    headers fields;
    // The body, decoded from chunked transfer encoding if needed.
    std::string body;

    // The field's value (case-insensitive name); repeated fields joined by ", "; "" if absent.
    [[nodiscard]] std::string header(std::string_view name) const;
    // True if the field is present (case-insensitive name).
    [[nodiscard]] bool has_header(std::string_view name) const;
    // Every value of a field, in order (case-insensitive name).
    [[nodiscard]] std::vector<std::string> header_values(std::string_view name) const;
    // The body parsed as JSON (parsed once and kept, so `r.json().at("links").as_array()` can
    // be iterated while `r` lives); throws std::runtime_error quoting the body if not JSON.
    [[nodiscard]] const boost::json::value& json() const;

  private:
    mutable std::optional<boost::json::value> json_;  // parse of json_source_
    mutable std::string json_source_;                 // the body json_ was parsed from
};

// A keep-alive HTTP/1.1 client to 127.0.0.1:port; every call blocks until done or timed out.
//
// A request on a kept-alive connection that the server has closed in the meantime is sent
// again once on a new connection. Failures and timeouts throw std::runtime_error.
class http_client {
  public:
    // A client for 127.0.0.1:`port` with a per-operation `timeout`; connects lazily.
    explicit http_client(unsigned short port,
                         std::chrono::milliseconds timeout = std::chrono::seconds(30));
    // Closes the connection.
    ~http_client();
    http_client(http_client&&) noexcept;
    http_client& operator=(http_client&&) noexcept;
    http_client(const http_client&) = delete;
    http_client& operator=(const http_client&) = delete;

    // Sends `method target` with `body` and `extra` fields (which replace same-named defaults:
    // Host, User-Agent; Content-Length is set unless `extra` has it or Transfer-Encoding).
    response request(std::string method, std::string target, std::string body = {},
                     headers extra = {});
    // GET `target`.
    response get(std::string target, headers extra = {});
    // POST `json_text` to `target` as application/json.
    response post_json(std::string target, std::string json_text, headers extra = {});
    // DELETE `target`.
    response del(std::string target, headers extra = {});

    // Changes the timeout for each later connect, write and read.
    void set_timeout(std::chrono::milliseconds timeout) noexcept;
    // Closes the current connection; the next request opens a new one.
    void close() noexcept;
    // How many TCP connections this client has opened (1 when keep-alive worked throughout).
    [[nodiscard]] std::size_t connections_opened() const noexcept;
    // The server port.
    [[nodiscard]] unsigned short port() const noexcept;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// A bare TCP connection to 127.0.0.1:port for malformed-request and slow-client tests.
//
// Reads that time out stay pending and their bytes show up in a later receive(); do not start
// your own operations on socket() while one may be pending.
class raw_connection {
  public:
    // Connects to 127.0.0.1:`port`; throws std::runtime_error on failure or after `timeout`.
    explicit raw_connection(unsigned short port,
                            std::chrono::milliseconds timeout = std::chrono::seconds(30));
    // Closes the socket.
    ~raw_connection();
    raw_connection(raw_connection&&) noexcept;
    raw_connection& operator=(raw_connection&&) noexcept;
    raw_connection(const raw_connection&) = delete;
    raw_connection& operator=(const raw_connection&) = delete;

    // Writes all of `bytes`; returns the error (e.g. broken_pipe, timed_out), or {} on success.
    boost::system::error_code send(std::string_view bytes,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(30));
    // Waits up to `timeout` for bytes and returns those that arrived ("" on timeout or close).
    std::string receive(std::chrono::milliseconds timeout);
    // Returns everything received until the peer closes or `timeout` passes.
    std::string receive_until_close(std::chrono::milliseconds timeout);
    // True once the peer has closed (or reset) the connection.
    [[nodiscard]] bool closed() const noexcept;
    // Half-closes the connection (shutdown for writing): the server sees end of stream.
    void shutdown_send() noexcept;
    // Closes the socket now.
    void close() noexcept;
    // The underlying connected socket.
    boost::asio::ip::tcp::socket& socket() noexcept;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// A sample of /metrics without labels (a gauge, a counter, a histogram's NAME_count), or -1
// when absent.
long long metric(http_client& c, std::string_view name);

// Opens a new connection to 127.0.0.1:`port` (for slow-client tests).
raw_connection raw_connect(unsigned short port);

// Opens a new connection, writes `bytes` and returns everything received until the server
// closes the connection or `timeout` passes.
std::string raw_exchange(unsigned short port, std::string bytes,
                         std::chrono::milliseconds timeout = std::chrono::seconds(10));

}  // namespace buzzer::test
