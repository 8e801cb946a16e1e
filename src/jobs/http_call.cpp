// The http executor: per attempt the input is POSTed to an upstream and its answer kept.
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "http/client.hpp"
#include "jobs/executors.hpp"

namespace buzzer::jobs {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

// Bytes of an error answer's body quoted in the attempt's error.
constexpr std::size_t excerpt_limit = 200;

// What make_http_job derives from the spec once, shared by every attempt of the kind.
struct upstream {
    http_spec spec;
    std::string target;  ///< path and query
    std::optional<http::upstream_client> client;
};

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) !=
                      std::string_view::npos;
        if (!ok) return false;
    }
    return true;
}

std::shared_ptr<upstream> make_upstream(http_spec spec) {
    auto up = std::make_shared<upstream>();
    auto parsed = boost::urls::parse_uri(spec.url);
    if (!parsed) throw std::invalid_argument("http.url: not an absolute URL: " + spec.url);
    auto u = *parsed;
    if (u.scheme_id() != boost::urls::scheme::http) {
        throw std::invalid_argument("http.url: only http:// URLs are supported (no TLS): " +
                                    spec.url);
    }
    if (u.host_type() == boost::urls::host_type::none || u.encoded_host().empty() ||
        u.host_type() == boost::urls::host_type::ipvfuture)
        throw std::invalid_argument("http.url: no usable host: " + spec.url);
    if (u.has_userinfo())
        throw std::invalid_argument(
            "http.url: credentials in the URL are not supported; "
            "configure an Authorization header instead");
    std::string host = u.host_address();
    std::string port = "80";
    std::string host_header(u.encoded_host());
    if (u.has_port() && !u.port().empty()) {
        auto p = u.port();
        bool digits = p.size() <= 5 && p.find_first_not_of("0123456789") == std::string_view::npos;
        if (!digits || std::stoul(std::string(p)) == 0 || std::stoul(std::string(p)) > 65535)
            throw std::invalid_argument("http.url: bad port: " + spec.url);
        port = std::string(p);
        host_header += ":" + port;
    }
    // A fragment is never sent (RFC 9110 7.1).
    up->target = u.encoded_path().empty() ? "/" : std::string(u.encoded_path());
    if (u.has_query()) {
        // Appended in two steps: g++ 12 sees a bogus overflow in `"?" + std::string(...)` here.
        up->target += '?';
        up->target.append(u.encoded_query().data(), u.encoded_query().size());
    }

    if (spec.method.empty()) spec.method = "POST";
    if (!is_token(spec.method))
        throw std::invalid_argument("http.method: not an HTTP method: " + spec.method);
    for (const auto& h : spec.headers) {
        if (!is_token(h.first))
            throw std::invalid_argument("http.headers: not a header name: " + h.first);
        if (h.second.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
            throw std::invalid_argument("http.headers." + h.first + ": control characters");
        // These frame the request or identify the attempt; the executor owns them.
        for (std::string_view reserved :
             {"Content-Length", "Transfer-Encoding", "X-Buzzer-Operation-Id", "X-Buzzer-Attempt"}) {
            if (http::iequals(h.first, reserved))
                throw std::invalid_argument("http.headers: " + h.first + " is set by Buzzer");
        }
    }
    up->client.emplace(std::move(host), std::move(port), std::move(host_header), spec.max_body);
    up->spec = std::move(spec);
    return up;
}

http::upstream_request make_request(const upstream& up, const job& j) {
    http::upstream_request req;
    req.method = up.spec.method;
    req.target = up.target;
    req.headers.reserve(up.spec.headers.size() + 3);
    req.headers.push_back({"Content-Type", "application/json"});
    // Configured headers come after the defaults so they can replace Host, User-Agent, etc.
    for (const auto& [name, value] : up.spec.headers) req.headers.push_back({name, value});
    req.headers.push_back({"X-Buzzer-Operation-Id", j.id()});
    req.headers.push_back({"X-Buzzer-Attempt", std::to_string(j.attempt())});
    req.body = std::string(j.input_text());
    return req;
}

[[noreturn]] void fail(const std::string& detail, bool retryable) {
    throw job_error(detail, retryable);
}

// The start of an error answer's body, cut at a UTF-8 character boundary.
std::string excerpt(std::string_view body) {
    if (body.size() > excerpt_limit) {
        std::size_t n = excerpt_limit;
        while (n > 0 && (static_cast<unsigned char>(body[n]) & 0xC0) == 0x80) --n;
        body = body.substr(0, n);
    }
    while (!body.empty() && std::isspace(static_cast<unsigned char>(body.back())))
        body.remove_suffix(1);
    return std::string(body);
}

std::string answered(unsigned status, std::string_view body) {
    std::string s = "upstream answered " + std::to_string(status);
    auto e = excerpt(body);
    if (!e.empty()) s += ": " + e;
    return s;
}

// Turns a complete response into the attempt's outcome.
json::value conclude(http::upstream_answer& res, job& j) {
    const unsigned status = res.status;
    if (status >= 200 && status < 300) {
        j.set_result(std::move(res.body),
                     res.content_type.empty() ? "application/octet-stream" : res.content_type);
        return nullptr;
    }
    if (status >= 300 && status < 400) {
        const auto& location = res.location;
        if (location.empty())
            fail("upstream answered " + std::to_string(status) +
                     " without a Location; redirects are not followed",
                 false);
        fail("upstream redirected (" + std::to_string(status) + ") to " + std::string(location) +
                 "; redirects are not followed",
             false);
    }
    if (status >= 400 && status < 500) fail(answered(status, res.body), false);
    fail(answered(status, res.body), true);
}

// One attempt: the input sent to the upstream, the answer kept or turned into a failure.
asio::awaitable<json::value> call_upstream(std::shared_ptr<upstream> up, job& j) {
    http::upstream_answer answer;
    // Named: g++ 12 miscompiles temporaries made inside a co_await expression.
    auto request = make_request(*up, j);
    try {
        answer = co_await up->client->call(std::move(request));
    } catch (const http::upstream_error& e) {
        throw job_error(e.what(), e.retryable());
    }
    co_return conclude(answer, j);
}

}  // namespace

job_function make_http_job(http_spec spec) {
    auto up = make_upstream(std::move(spec));
    // Not a coroutine lambda: the coroutine gets the shared state by value.
    return [up](job& j) { return call_upstream(up, j); };
}

}  // namespace buzzer::jobs
