#include "http/router.hpp"

namespace buzzer::http {

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> out;
    if (path.empty() || path.front() != '/') return out;
    path.remove_prefix(1);
    for (;;) {
        auto slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
    }
    return out;
}

void router::add(std::string method, std::string pattern, handler h) {
    route r{std::move(method), {}, std::move(h)};
    for (auto s : split_path(pattern)) r.segments.emplace_back(s);
    routes_.push_back(std::move(r));
}

bool router::matches(const route& r, const std::vector<std::string_view>& segments,
                     std::vector<std::string>* params) {
    if (r.segments.size() != segments.size()) return false;
    for (std::size_t i = 0; i < segments.size(); ++i) {
        const auto& p = r.segments[i];
        bool is_param = p.size() > 2 && p.front() == '{' && p.back() == '}';
        if (is_param) {
            if (segments[i].empty()) return false;
            if (params) params->emplace_back(segments[i]);
        } else if (p != segments[i]) {
            return false;
        }
    }
    return true;
}

router::match router::find(std::string_view method, std::string_view path) const {
    match m;
    auto segments = split_path(path);
    std::string_view lookup = method == "HEAD" ? std::string_view("GET") : method;
    for (const auto& r : routes_) {
        if (!matches(r, segments, nullptr)) continue;
        if (r.method == lookup) {
            matches(r, segments, &m.params);
            m.target = &r.h;
            return m;
        }
        if (!m.allow.empty()) m.allow += ", ";
        m.allow += r.method;
        if (r.method == "GET") m.allow += ", HEAD";
    }
    return m;
}

}  // namespace buzzer::http
