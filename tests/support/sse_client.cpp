// The test SSE client: Beast reads the HTTP framing, a WHATWG line parser reads the events.
#include "support/sse_client.hpp"

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <stdexcept>

#include "support/io_detail.hpp"

namespace buzzer::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

struct sse_stream::impl {
    asio::io_context ioc;
    tcp::socket socket{ioc};
    beast::flat_buffer buffer;
    http::response_parser<http::buffer_body> parser;
    std::array<char, 8192> chunk{};
    response head;

    bool reading = false;         // a body read is pending (it survives next_event timeouts)
    bool transport_done = false;  // the response is complete or the connection is gone
    bool is_stream = false;       // 200 with Content-Type text/event-stream
    bool ended = false;

    std::string all;   // body text received so far
    std::string text;  // body text not parsed into lines yet
    bool bom_checked = false;

    // The event being built, per the WHATWG "interpret an event stream" algorithm.
    std::string data_buffer;
    std::string type_buffer;
    std::optional<std::string> block_id;
    std::optional<std::uint64_t> block_retry;
    std::string last_id_buffer;
    std::string last_event_id;
    std::optional<std::uint64_t> retry;
    std::size_t comments = 0;
    std::string last_comment;

    // Starts one read of body bytes into `chunk`; the handler moves them into `text`.
    void start_read() {
        reading = true;
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        http::async_read_some(socket, buffer, parser, [this](error_code ec, std::size_t) {
            reading = false;
            auto const got = chunk.size() - parser.get().body().size;
            text.append(chunk.data(), got);
            all.append(chunk.data(), got);
            if (ec == http::error::need_buffer) ec = {};
            // Any error (eof, reset, partial chunk) ends the stream as far as a client cares.
            if (ec || parser.is_done()) transport_done = true;
        });
    }

    // Reads until the response body is complete or the deadline; false on timeout.
    bool read_all(detail::clock::time_point deadline) {
        while (!transport_done) {
            if (!reading) start_read();
            if (!detail::run_until(
                    ioc, [this] { return !reading; }, deadline))
                return false;
        }
        return true;
    }

    // Handles one line; returns an event when the line was blank and the block had data.
    std::optional<sse_event> process_line(std::string_view line) {
        if (line.empty()) return dispatch();
        if (line.front() == ':') {
            ++comments;
            line.remove_prefix(1);
            if (!line.empty() && line.front() == ' ') line.remove_prefix(1);
            last_comment = std::string(line);
            return std::nullopt;
        }
        auto const colon = line.find(':');
        std::string_view field = line.substr(0, colon);
        std::string_view value;
        if (colon != std::string_view::npos) {
            value = line.substr(colon + 1);
            if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        }
        if (field == "event") {
            type_buffer = std::string(value);
        } else if (field == "data") {
            data_buffer.append(value);
            data_buffer.push_back('\n');
        } else if (field == "id") {
            if (value.find('\0') == std::string_view::npos) {
                last_id_buffer = std::string(value);
                block_id = last_id_buffer;
            }
        } else if (field == "retry") {
            bool const digits = !value.empty() && value.size() <= 18 &&
                                value.find_first_not_of("0123456789") == std::string_view::npos;
            if (digits) {
                retry = std::stoull(std::string(value));
                block_retry = retry;
            }
        }
        return std::nullopt;  // other fields are ignored
    }

    std::optional<sse_event> dispatch() {
        last_event_id = last_id_buffer;
        std::optional<sse_event> out;
        if (!data_buffer.empty()) {
            sse_event event;
            event.id = std::move(block_id);
            event.type = type_buffer.empty() ? "message" : type_buffer;
            data_buffer.pop_back();  // the newline after the last data line
            event.data = std::move(data_buffer);
            event.retry = block_retry;
            out = std::move(event);
        }
        data_buffer.clear();
        type_buffer.clear();
        block_id.reset();
        block_retry.reset();
        return out;
    }

    // Parses whole lines out of `text` until an event is dispatched or more bytes are needed.
    std::optional<sse_event> parse_buffered() {
        if (!bom_checked) {
            // A leading UTF-8 byte order mark is dropped; wait while `text` could still be one.
            constexpr std::string_view bom = "\xEF\xBB\xBF";
            if (text.size() < bom.size() && bom.starts_with(text) && !transport_done) {
                return std::nullopt;
            }
            if (text.starts_with(bom)) text.erase(0, bom.size());
            bom_checked = true;
        }
        std::size_t pos = 0;
        std::optional<sse_event> event;
        while (!event) {
            auto const eol = text.find_first_of("\r\n", pos);
            if (eol == std::string::npos) break;
            std::size_t next = eol + 1;
            if (text[eol] == '\r') {
                // A CR at the end of what we have may be the first half of a CRLF.
                if (eol + 1 == text.size() && !transport_done) break;
                if (eol + 1 < text.size() && text[eol + 1] == '\n') next = eol + 2;
            }
            event = process_line(std::string_view(text).substr(pos, eol - pos));
            pos = next;
        }
        text.erase(0, pos);
        return event;
    }

    void close() noexcept {
        error_code ignored;
        socket.shutdown(tcp::socket::shutdown_both, ignored);
        socket.close(ignored);
        // Let a pending read finish (aborted) so its handler never runs against a dead stream.
        if (reading) {
            detail::run_until(
                ioc, [this] { return !reading; }, detail::clock::now() + std::chrono::seconds(1));
        }
        transport_done = true;
    }
};

