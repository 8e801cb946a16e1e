// What a request says beside its body: the query string and the headers Buzzer reads itself
// (Idempotency-Key, Prefer, Last-Event-ID, Accept). Plain functions of text, so that they can
// be tested and fuzzed without a server; each malformed input is an http_error (400) or a
// documented fallback, never anything else.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/operation.hpp"
#include "http/message.hpp"

namespace buzzer::api {

/// Decoded query parameters, in order.
using query_params = std::vector<std::pair<std::string, std::string>>;

/// Decodes a query string (percent escapes, '+' for a space); throws 400 when it does not
/// parse.
query_params parse_query(std::string_view query);

/// Parses a decimal integer; nullopt unless the whole text is one.
std::optional<long long> parse_integer(std::string_view text);

/// A `wait` in seconds (query or `Prefer`): an integer of any size, clamped to 0..60;
/// nullopt when it is not an integer.
std::optional<int> parse_wait(std::string_view text);

/// The `wait` query parameter of a status request (the last one counts); 0 without one,
/// 400 when it is not an integer.
int wait_parameter(const query_params& query);

/// An `Idempotency-Key`: 1..255 visible ASCII characters, bare or as a structured-field
/// string; throws 400 otherwise.
std::string parse_idempotency_key(std::string_view raw);

/// `Prefer: wait=N` in any of the fields and lists given; nullopt when none asks to wait.
std::optional<int> preferred_wait(const std::vector<http::field>& headers);

/// Where an event stream resumes: the `Last-Event-ID` header, else the `last_event_id` query
/// parameter. Anything but a non-negative integer replays from the start (0); an integer too
/// large for 64 bits is past every event.
std::int64_t resume_after(std::optional<std::string_view> last_event_id, const query_params& query);

/// The operations of a `GET /events` stream: its `operation` parameters without repeats;
/// 400 with none or with more than 100.
std::vector<std::string> stream_operations(const query_params& query);

/// Whether an Accept header asks for an event stream: it names text/event-stream with a
/// q above 0, and not below the q it gives JSON.
bool accepts_event_stream(std::string_view accept);

/// The filters of `GET /operations`.
struct list_filter {
    std::vector<core::status> statuses;
    std::optional<std::string> kind;
    std::optional<std::string> before;  ///< ids strictly older than this one
    int limit = 50;
};

/// Reads the list parameters (`status` repeated, `kind`, `limit` 1..500, `before` an id);
/// others are ignored; throws 400 on a bad value.
list_filter parse_list_filter(const query_params& query);

/// The query of the page after the one that ended with `last_id`: the same filters, `before`
/// it. parse_list_filter reads it back as `filter` with `before = last_id`.
std::string next_page_query(const list_filter& filter, std::string_view last_id);

}  // namespace buzzer::api
