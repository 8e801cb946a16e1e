#include "http/read_error.hpp"

#include <array>
#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <string>

#include "http/tls_stream.hpp"

namespace buzzer::http {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;

namespace {

// What a read error means, whichever part of the request was being read.
enum class outcome { went_away, body_too_large, header_too_large, timed_out };

struct row {
    boost::system::error_code code;
    outcome meaning;
};

// Every error that is not here is a malformed request (400 quoting the parser).
const std::array<row, 12>& table() {
    static const std::array<row, 12> rows{{
        // The client closed or reset its end, also in the middle of a message (a half-closed
        // client sent all it will), or the server closed the socket itself (shutdown): nobody
        // is left to read an answer.
        {bhttp::error::end_of_stream, outcome::went_away},
        {bhttp::error::partial_message, outcome::went_away},
        {asio::error::eof, outcome::went_away},
        {asio::error::connection_reset, outcome::went_away},
        {asio::error::connection_aborted, outcome::went_away},
        {asio::error::broken_pipe, outcome::went_away},
        {asio::error::operation_aborted, outcome::went_away},
        {asio::error::bad_descriptor, outcome::went_away},
        // A Content-Length over the limit fails as the header completes, a chunked body as it
        // grows past it.
        {bhttp::error::body_limit, outcome::body_too_large},
        // The header block, or the trailer of a chunked body, outgrew the limit or the buffer
        // that holds it.
        {bhttp::error::header_limit, outcome::header_too_large},
        {bhttp::error::buffer_overflow, outcome::header_too_large},
        // The read's own deadline (the header timeout, or the idle timeout for the body).
        {beast::error::timeout, outcome::timed_out},
    }};
    return rows;
}

}  // namespace

std::optional<http_error> read_problem(boost::system::error_code ec, read_phase phase,
                                       std::size_t header_limit, std::size_t body_limit) {
    // A record that does not decrypt, or another TLS protocol error: the session is over and
    // cannot carry an answer.
    if (ec.category() == tls_category()) return std::nullopt;
    for (const auto& r : table()) {
        if (ec != r.code) continue;
        switch (r.meaning) {
            case outcome::went_away:
                return std::nullopt;
            case outcome::body_too_large:
                return http_error{413, "payload-too-large",
                                  "the body exceeds " + std::to_string(body_limit) + " bytes"};
            case outcome::header_too_large:
                return http_error{
                    431, "header-too-large",
                    "request headers exceed " + std::to_string(header_limit) + " bytes"};
            case outcome::timed_out:
                return http_error{408, "request-timeout",
                                  phase == read_phase::header
                                      ? "the request headers did not arrive in time"
                                      : "the request body did not arrive in time"};
        }
    }
    return http_error{400, "malformed-request", ec.message()};
}

}  // namespace buzzer::http
