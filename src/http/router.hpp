// Maps a method and a path pattern ("/operations/{id}/status") to a handler coroutine.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http/message.hpp"

namespace buzzer::http {

/// A request handler.
using handler = std::function<boost::asio::awaitable<response>(request&)>;

/// Sees every request once it is read, before its route is looked up; a response answers
/// the request at once (a CORS preflight, a client over its failure limit), none lets it go
/// on to its route.
using before_hook = std::function<std::optional<response>(request&)>;

/// Sees every response the router's dispatch produces before it is written (a route's, a
/// 404 or 405, a problem, the before-hook's own; a stream's before its head), and may change
/// it.
using after_hook = std::function<void(const request&, response&)>;

/// A table of routes; `{name}` segments match one non-empty path segment.
class router {
  public:
    /// Adds a route. GET routes also answer HEAD.
    void add(std::string method, std::string pattern, handler h);

    /// Result of a match: the handler, or the status to answer (404, 405 with `allow`).
    struct match {
        const handler* target = nullptr;
        std::vector<std::string> params;
        std::string allow;  ///< for 405: the methods the path accepts
    };

    /// Finds the route for `method` and `path`.
    match find(std::string_view method, std::string_view path) const;

    /// Which problem answers an exception that a handler let escape; none means a 500.
    using error_mapper = std::function<std::optional<http_error>(const std::exception&)>;
    void on_exception(error_mapper m) { map_error_ = std::move(m); }
    std::optional<http_error> problem_for(const std::exception& e) const {
        return map_error_ ? map_error_(e) : std::nullopt;
    }

    /// Sets the hook every request passes before its route (none by default). Set it before
    /// the server starts; it runs on the connection's thread and must not block.
    void before(before_hook h) { before_ = std::move(h); }
    /// Sets the hook every response passes before it is written (none by default). Set it
    /// before the server starts; it runs on the connection's thread and must not block.
    void after(after_hook h) { after_ = std::move(h); }

    /// The before-hook's answer to `req`, if it has one (none without a hook).
    std::optional<response> run_before(request& req) const {
        return before_ ? before_(req) : std::nullopt;
    }
    /// Passes `res`, the answer to `req`, through the after-hook.
    void run_after(const request& req, response& res) const {
        if (after_) after_(req, res);
    }

  private:
    struct route {
        std::string method;
        std::vector<std::string> segments;
        handler h;
    };
    static bool matches(const route& r, const std::vector<std::string_view>& segments,
                        std::vector<std::string>* params);
    std::vector<route> routes_;
    error_mapper map_error_;
    before_hook before_;
    after_hook after_;
};

/// Splits "/a/b/" into {"a", "b", ""}; "/" into {""}.
std::vector<std::string_view> split_path(std::string_view path);

}  // namespace buzzer::http
