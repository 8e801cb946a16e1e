#include "http/message.hpp"

#include <boost/json/serialize.hpp>

namespace buzzer::http {

std::string_view trim_ows(std::string_view v) {
    while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
    return v;
}

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
        if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
        if (x != y) return false;
    }
    return true;
}

std::string_view request::header(std::string_view name) const {
    for (const auto& f : headers)
        if (iequals(f.name, name)) return f.value;
    return {};
}

bool request::has_header(std::string_view name) const {
    for (const auto& f : headers)
        if (iequals(f.name, name)) return true;
    return false;
}

std::string_view response::header(std::string_view name) const {
    for (const auto& f : headers)
        if (iequals(f.name, name)) return f.value;
    return {};
}

std::string_view status_title(int status) {
    switch (status) {
        case 200:
            return "OK";
        case 202:
            return "Accepted";
        case 204:
            return "No Content";
        case 303:
            return "See Other";
        case 304:
            return "Not Modified";
        case 201:
            return "Created";
        case 400:
            return "Bad Request";
        case 401:
            return "Unauthorized";
        case 403:
            return "Forbidden";
        case 404:
            return "Not Found";
        case 405:
            return "Method Not Allowed";
        case 408:
            return "Request Timeout";
        case 409:
            return "Conflict";
        case 411:
            return "Length Required";
        case 413:
            return "Content Too Large";
        case 415:
            return "Unsupported Media Type";
        case 422:
            return "Unprocessable Content";
        case 429:
            return "Too Many Requests";
        case 431:
            return "Request Header Fields Too Large";
        case 500:
            return "Internal Server Error";
        case 501:
            return "Not Implemented";
        case 503:
            return "Service Unavailable";
        case 505:
            return "HTTP Version Not Supported";
        default:
            return "Error";
    }
}

response problem_response(const http_error& e, std::string_view instance) {
    boost::json::object p;
    p["type"] = "/problems/" + e.type;
    p["title"] = status_title(e.status);
    p["status"] = e.status;
    p["detail"] = e.detail;
    // Unknown when the request did not get as far as its target.
    if (!instance.empty()) p["instance"] = instance;
    for (const auto& kv : e.extra) p[kv.key()] = kv.value();
    response r;
    r.status = e.status;
    r.headers = e.headers;
    r.set("Content-Type", "application/problem+json");
    r.body = boost::json::serialize(p);
    return r;
}

}  // namespace buzzer::http
