// A Server-Sent Events client for tests: one stream per connection, parsed per WHATWG.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "support/http_client.hpp"

namespace buzzer::test {

// One dispatched event of a text/event-stream.
struct sse_event {
    // The value of this event's `id` field, if it had one.
    std::optional<std::string> id;
    // The `event` field, or "message" if absent.
    std::string type = "message";
    // The `data` lines joined by "\n" (without the final newline).
    std::string data;
    // The `retry` field given in this event's block, if any.
    std::optional<std::uint64_t> retry;
};

// A GET with `Accept: text/event-stream` on its own connection, read event by event.
//
// The constructor reads the response head; a response that is not a 200 text/event-stream is
// read whole (see head().body) and the stream counts as ended. Chunked and close-delimited
// bodies are both handled.
class sse_stream {
  public:
    // Opens `target` on 127.0.0.1:`port`, sending `Last-Event-ID` if given and `extra` fields;
    // throws std::runtime_error if the response head does not arrive within `head_timeout`.
    sse_stream(unsigned short port, std::string target,
               std::optional<std::string> last_event_id = std::nullopt, headers extra = {},
               std::chrono::milliseconds head_timeout = std::chrono::seconds(30));
    // Closes the connection.
    ~sse_stream();
    sse_stream(sse_stream&&) noexcept;
    sse_stream& operator=(sse_stream&&) noexcept;
    sse_stream(const sse_stream&) = delete;
    sse_stream& operator=(const sse_stream&) = delete;

    // The response head: status and fields; body only when the response was not a stream.
    [[nodiscard]] const response& head() const noexcept;
    // The response status code.
    [[nodiscard]] int status() const noexcept;
    // A response header (case-insensitive), "" if absent.
    [[nodiscard]] std::string header(std::string_view name) const;
    // True if the response has that header (case-insensitive).
    [[nodiscard]] bool has_header(std::string_view name) const;

    // The next event within `timeout`; std::nullopt on timeout or end of stream (see ended()).
    std::optional<sse_event> next_event(std::chrono::milliseconds timeout);
    // The next `n` events, or fewer if the stream ends or one of them takes over `timeout`.
    std::vector<sse_event> next_events(std::size_t n, std::chrono::milliseconds timeout);
    // Events until the server ends the stream or `timeout` passes (check ended() to know which).
    std::vector<sse_event> read_until_end(std::chrono::milliseconds timeout);
    // True once the server ended the response (or closed) and every whole event was returned.
    [[nodiscard]] bool ended() const noexcept;

    // How many comment lines (starting with ':') were seen so far.
    [[nodiscard]] std::size_t comments() const noexcept;
    // The text of the last comment line, without ':' and one leading space.
    [[nodiscard]] const std::string& last_comment() const noexcept;
    // The last valid `retry` value seen, in milliseconds.
    [[nodiscard]] std::optional<std::uint64_t> retry() const noexcept;
    // The stream's last event ID (what a browser would send as Last-Event-ID on reconnect).
    [[nodiscard]] const std::string& last_event_id() const noexcept;
    // Everything received so far after the head, as sent (after de-chunking).
    [[nodiscard]] const std::string& raw_text() const noexcept;

    // Closes the connection now (the server should notice the client went away).
    void close() noexcept;

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

// The types of `events`, in order ("pending", "running", ..., "completed").
std::vector<std::string> types_of(const std::vector<sse_event>& events);

// The event's id as a number (Buzzer's ids are decimal sequence numbers); throws
// std::runtime_error if it has none or it is not a number.
std::int64_t id_number(const sse_event& event);

}  // namespace buzzer::test
