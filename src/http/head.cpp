#include "http/head.hpp"

#include <boost/beast/http/status.hpp>
#include <string_view>

namespace buzzer::http {
namespace bhttp = boost::beast::http;

namespace {

// Appends `text` with CR and LF replaced by spaces, in runs: a field rarely holds a line break.
void append_header_text(std::string& out, std::string_view text) {
    std::size_t plain = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
        if (text[i] != '\r' && text[i] != '\n') continue;
        out.append(text.data() + plain, i - plain);
        out += ' ';
        plain = i + 1;
    }
    out.append(text.data() + plain, text.size() - plain);
}

}  // namespace

std::string response_head(const response& r, bool keep_alive) {
    std::string out;
    out.reserve(160 + 48 * r.headers.size());
    out += "HTTP/1.1 ";
    out += std::to_string(r.status);
    out += ' ';
    // RFC 9110's phrases where they changed (422 Unprocessable Content), as problem titles say.
    auto reason = status_title(r.status);
    if (reason == "Error")
        reason = bhttp::obsolete_reason(bhttp::int_to_status(static_cast<unsigned>(r.status)));
    out += reason;
    out += "\r\n";
    for (const auto& f : r.headers) {
        append_header_text(out, f.name);
        out += ": ";
        append_header_text(out, f.value);
        out += "\r\n";
    }
    // An interim response says nothing of the connection or of the final response's body.
    if (r.status >= 100 && r.status < 200) {
        out += "\r\n";
        return out;
    }
    if (!keep_alive) out += "Connection: close\r\n";
    if (r.stream) {
        // An event stream's head, or a HEAD request's answer with the fields its GET has.
        out += "Transfer-Encoding: chunked\r\n";
    } else if (r.status != 204 && r.status != 304) {
        out += "Content-Length: ";
        out += std::to_string(r.body.size());
        out += "\r\n";
    }
    out += "\r\n";
    return out;
}

}  // namespace buzzer::http
