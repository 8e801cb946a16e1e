// The request fields Buzzer parses itself. The first byte picks the parser: Idempotency-Key,
// Prefer, Last-Event-ID, Accept, or a query string read as every route reads one. Each either
// answers within its contract or throws http_error; anything else is a finding.
#include "api/fields.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace buzzer;

void idempotency_key(std::string_view raw) {
    const auto key = api::parse_idempotency_key(raw);
    if (key.empty() || key.size() > 255) std::abort();
    for (char c : key)
        if (c <= 0x20 || c >= 0x7f) std::abort();
}

void prefer(std::string_view raw) {
    const std::vector<http::field> headers{{"Prefer", std::string(raw)}};
    if (const auto wait = api::preferred_wait(headers); wait && (*wait < 0 || *wait > 60))
        std::abort();
}

void last_event_id(std::string_view raw) {
    if (api::resume_after(raw, {}) < 0) std::abort();
    if (api::resume_after(std::nullopt, {{"last_event_id", std::string(raw)}}) !=
        api::resume_after(raw, {}))
        std::abort();
}

void query(std::string_view raw) {
    const auto params = api::parse_query(raw);
    try {
        const int wait = api::wait_parameter(params);
        if (wait < 0 || wait > 60) std::abort();
    } catch (const http::http_error&) {
    }
    try {
        const auto ids = api::stream_operations(params);
        if (ids.empty() || ids.size() > 100) std::abort();
    } catch (const http::http_error&) {
    }
    // A filter that parses comes back from its next-page link with `before` set.
    const auto filter = api::parse_list_filter(params);
    if (filter.limit < 1 || filter.limit > 500) std::abort();
    constexpr std::string_view last = "01JDB6Q6X8Z3M9J1V7QJ4T2N5K";
    const auto again = api::parse_list_filter(api::parse_query(api::next_page_query(filter, last)));
    if (again.statuses != filter.statuses || again.kind != filter.kind ||
        again.limit != filter.limit || again.before != last)
        std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view input(reinterpret_cast<const char*>(data + 1), size - 1);
    try {
        switch (data[0] % 5) {
            case 0:
                idempotency_key(input);
                break;
            case 1:
                prefer(input);
                break;
            case 2:
                last_event_id(input);
                break;
            case 3:
                api::accepts_event_stream(input);
                break;
            default:
                query(input);
        }
    } catch (const http::http_error& e) {
        if (e.status != 400) std::abort();
    }
    return 0;
}
