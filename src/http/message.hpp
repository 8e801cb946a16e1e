// Beast-free request and response types that handlers see, and the typed error they throw.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/principal.hpp"

namespace buzzer::http {

/// One header field.
struct field {
    std::string name;
    std::string value;
};

/// Case-insensitive ASCII comparison of header names.
bool iequals(std::string_view a, std::string_view b);

/// `v` without the spaces and tabs around it (a header value's optional white space).
std::string_view trim_ows(std::string_view v);

/// A parsed request.
struct request {
    std::string method;
    std::string target;  ///< as sent: path and query
    std::string path;    ///< target up to '?'
    std::string query;   ///< after '?', without it
    std::vector<field> headers;
    std::string body;
    std::vector<std::string> params;  ///< path parameters captured by the router
    std::string remote;               ///< the client's address, without the port
    bool secure = false;              ///< received over TLS
    /// Who the request acts for, once authenticated; empty before.
    std::shared_ptr<const core::principal> principal;
    /// Set by the server: calls `fn` once, on the connection's executor, if the client closes
    /// its side while the request is handled (a long poll it no longer waits for). Call at
    /// most once; empty for requests made otherwise.
    std::function<void(std::function<void()> fn)> on_client_gone;

    /// The first value of a header, or empty.
    std::string_view header(std::string_view name) const;
    /// Whether the header is present.
    bool has_header(std::string_view name) const;
};

/// Writes a streamed body (SSE). Every write resets the connection's send deadline.
class body_writer {
  public:
    virtual ~body_writer() = default;
    /// Sends `data` as soon as possible; throws when the client is gone.
    virtual boost::asio::awaitable<void> write(std::string_view data) = 0;
    /// Calls `fn` once, on the connection's executor, if the client closes its side or sends
    /// anything while the body is being written (a reader that went away). Call at most once.
    virtual void watch_closed(std::function<void()> fn) = 0;
    /// Ends the response at once by closing the connection; a pending write fails. For a
    /// client that does not keep up. Call on the connection's executor.
    virtual void abort() = 0;
};

/// A response. When `stream` is set, the headers are sent and then `stream` writes the body.
struct response {
    int status = 200;
    std::vector<field> headers;
    std::string body;
    std::function<boost::asio::awaitable<void>(body_writer&)> stream;
    bool close = false;  ///< close the connection after this response

    /// Adds a header.
    response& set(std::string name, std::string value) {
        if (headers.empty()) headers.reserve(8);  // one allocation for a response's few fields
        headers.push_back({std::move(name), std::move(value)});
        return *this;
    }
    /// The first value of a header, or empty.
    std::string_view header(std::string_view name) const;
};

/// The one error type handlers throw; the session renders it as problem+json. A
/// std::exception, so that code which only knows those still reports its detail.
struct http_error : std::exception {
    /// A problem of `status` with type /problems/`type`; `detail` is also what() returns.
    http_error(int status, std::string type, std::string detail, boost::json::object extra = {},
               std::vector<field> headers = {})
        : status(status),
          type(std::move(type)),
          detail(std::move(detail)),
          extra(std::move(extra)),
          headers(std::move(headers)) {}

    /// The detail.
    const char* what() const noexcept override { return detail.c_str(); }

    int status;
    std::string type;  ///< slug after /problems/
    std::string detail;
    boost::json::object extra;   ///< additional problem members
    std::vector<field> headers;  ///< e.g. Allow, Retry-After, Link
};

/// The standard title of a status code ("Not Found").
std::string_view status_title(int status);

/// Renders a problem+json response for `e` at `instance` (the request path).
response problem_response(const http_error& e, std::string_view instance);

}  // namespace buzzer::http
