// The one writer of response heads: every kind of head, byte for byte.
#include "http/head.hpp"

#include <boost/test/unit_test.hpp>
#include <string>

using buzzer::http::response;
using buzzer::http::response_head;

namespace {

// A response whose body is streamed (an event stream).
response streamed() {
    response r;
    r.set("Content-Type", "text/event-stream");
    r.set("Cache-Control", "no-store");
    r.set("X-Accel-Buffering", "no");
    r.set("Vary", "Accept");
    r.stream = [](buzzer::http::body_writer&) -> boost::asio::awaitable<void> { co_return; };
    return r;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(response_heads)

BOOST_AUTO_TEST_CASE(a_normal_response_has_its_fields_and_content_length) {
    response r;
    r.set("Content-Type", "application/json");
    r.body = R"({"a":1})";
    BOOST_TEST(response_head(r, true) ==
               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n");
    BOOST_TEST(response_head(r, false) ==
               "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
               "Content-Length: 7\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(an_empty_body_still_has_a_content_length_of_0) {
    response r;
    r.status = 202;
    BOOST_TEST(response_head(r, true) == "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(no_content_and_not_modified_have_no_content_length) {
    for (int status : {204, 304}) {
        BOOST_TEST_CONTEXT(status) {
            response r;
            r.status = status;
            r.set("ETag", "\"x\"");
            const std::string line =
                status == 204 ? "HTTP/1.1 204 No Content\r\n" : "HTTP/1.1 304 Not Modified\r\n";
            BOOST_TEST(response_head(r, true) == line + "ETag: \"x\"\r\n\r\n");
            BOOST_TEST(response_head(r, false) ==
                       line + "ETag: \"x\"\r\nConnection: close\r\n\r\n");
        }
    }
}

BOOST_AUTO_TEST_CASE(reason_phrases_are_the_current_ones_else_beasts) {
    response r;
    r.status = 422;
    BOOST_TEST(response_head(r, true).starts_with("HTTP/1.1 422 Unprocessable Content\r\n"));
    r.status = 413;
    BOOST_TEST(response_head(r, true).starts_with("HTTP/1.1 413 Content Too Large\r\n"));
    r.status = 302;
    BOOST_TEST(response_head(r, true).starts_with("HTTP/1.1 302 Found\r\n"));
}

BOOST_AUTO_TEST_CASE(a_head_request_of_a_stream_gets_the_fields_its_get_has) {
    BOOST_TEST(response_head(streamed(), true) ==
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
               "X-Accel-Buffering: no\r\nVary: Accept\r\nTransfer-Encoding: chunked\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(a_stream_head_is_what_beast_wrote_for_it) {
    // As Beast's serializer wrote it before (checked on the wire): the handler's fields, then
    // Connection: close, then the chunked coding.
    BOOST_TEST(response_head(streamed(), false) ==
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
               "X-Accel-Buffering: no\r\nVary: Accept\r\nConnection: close\r\n"
               "Transfer-Encoding: chunked\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(continue_is_a_status_line_alone) {
    response r;
    r.status = 100;
    BOOST_TEST(response_head(r, true) == "HTTP/1.1 100 Continue\r\n\r\n");
    // Interim: nothing about the connection or a body, whatever the final answer will say.
    BOOST_TEST(response_head(r, false) == "HTTP/1.1 100 Continue\r\n\r\n");
}

BOOST_AUTO_TEST_CASE(line_breaks_in_names_and_values_cannot_add_a_field) {
    response r;
    r.set("Content-Type", "text/plain\r\nX-Injected: yes");
    r.set("X-Name\nX-Other", "v\r");
    r.set("Link", "\n\r\n");
    auto head = response_head(r, true);
    BOOST_TEST(head ==
               "HTTP/1.1 200 OK\r\nContent-Type: text/plain  X-Injected: yes\r\n"
               "X-Name X-Other: v \r\nLink:    \r\nContent-Length: 0\r\n\r\n");
    BOOST_TEST(head.find("\nX-Injected") == std::string::npos);
    r = streamed();
    r.set("X-Note", "a\r\nTransfer-Encoding: identity");
    head = response_head(r, false);
    BOOST_TEST(head.find("\nTransfer-Encoding: identity") == std::string::npos, head);
}

BOOST_AUTO_TEST_SUITE_END()
