#include "auth/session.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <climits>
#include <stdexcept>

#include "auth/base64url.hpp"

namespace buzzer::auth {
namespace json = boost::json;

namespace {

// The format of the payload, so that a later one can be told apart.
constexpr std::int64_t version = 1;
constexpr std::size_t mac_size = 32;

// HMAC-SHA256 of `data` under `secret`; empty when OpenSSL fails.
std::string mac(std::string_view secret, std::string_view data) {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (secret.size() > INT_MAX) return {};
    if (!HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len)) {
        ERR_clear_error();
        return {};
    }
    return std::string(reinterpret_cast<const char*>(out), len);
}

// RFC 6265 §4.1.1: cookie-octet, US-ASCII without controls, white space, DQUOTE, comma,
// semicolon and backslash.
bool cookie_octet(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return c >= 0x21 && c <= 0x7e && c != '"' && c != ',' && c != ';' && c != '\\';
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::string seal_session(const session& s, std::string_view secret) {
    if (secret.size() < min_session_secret)
        throw std::invalid_argument("the session secret must have at least 32 bytes");
    json::object o;
    o["v"] = version;
    o["t"] = s.tenant;
    o["r"] = core::to_string(s.role);
    if (s.kinds) {
        json::array kinds;
        for (const auto& k : *s.kinds) kinds.emplace_back(k);
        o["k"] = std::move(kinds);
    }
    o["c"] = s.credential;
    o["e"] = s.expires_at;
    std::string value = base64url_encode(json::serialize(o));
    const std::string tag = mac(secret, value);
    if (tag.size() != mac_size) throw std::runtime_error("HMAC-SHA256 failed");
    value += '.';
    value += base64url_encode(tag);
    if (value.size() > max_session_size)
        throw std::invalid_argument("the session is too large for a cookie");
    return value;
}

std::optional<session> open_session(std::string_view value, std::string_view secret,
                                    core::millis now) {
    if (value.size() > max_session_size || secret.size() < min_session_secret) return std::nullopt;
    const auto dot = value.find('.');
    if (dot == std::string_view::npos) return std::nullopt;
    const auto payload_part = value.substr(0, dot);
    const auto tag = base64url_decode(value.substr(dot + 1));
    if (!tag || tag->size() != mac_size) return std::nullopt;
    const std::string expected = mac(secret, payload_part);
    if (expected.size() != mac_size || CRYPTO_memcmp(expected.data(), tag->data(), mac_size) != 0)
        return std::nullopt;

    // Sealed by this server: still read defensively, a secret may be shared by mistake.
    const auto payload = base64url_decode(payload_part);
    if (!payload) return std::nullopt;
    json::parse_options options;
    options.max_depth = 4;
    json::error_code ec;
    const json::value v = json::parse(*payload, ec, {}, options);
    if (ec || !v.is_object()) return std::nullopt;
    const auto& o = v.get_object();
    const auto* ver = o.if_contains("v");
    const auto* tenant = o.if_contains("t");
    const auto* role = o.if_contains("r");
    const auto* kinds = o.if_contains("k");
    const auto* credential = o.if_contains("c");
    const auto* expires = o.if_contains("e");
    if (!ver || !ver->is_int64() || ver->get_int64() != version) return std::nullopt;
    if (!tenant || !tenant->is_string() || tenant->get_string().empty()) return std::nullopt;
    if (!role || !role->is_string() || !credential || !credential->is_string()) return std::nullopt;
    if (!expires || !expires->is_int64()) return std::nullopt;
    session s;
    const auto r = core::parse_role(role->get_string());
    if (!r) return std::nullopt;
    s.role = *r;
    if (kinds) {
        if (!kinds->is_array()) return std::nullopt;
        auto& list = s.kinds.emplace();
        for (const auto& k : kinds->get_array()) {
            if (!k.is_string()) return std::nullopt;
            list.emplace_back(k.get_string());
        }
    }
    s.tenant = tenant->get_string();
    s.credential = credential->get_string();
    s.expires_at = expires->get_int64();
    if (s.expires_at <= now) return std::nullopt;
    return s;
}

std::optional<std::string_view> find_cookie(std::string_view cookie_header, std::string_view name) {
    if (name.empty()) return std::nullopt;
    while (!cookie_header.empty()) {
        const auto end = cookie_header.find(';');
        const auto pair = trim(cookie_header.substr(0, end));
        cookie_header =
            end == std::string_view::npos ? std::string_view{} : cookie_header.substr(end + 1);
        const auto eq = pair.find('=');
        if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;

        // The first cookie of that name decides, well-formed or not.
        auto v = trim(pair.substr(eq + 1));
        if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
        for (char c : v)
            if (!cookie_octet(c)) return std::nullopt;
        return v;
    }
    return std::nullopt;
}

}  // namespace buzzer::auth
