// The one table from failed reads of a request to problems, for the header and the body.
#include "http/read_error.hpp"

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/test/unit_test.hpp>
#include <string>
#include <vector>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using boost::system::error_code;
using buzzer::http::read_phase;
using buzzer::http::read_problem;

namespace {

constexpr std::size_t header_limit = 16384;
constexpr std::size_t body_limit = 1048576;

const std::vector<read_phase> both_phases{read_phase::header, read_phase::body};

const char* name(read_phase p) { return p == read_phase::header ? "header" : "body"; }

}  // namespace

BOOST_AUTO_TEST_SUITE(read_errors)

BOOST_AUTO_TEST_CASE(a_client_that_went_away_gets_a_silent_close_in_either_phase) {
    const std::vector<error_code> gone{
        bhttp::error::end_of_stream,    bhttp::error::partial_message,   asio::error::eof,
        asio::error::connection_reset,  asio::error::connection_aborted, asio::error::broken_pipe,
        asio::error::operation_aborted, asio::error::bad_descriptor,
    };
    for (auto phase : both_phases)
        for (const auto& ec : gone) BOOST_TEST_CONTEXT(name(phase) << ": " << ec.message()) {
                BOOST_TEST(!read_problem(ec, phase, header_limit, body_limit).has_value());
            }
}

BOOST_AUTO_TEST_CASE(a_body_over_the_limit_is_413_naming_the_limit) {
    for (auto phase : both_phases) {
        BOOST_TEST_CONTEXT(name(phase)) {
            auto p = read_problem(bhttp::error::body_limit, phase, header_limit, body_limit);
            BOOST_TEST_REQUIRE(p.has_value());
            BOOST_TEST(p->status == 413);
            BOOST_TEST(p->type == "payload-too-large");
            BOOST_TEST(p->detail == "the body exceeds 1048576 bytes");
        }
    }
}

BOOST_AUTO_TEST_CASE(a_header_block_over_the_limit_or_the_buffer_is_431_naming_the_limit) {
    for (auto phase : both_phases)
        for (error_code ec :
             {error_code(bhttp::error::header_limit), error_code(bhttp::error::buffer_overflow)}) {
            BOOST_TEST_CONTEXT(name(phase) << ": " << ec.message()) {
                auto p = read_problem(ec, phase, 2048, body_limit);
                BOOST_TEST_REQUIRE(p.has_value());
                BOOST_TEST(p->status == 431);
                BOOST_TEST(p->type == "header-too-large");
                BOOST_TEST(p->detail == "request headers exceed 2048 bytes");
            }
        }
}

BOOST_AUTO_TEST_CASE(a_read_past_its_deadline_is_408_saying_what_was_late) {
    auto header = read_problem(beast::error::timeout, read_phase::header, header_limit, body_limit);
    BOOST_TEST_REQUIRE(header.has_value());
    BOOST_TEST(header->status == 408);
    BOOST_TEST(header->type == "request-timeout");
    BOOST_TEST(header->detail == "the request headers did not arrive in time");
    auto body = read_problem(beast::error::timeout, read_phase::body, header_limit, body_limit);
    BOOST_TEST_REQUIRE(body.has_value());
    BOOST_TEST(body->status == 408);
    BOOST_TEST(body->type == "request-timeout");
    BOOST_TEST(body->detail == "the request body did not arrive in time");
}

BOOST_AUTO_TEST_CASE(anything_else_is_a_malformed_request_quoting_the_parser) {
    for (auto phase : both_phases)
        for (error_code ec :
             {error_code(bhttp::error::bad_method), error_code(bhttp::error::bad_chunk),
              error_code(bhttp::error::bad_content_length), error_code(bhttp::error::bad_field),
              error_code(asio::error::no_memory)}) {
            BOOST_TEST_CONTEXT(name(phase) << ": " << ec.message()) {
                auto p = read_problem(ec, phase, header_limit, body_limit);
                BOOST_TEST_REQUIRE(p.has_value());
                BOOST_TEST(p->status == 400);
                BOOST_TEST(p->type == "malformed-request");
                BOOST_TEST(p->detail == ec.message());
            }
        }
}

BOOST_AUTO_TEST_SUITE_END()