sse_stream::sse_stream(unsigned short port, std::string target,
                       std::optional<std::string> last_event_id, headers extra,
                       std::chrono::milliseconds head_timeout)
    : impl_(std::make_unique<impl>()) {
    auto& s = *impl_;
    auto const deadline = detail::clock::now() + head_timeout;
    auto const fail = [&](const std::string& what) {
        s.close();
        throw std::runtime_error("sse_stream: GET " + target + ": " + what);
    };

    std::optional<error_code> result;
    s.socket.async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), port),
                           [&](error_code ec) { result = ec; });
    if (!detail::run_until(
            s.ioc, [&] { return result.has_value(); }, deadline)) {
        fail("connect timed out");
    }
    if (*result)
        fail("cannot connect to 127.0.0.1:" + std::to_string(port) + ": " + result->message());
    s.socket.set_option(tcp::no_delay(true));

    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, "127.0.0.1:" + std::to_string(port));
    req.set(http::field::user_agent, "buzzer-test-sse");
    req.set(http::field::accept, "text/event-stream");
    req.set(http::field::cache_control, "no-cache");
    if (last_event_id) req.set("Last-Event-ID", *last_event_id);
    for (auto const& field : extra) req.erase(field.first);
    for (auto const& [name, value] : extra) req.insert(name, value);

    result.reset();
    http::async_write(s.socket, req, [&](error_code ec, std::size_t) { result = ec; });
    if (!detail::run_until(
            s.ioc, [&] { return result.has_value(); }, deadline)) {
        fail("write timed out");
    }
    if (*result) fail("write failed: " + result->message());

    // An event stream has no natural size limit.
    s.parser.body_limit(boost::none);
    result.reset();
    http::async_read_header(s.socket, s.buffer, s.parser,
                            [&](error_code ec, std::size_t) { result = ec; });
    if (!detail::run_until(
            s.ioc, [&] { return result.has_value(); }, deadline)) {
        fail("no response head in time");
    }
    if (*result) fail("reading the response head failed: " + result->message());

    auto const& msg = s.parser.get();
    s.head.status = static_cast<int>(msg.result_int());
    for (auto const& field : msg) {
        s.head.fields.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    if (s.parser.is_done()) s.transport_done = true;
    auto const type = s.head.header("Content-Type");
    s.is_stream = s.head.status == 200 && type.find("text/event-stream") != std::string::npos;
    if (!s.is_stream) {
        // Not a stream (404 problem, 204, ...): take the whole body and end here.
        if (!s.read_all(deadline)) fail("the non-stream response body did not end in time");
        s.head.body = std::exchange(s.text, {});
        s.close();
        s.ended = true;
    }
}

sse_stream::~sse_stream() {
    if (impl_) impl_->close();
}

sse_stream::sse_stream(sse_stream&&) noexcept = default;
sse_stream& sse_stream::operator=(sse_stream&&) noexcept = default;

const response& sse_stream::head() const noexcept { return impl_->head; }

int sse_stream::status() const noexcept { return impl_->head.status; }

std::string sse_stream::header(std::string_view name) const { return impl_->head.header(name); }

bool sse_stream::has_header(std::string_view name) const { return impl_->head.has_header(name); }

std::optional<sse_event> sse_stream::next_event(std::chrono::milliseconds timeout) {
    auto& s = *impl_;
    if (s.ended) return std::nullopt;
    auto const deadline = detail::clock::now() + timeout;
    for (;;) {
        if (auto event = s.parse_buffered()) return event;
        if (s.transport_done) {
            // Per the spec, an unterminated last event is discarded at end of stream.
            s.ended = true;
            return std::nullopt;
        }
        if (!s.reading) s.start_read();
        if (!detail::run_until(
                s.ioc, [&s] { return !s.reading; }, deadline))
            return std::nullopt;
    }
}

std::vector<sse_event> sse_stream::next_events(std::size_t n, std::chrono::milliseconds timeout) {
    std::vector<sse_event> out;
    while (out.size() < n)
        if (auto e = next_event(timeout))
            out.push_back(std::move(*e));
        else
            break;
    return out;
}

std::vector<sse_event> sse_stream::read_until_end(std::chrono::milliseconds timeout) {
    auto const deadline = detail::clock::now() + timeout;
    std::vector<sse_event> events;
    while (!ended()) {
        auto const left =
            std::chrono::ceil<std::chrono::milliseconds>(deadline - detail::clock::now());
        if (left.count() <= 0) break;
        if (auto event = next_event(left)) events.push_back(std::move(*event));
    }
    return events;
}

bool sse_stream::ended() const noexcept { return impl_->ended; }

std::size_t sse_stream::comments() const noexcept { return impl_->comments; }

const std::string& sse_stream::last_comment() const noexcept { return impl_->last_comment; }

std::optional<std::uint64_t> sse_stream::retry() const noexcept { return impl_->retry; }

const std::string& sse_stream::last_event_id() const noexcept { return impl_->last_event_id; }

const std::string& sse_stream::raw_text() const noexcept { return impl_->all; }

void sse_stream::close() noexcept {
    impl_->close();
    impl_->ended = true;
}

std::vector<std::string> types_of(const std::vector<sse_event>& events) {
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.type);
    return out;
}

std::int64_t id_number(const sse_event& event) {
    if (!event.id) throw std::runtime_error("an event of type " + event.type + " has no id");
    std::int64_t n = 0;
    const auto& id = *event.id;
    auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), n);
    if (ec != std::errc() || end != id.data() + id.size())
        throw std::runtime_error("event id " + id + " is not a number");
    return n;
}

}  // namespace buzzer::test
