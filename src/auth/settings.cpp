#include "auth/settings.hpp"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>
#include <stdexcept>

namespace buzzer::auth {
namespace json = boost::json;

namespace {

// Reads one configuration text; each check names `file: key`.
struct reader {
    const std::string& file;

    [[noreturn]] void fail(const std::string& key, const std::string& what) const {
        throw std::invalid_argument(file + ": " + key + ": " + what);
    }
    json::value parse(std::string_view text, const std::string& key) const {
        boost::system::error_code ec;
        auto v = json::parse(text, ec);
        if (ec) fail(key, "not valid JSON: " + ec.message());
        return v;
    }
    const json::object& object(const json::value& v, const std::string& key) const {
        if (!v.is_object()) fail(key, "must be an object");
        return v.get_object();
    }
    std::string text(const json::value& v, const std::string& key, bool allow_empty = false) const {
        if (!v.is_string()) fail(key, "must be a string");
        if (!allow_empty && v.get_string().empty()) fail(key, "must not be empty");
        return std::string(v.get_string());
    }
    double number(const json::value& v, const std::string& key, double lo, double hi) const {
        if (!v.is_number()) fail(key, "must be a number");
        double d = v.to_number<double>();
        if (!(d >= lo && d <= hi))
            fail(key, "must be between " + json::serialize(json::value(lo)) + " and " +
                          json::serialize(json::value(hi)));
        return d;
    }
    std::uint64_t whole(const json::value& v, const std::string& key, double lo, double hi) const {
        double d = number(v, key, lo, hi);
        if (std::floor(d) != d) fail(key, "must be an integer");
        return static_cast<std::uint64_t>(d);
    }
    bool boolean(const json::value& v, const std::string& key) const {
        if (!v.is_bool()) fail(key, "must be true or false");
        return v.get_bool();
    }
};

constexpr std::string_view algorithms[] = {"HS256", "HS384", "HS512", "RS256", "RS384",
                                           "RS512", "ES256", "ES384", "ES512"};

jwt_settings parse_jwt(const reader& r, const json::value& v) {
    jwt_settings j;
    bool has_issuer = false, has_audience = false;
    for (const auto& kv : r.object(v, "auth.jwt")) {
        const std::string key = "auth.jwt." + std::string(kv.key());
        const auto& val = kv.value();
        if (kv.key() == "issuer") {
            j.issuer = r.text(val, key);
            has_issuer = true;
        } else if (kv.key() == "audience") {
            j.audience = r.text(val, key);
            has_audience = true;
        } else if (kv.key() == "tenant_claim") {
            j.tenant_claim = r.text(val, key);
        } else if (kv.key() == "leeway_s") {
            j.leeway_s = static_cast<long>(r.whole(val, key, 0, 3600));
        } else if (kv.key() == "keys") {
            if (!val.is_array() || val.get_array().empty())
                r.fail(key, "must be a non-empty list of keys");
            std::size_t i = 0;
            for (const auto& k : val.get_array()) {
                const std::string at = key + "[" + std::to_string(i++) + "]";
                jwt_key_source s;
                for (const auto& m : r.object(k, at)) {
                    const std::string mk = at + "." + std::string(m.key());
                    if (m.key() == "kid")
                        s.kid = r.text(m.value(), mk);
                    else if (m.key() == "alg")
                        s.alg = r.text(m.value(), mk);
                    else if (m.key() == "pem_file")
                        s.pem_file = r.text(m.value(), mk);
                    else if (m.key() == "secret_file")
                        s.secret_file = r.text(m.value(), mk);
                    else
                        r.fail(mk, "unknown key");
                }
                if (std::find(std::begin(algorithms), std::end(algorithms), s.alg) ==
                    std::end(algorithms))
                    r.fail(at + ".alg",
                           "must be one of HS256, HS384, HS512, RS256, RS384, "
                           "RS512, ES256, ES384, ES512");
                const bool hmac = s.alg.starts_with("HS");
                if (hmac && (s.secret_file.empty() || !s.pem_file.empty()))
                    r.fail(at, s.alg + " takes a secret_file (and no pem_file)");
                if (!hmac && (s.pem_file.empty() || !s.secret_file.empty()))
                    r.fail(at, s.alg + " takes a pem_file (and no secret_file)");
                for (const auto& other : j.keys)
                    if (other.kid == s.kid) r.fail(at + ".kid", "repeats another key's kid");
                j.keys.push_back(std::move(s));
            }
        } else {
            r.fail(key, "unknown key");
        }
    }
    if (!has_issuer) r.fail("auth.jwt.issuer", "is required");
    if (!has_audience) r.fail("auth.jwt.audience", "is required");
    if (j.keys.empty()) r.fail("auth.jwt.keys", "is required");
    if (j.keys.size() > 1)
        for (std::size_t i = 0; i < j.keys.size(); ++i)
            if (j.keys[i].kid.empty())
                r.fail("auth.jwt.keys[" + std::to_string(i) + "].kid",
                       "is required when there are several keys");
    return j;
}

quota parse_quota(const reader& r, const json::value& v, const std::string& at) {
    quota q;
    std::optional<double> burst;
    for (const auto& kv : r.object(v, at)) {
        const std::string key = at + "." + std::string(kv.key());
        if (kv.key() == "max_pending")
            q.max_pending = r.whole(kv.value(), key, 0, 1e12);
        else if (kv.key() == "submit_rate")
            q.submit_rate = r.number(kv.value(), key, 0.001, 1e9);
        else if (kv.key() == "submit_burst")
            burst = r.number(kv.value(), key, 1, 1e9);
        else
            r.fail(key, "unknown key");
    }
    if (burst && !q.submit_rate) r.fail(at + ".submit_burst", "needs submit_rate");
    // Without a burst, a second's worth: a client at the rate is never refused.
    if (q.submit_rate) q.submit_burst = burst ? *burst : std::max(1.0, std::ceil(*q.submit_rate));
    return q;
}

// An origin as a browser sends it: scheme "://" host [":" port], nothing after.
bool origin_ok(const std::string& o) {
    auto sep = o.find("://");
    if (sep == std::string::npos || sep == 0) return false;
    auto scheme = o.substr(0, sep);
    if (scheme != "http" && scheme != "https") return false;
    auto rest = o.substr(sep + 3);
    return !rest.empty() && rest.find_first_of("/?#@ ") == std::string::npos;
}

cors_settings parse_cors(const reader& r, const json::value& v) {
    cors_settings c;
    for (const auto& kv : r.object(v, "cors")) {
        const std::string key = "cors." + std::string(kv.key());
        if (kv.key() == "origins") {
            if (!kv.value().is_array()) r.fail(key, "must be a list of origins");
            for (const auto& o : kv.value().get_array()) {
                auto origin = r.text(o, key);
                if (!origin_ok(origin))
                    r.fail(key, "\"" + origin +
                                    "\" is not an origin such as https://app.example.com "
                                    "(scheme, host and port only; no wildcard)");
                c.origins.push_back(std::move(origin));
            }
        } else if (kv.key() == "credentials") {
            c.credentials = r.boolean(kv.value(), key);
        } else if (kv.key() == "max_age_s") {
            c.max_age_s = static_cast<long>(r.whole(kv.value(), key, 0, 86400));
        } else {
            r.fail(key, "unknown key");
        }
    }
    return c;
}

}  // namespace

bool cors_settings::allows(std::string_view origin) const {
    return std::find(origins.begin(), origins.end(), origin) != origins.end();
}

const quota* settings::quota_for(std::string_view tenant) const {
    if (auto it = tenants.find(tenant); it != tenants.end()) return &it->second;
    return other_tenants ? &*other_tenants : nullptr;
}

settings parse_settings(std::string_view auth, std::string_view tenants, std::string_view cors,
                        const std::string& file) {
    const reader r{file};
    settings s;
    if (!auth.empty()) {
        auto v = r.parse(auth, "auth");
        if (v.is_string() && v.get_string() == "none") {
            s.open_on_purpose = true;
        } else {
            if (!v.is_object()) r.fail("auth", "must be an object, or \"none\" for open mode");
            s.enabled = true;
            for (const auto& kv : v.get_object()) {
                const std::string key = "auth." + std::string(kv.key());
                if (kv.key() == "jwt")
                    s.jwt = parse_jwt(r, kv.value());
                else if (kv.key() == "metrics_token")
                    s.metrics_token = r.text(kv.value(), key);
                else if (kv.key() == "failure_limit")
                    s.failure_limit = static_cast<unsigned>(r.whole(kv.value(), key, 0, 1e6));
                else
                    r.fail(key, "unknown key");
            }
        }
    }
    if (!tenants.empty()) {
        auto v = r.parse(tenants, "tenants");
        for (const auto& kv : r.object(v, "tenants")) {
            const std::string name(kv.key());
            if (name.empty()) r.fail("tenants", "a tenant's name must not be empty");
            auto q = parse_quota(r, kv.value(), "tenants." + name);
            if (name == "*")
                s.other_tenants = q;
            else
                s.tenants.emplace(name, q);
        }
    }
    if (!cors.empty()) s.cors = parse_cors(r, r.parse(cors, "cors"));
    return s;
}

}  // namespace buzzer::auth
