// The test HTTP client over Beast, and raw TCP connections.
#include "support/http_client.hpp"

#include <poll.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/json/parse.hpp>
#include <optional>
#include <stdexcept>

#include "support/io_detail.hpp"

namespace buzzer::test {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// Big enough for any body a test produces, small enough to catch a runaway response.
constexpr std::uint64_t max_body = 64 * 1024 * 1024;

char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

bool method_has_body(std::string_view method) {
    return method == "POST" || method == "PUT" || method == "PATCH";
}

}  // namespace

bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

// ---------------------------------------------------------------------------------------------
// response

std::string response::header(std::string_view name) const {
    std::string out;
    for (auto const& [key, value] : fields) {
        if (!iequals(key, name)) continue;
        if (!out.empty()) out += ", ";
        out += value;
    }
    return out;
}

bool response::has_header(std::string_view name) const {
    for (auto const& field : fields) {
        if (iequals(field.first, name)) return true;
    }
    return false;
}

std::vector<std::string> response::header_values(std::string_view name) const {
    std::vector<std::string> out;
    for (auto const& [key, value] : fields) {
        if (iequals(key, name)) out.push_back(value);
    }
    return out;
}

const boost::json::value& response::json() const {
    if (json_ && json_source_ == body) return *json_;
    error_code ec;
    auto value = boost::json::parse(body, ec);
    if (ec) {
        constexpr std::size_t quoted = 4000;
        throw std::runtime_error("response body is not JSON (" + ec.message() + "; status " +
                                 std::to_string(status) + "): " + body.substr(0, quoted) +
                                 (body.size() > quoted ? "..." : ""));
    }
    json_ = std::move(value);
    json_source_ = body;
    return *json_;
}

// ---------------------------------------------------------------------------------------------
// http_client

struct http_client::impl {
    unsigned short port;
    std::chrono::milliseconds timeout;
    asio::io_context ioc;
    beast::tcp_stream stream{ioc};
    beast::flat_buffer buffer;
    bool connected = false;
    std::size_t opened = 0;

    impl(unsigned short p, std::chrono::milliseconds t) : port(p), timeout(t) {}

    // Runs the io_context until the operation started before it completes.
    void run() {
        ioc.restart();
        ioc.run();
    }

    void close() noexcept {
        error_code ignored;
        stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream.socket().close(ignored);
        buffer.clear();
        connected = false;
    }

    // True if an idle kept-alive connection has been closed by the server (or has unexpected
    // bytes waiting, such as a 408 before closing): it must not carry the next request.
    bool stale() {
        if (buffer.size() != 0) return true;
        pollfd pfd{stream.socket().native_handle(), POLLIN | POLLRDHUP, 0};
        return ::poll(&pfd, 1, 0) != 0;
    }

    void connect(const std::string& what) {
        error_code result;
        stream.expires_after(timeout);
        stream.async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), port),
                             [&](error_code ec) { result = ec; });
        run();
        if (result) {
            close();
            throw std::runtime_error("http_client: " + what + ": cannot connect to 127.0.0.1:" +
                                     std::to_string(port) + ": " + result.message());
        }
        stream.socket().set_option(tcp::no_delay(true));
        connected = true;
        ++opened;
    }

    response exchange(const http::request<http::string_body>& req, const std::string& what) {
        for (int attempt = 0;; ++attempt) {
            bool reused = connected;
            if (connected && stale()) {
                close();
                reused = false;
            }
            if (!connected) connect(what);

            error_code write_ec;
            stream.expires_after(timeout);
            http::async_write(stream, req, [&](error_code ec, std::size_t) { write_ec = ec; });
            run();
            if (write_ec) {
                close();
                if (reused && attempt == 0) continue;  // the server dropped the idle connection
                throw std::runtime_error("http_client: " + what +
                                         ": write failed: " + write_ec.message());
            }

            http::response_parser<http::string_body> parser;
            parser.body_limit(max_body);
            if (req.method() == http::verb::head) parser.skip(true);
            error_code read_ec;
            stream.expires_after(timeout);
            http::async_read(stream, buffer, parser,
                             [&](error_code ec, std::size_t) { read_ec = ec; });
            run();
            if (read_ec) {
                bool const nothing = !parser.got_some();
                close();
                if (reused && attempt == 0 && nothing && read_ec != beast::error::timeout) {
                    continue;  // closed between requests: the request was never processed
                }
                throw std::runtime_error("http_client: " + what +
                                         ": read failed: " + read_ec.message());
            }

            auto& msg = parser.get();
            response out;
            out.status = static_cast<int>(msg.result_int());
            for (auto const& field : msg) {
                out.fields.emplace_back(std::string(field.name_string()),
                                        std::string(field.value()));
            }
            out.body = std::move(msg.body());
            if (!msg.keep_alive()) close();
            return out;
        }
    }
};

http_client::http_client(unsigned short port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>(port, timeout)) {}

http_client::~http_client() {
    if (impl_) impl_->close();
}

http_client::http_client(http_client&&) noexcept = default;
http_client& http_client::operator=(http_client&&) noexcept = default;

response http_client::request(std::string method, std::string target, std::string body,
                              headers extra) {
    http::request<http::string_body> req;
    req.version(11);
    if (auto const verb = http::string_to_verb(method); verb != http::verb::unknown) {
        req.method(verb);
    } else {
        req.method_string(method);
    }
    req.target(target);
    req.set(http::field::host, "127.0.0.1:" + std::to_string(impl_->port));
    req.set(http::field::user_agent, "buzzer-test");
    // Caller fields replace the defaults of the same name; repeats among them are kept.
    bool framed = false;
    for (auto const& field : extra) req.erase(field.first);
    for (auto const& [name, value] : extra) {
        req.insert(name, value);
        framed = framed || iequals(name, "content-length") || iequals(name, "transfer-encoding");
    }
    req.body() = std::move(body);
    if (!framed && (!req.body().empty() || method_has_body(method))) {
        req.content_length(req.body().size());
    }
    return impl_->exchange(req, method + " " + target);
}

