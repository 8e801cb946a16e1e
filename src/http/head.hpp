// The head of a response as it goes on the wire: one writer for answers, event-stream heads,
// the heads of HEAD requests and interim responses (100 Continue).
#pragma once

#include <string>

#include "http/message.hpp"

namespace buzzer::http {

/// "HTTP/1.1 STATUS REASON", the fields of `r` (line breaks in names and values become
/// spaces: values come from handlers and executors), "Connection: close" unless `keep_alive`,
/// then the framing of the body: Content-Length (none for 204 and 304), or for a streamed body
/// "Transfer-Encoding: chunked". An interim response (1xx) has its status line and fields only.
std::string response_head(const response& r, bool keep_alive);

}  // namespace buzzer::http