response http_client::get(std::string target, headers extra) {
    return request("GET", std::move(target), {}, std::move(extra));
}

response http_client::post_json(std::string target, std::string json_text, headers extra) {
    bool typed = false;
    for (auto const& field : extra) typed = typed || iequals(field.first, "content-type");
    if (!typed) extra.emplace_back("Content-Type", "application/json");
    return request("POST", std::move(target), std::move(json_text), std::move(extra));
}

response http_client::del(std::string target, headers extra) {
    return request("DELETE", std::move(target), {}, std::move(extra));
}

void http_client::set_timeout(std::chrono::milliseconds timeout) noexcept {
    impl_->timeout = timeout;
}

void http_client::close() noexcept { impl_->close(); }

std::size_t http_client::connections_opened() const noexcept { return impl_->opened; }

unsigned short http_client::port() const noexcept { return impl_->port; }

// ---------------------------------------------------------------------------------------------
// raw_connection

struct raw_connection::impl {
    asio::io_context ioc;
    tcp::socket socket{ioc};
    std::array<char, 16 * 1024> chunk{};
    std::string received;  // bytes read but not yet handed out
    bool reading = false;  // a read is pending (it survives receive() timeouts)
    bool peer_closed = false;

    void start_read() {
        reading = true;
        socket.async_read_some(asio::buffer(chunk), [this](error_code ec, std::size_t n) {
            reading = false;
            received.append(chunk.data(), n);
            if (ec && ec != asio::error::operation_aborted) peer_closed = true;
        });
    }

    // Waits until some bytes arrived, the peer closed, or the deadline.
    void pump(detail::clock::time_point deadline) {
        if (!received.empty() || peer_closed || !socket.is_open()) return;
        if (!reading) start_read();
        detail::run_until(
            ioc, [this] { return !reading; }, deadline);
    }
};

raw_connection::raw_connection(unsigned short port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<impl>()) {
    std::optional<error_code> result;
    impl_->socket.async_connect(tcp::endpoint(asio::ip::address_v4::loopback(), port),
                                [&](error_code ec) { result = ec; });
    detail::run_until(
        impl_->ioc, [&] { return result.has_value(); }, detail::clock::now() + timeout);
    if (!result || *result) {
        close();
        throw std::runtime_error(
            "raw_connect: cannot connect to 127.0.0.1:" + std::to_string(port) + ": " +
            (result ? result->message() : std::string("timed out")));
    }
    impl_->socket.set_option(tcp::no_delay(true));
}

raw_connection::~raw_connection() {
    if (impl_) close();
}

raw_connection::raw_connection(raw_connection&&) noexcept = default;
raw_connection& raw_connection::operator=(raw_connection&&) noexcept = default;

error_code raw_connection::send(std::string_view bytes, std::chrono::milliseconds timeout) {
    std::optional<error_code> result;
    asio::async_write(impl_->socket, asio::buffer(bytes.data(), bytes.size()),
                      [&](error_code ec, std::size_t) { result = ec; });
    if (!detail::run_until(
            impl_->ioc, [&] { return result.has_value(); }, detail::clock::now() + timeout)) {
        // The write must not outlive `bytes`: cancel it and wait for its handler.
        error_code ignored;
        impl_->socket.cancel(ignored);
        detail::run_until(
            impl_->ioc, [&] { return result.has_value(); },
            detail::clock::now() + std::chrono::seconds(5));
        return asio::error::timed_out;
    }
    return *result;
}

std::string raw_connection::receive(std::chrono::milliseconds timeout) {
    impl_->pump(detail::clock::now() + timeout);
    return std::exchange(impl_->received, {});
}

std::string raw_connection::receive_until_close(std::chrono::milliseconds timeout) {
    auto const deadline = detail::clock::now() + timeout;
    std::string out;
    while (!impl_->peer_closed && impl_->socket.is_open() && detail::clock::now() < deadline) {
        impl_->pump(deadline);
        out += std::exchange(impl_->received, {});
    }
    out += std::exchange(impl_->received, {});
    return out;
}

bool raw_connection::closed() const noexcept { return impl_->peer_closed; }

void raw_connection::shutdown_send() noexcept {
    error_code ignored;
    impl_->socket.shutdown(tcp::socket::shutdown_send, ignored);
}

void raw_connection::close() noexcept {
    error_code ignored;
    impl_->socket.close(ignored);
    // Let a pending read finish (aborted) so no handler refers to a closed socket later.
    if (impl_->reading) {
        detail::run_until(
            impl_->ioc, [this] { return !impl_->reading; },
            detail::clock::now() + std::chrono::seconds(1));
    }
}

tcp::socket& raw_connection::socket() noexcept { return impl_->socket; }

long long metric(http_client& c, std::string_view name) {
    auto body = c.get("/metrics").body;
    auto key = "\n" + std::string(name) + " ";
    auto pos = body.find(key);
    return pos == std::string::npos ? -1 : std::stoll(body.substr(pos + key.size()));
}

raw_connection raw_connect(unsigned short port) { return raw_connection(port); }

std::string raw_exchange(unsigned short port, std::string bytes,
                         std::chrono::milliseconds timeout) {
    raw_connection connection(port);
    // A server that rejects early may close before taking all the bytes; read what it said.
    (void)connection.send(bytes, timeout);
    return connection.receive_until_close(timeout);
}

}  // namespace buzzer::test
