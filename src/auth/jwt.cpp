#include "auth/jwt.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <boost/json/basic_parser_impl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>
#include <climits>
#include <cmath>
#include <stdexcept>

#include "auth/base64url.hpp"

namespace buzzer::auth {
namespace json = boost::json;

namespace {

struct pkey_free {
    void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, pkey_free>;

struct bio_free {
    void operator()(BIO* p) const noexcept { BIO_free(p); }
};
using bio_ptr = std::unique_ptr<BIO, bio_free>;

enum class family { hmac, rsa, ec };

family family_of(jwt_alg alg) {
    switch (alg) {
        case jwt_alg::hs256:
        case jwt_alg::hs384:
        case jwt_alg::hs512:
            return family::hmac;
        case jwt_alg::rs256:
        case jwt_alg::rs384:
        case jwt_alg::rs512:
            return family::rsa;
        case jwt_alg::es256:
        case jwt_alg::es384:
        case jwt_alg::es512:
            break;
    }
    return family::ec;
}

const EVP_MD* digest_of(jwt_alg alg) {
    switch (alg) {
        case jwt_alg::hs256:
        case jwt_alg::rs256:
        case jwt_alg::es256:
            return EVP_sha256();
        case jwt_alg::hs384:
        case jwt_alg::rs384:
        case jwt_alg::es384:
            return EVP_sha384();
        case jwt_alg::hs512:
        case jwt_alg::rs512:
        case jwt_alg::es512:
            break;
    }
    return EVP_sha512();
}

// The curve each ES algorithm is bound to (RFC 7518 §3.4), by OpenSSL's name, and the size
// of each of R and S in the JOSE signature.
struct curve {
    const char* name;
    const char* nist;
    std::size_t size;
};
curve curve_of(jwt_alg alg) {
    if (alg == jwt_alg::es256) return {"prime256v1", "P-256", 32};
    if (alg == jwt_alg::es384) return {"secp384r1", "P-384", 48};
    return {"secp521r1", "P-521", 66};
}

// The "PUBLIC KEY" of `pem`, or that of its "CERTIFICATE".
pkey_ptr load_public_key(std::string_view pem) {
    if (pem.size() > INT_MAX) return nullptr;
    auto bio = [&] { return bio_ptr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))); };
    if (auto b = bio()) {
        if (EVP_PKEY* key = PEM_read_bio_PUBKEY(b.get(), nullptr, nullptr, nullptr))
            return pkey_ptr(key);
    }
    if (auto b = bio()) {
        if (X509* cert = PEM_read_bio_X509(b.get(), nullptr, nullptr, nullptr)) {
            pkey_ptr key(X509_get_pubkey(cert));
            X509_free(cert);
            return key;
        }
    }
    return nullptr;
}

// The part of a compact JWS that the next step needs, or the error that ends verification.
struct parts {
    std::string_view signing_input;
    std::string header;
    std::string payload;
    std::string signature;
};

// Counts the members of the outermost object as the parser meets them: the DOM parser keeps
// only the last of repeated members, so fewer in the DOM than here means a repeated one.
struct member_counter {
    static constexpr std::size_t max_array_size = -1;
    static constexpr std::size_t max_object_size = -1;
    static constexpr std::size_t max_string_size = -1;
    static constexpr std::size_t max_key_size = -1;
    std::size_t depth = 0;
    std::size_t members = 0;

    bool on_document_begin(json::error_code&) { return true; }
    bool on_document_end(json::error_code&) { return true; }
    bool on_array_begin(json::error_code&) { return ++depth, true; }
    bool on_array_end(std::size_t, json::error_code&) { return --depth, true; }
    bool on_object_begin(json::error_code&) { return ++depth, true; }
    bool on_object_end(std::size_t n, json::error_code&) {
        if (--depth == 0) members = n;
        return true;
    }
    bool on_string_part(json::string_view, std::size_t, json::error_code&) { return true; }
    bool on_string(json::string_view, std::size_t, json::error_code&) { return true; }
    bool on_key_part(json::string_view, std::size_t, json::error_code&) { return true; }
    bool on_key(json::string_view, std::size_t, json::error_code&) { return true; }
    bool on_number_part(json::string_view, json::error_code&) { return true; }
    bool on_int64(std::int64_t, json::string_view, json::error_code&) { return true; }
    bool on_uint64(std::uint64_t, json::string_view, json::error_code&) { return true; }
    bool on_double(double, json::string_view, json::error_code&) { return true; }
    bool on_bool(bool, json::error_code&) { return true; }
    bool on_null(json::error_code&) { return true; }
    bool on_comment_part(json::string_view, json::error_code&) { return true; }
    bool on_comment(json::string_view, json::error_code&) { return true; }
};

// Headers and claim sets are flat: a few levels are plenty, and bound the parser's work.
constexpr std::size_t max_depth = 16;

// `text` as a JSON object without repeated members (strict JSON, valid UTF-8).
std::optional<json::object> parse_object(std::string_view text) {
    json::parse_options options;
    options.max_depth = max_depth;
    json::error_code ec;
    json::value v = json::parse(text, ec, {}, options);
    if (ec || !v.is_object()) return std::nullopt;

    json::basic_parser<member_counter> counter(options);
    counter.write_some(false, text.data(), text.size(), ec);
    if (ec || counter.handler().members != v.get_object().size()) return std::nullopt;
    return std::move(v.get_object());
}

const json::value* member(const json::object& o, std::string_view name) {
    auto it = o.find(name);
    return it == o.end() ? nullptr : &it->value();
}

// Where a NumericDate is accepted: about 31 million years either side of 1970, so that its
// milliseconds fit an int64 with room for the leeway.
constexpr double max_numeric_date = 1e15;

// A NumericDate (seconds, possibly fractional) in milliseconds; nullopt when the value is
// not a finite number in range.
std::optional<core::millis> numeric_date(const json::value& v) {
    double s = 0;
    if (v.is_int64())
        s = static_cast<double>(v.get_int64());
    else if (v.is_uint64())
        s = static_cast<double>(v.get_uint64());
    else if (v.is_double())
        s = v.get_double();
    else
        return std::nullopt;
    if (!std::isfinite(s) || std::fabs(s) > max_numeric_date) return std::nullopt;
    return static_cast<core::millis>(std::floor(s * 1000));
}

// The highest buzzer role among the space-separated scopes of `scope`.
std::optional<core::role> role_of(std::string_view scope) {
    std::optional<core::role> best;
    while (!scope.empty()) {
        const auto end = scope.find(' ');
        const auto word = scope.substr(0, end);
        scope = end == std::string_view::npos ? std::string_view{} : scope.substr(end + 1);
        std::optional<core::role> r;
        if (word.starts_with("buzzer:")) r = core::parse_role(word.substr(7));
        if (r && (!best || *r > *best)) best = r;
    }
    return best;
}

}  // namespace

// One configured key: its id, the one algorithm it verifies, and the key material.
struct jwt_keys::key {
    std::string kid;
    jwt_alg alg;
    pkey_ptr pkey;       // RS and ES
    std::string secret;  // HS
    std::size_t ec_size = 0;

    ~key() { OPENSSL_cleanse(secret.data(), secret.size()); }
    key(std::string k, jwt_alg a) : kid(std::move(k)), alg(a) {}
    key(key&&) = default;
    key& operator=(key&&) = default;

    // Whether `signature` signs `input` with this key.
    bool verifies(std::string_view input, std::string_view signature) const;
};

struct jwt_keys::impl {
    std::vector<key> keys;

    void check_kid(const std::string& kid) const {
        if (keys.empty()) return;
        if (kid.empty() || keys.front().kid.empty())
            throw std::invalid_argument("a JWT key without kid must be the only key");
        for (const auto& k : keys)
            if (k.kid == kid) throw std::invalid_argument("JWT key id \"" + kid + "\" repeats");
    }
};

jwt_keys::jwt_keys() : impl_(std::make_unique<impl>()) {}
jwt_keys::~jwt_keys() = default;
jwt_keys::jwt_keys(jwt_keys&&) noexcept = default;
jwt_keys& jwt_keys::operator=(jwt_keys&&) noexcept = default;

std::size_t jwt_keys::size() const { return impl_ ? impl_->keys.size() : 0; }

void jwt_keys::add_pem(std::string kid, jwt_alg alg, std::string_view pem) {
    if (!impl_) impl_ = std::make_unique<impl>();  // a set moved from is empty again
    const std::string what = "JWT key \"" + kid + "\" (" + std::string(to_string(alg)) + "): ";
    impl_->check_kid(kid);
    const family f = family_of(alg);
    if (f == family::hmac) throw std::invalid_argument(what + "an HMAC algorithm takes a secret");
    pkey_ptr pkey = load_public_key(pem);
    ERR_clear_error();
    if (!pkey) {
        const bool private_key = pem.find("PRIVATE KEY-----") != std::string_view::npos;
        throw std::invalid_argument(what + (private_key
                                                ? "the PEM holds a private key; give the public key"
                                                : "not a PEM PUBLIC KEY or CERTIFICATE"));
    }
    key k(std::move(kid), alg);
    if (f == family::rsa) {
        if (!EVP_PKEY_is_a(pkey.get(), "RSA")) throw std::invalid_argument(what + "not an RSA key");
        if (EVP_PKEY_get_bits(pkey.get()) < 2048)
            throw std::invalid_argument(what + "an RSA key of fewer than 2048 bits");
    } else {
        const curve c = curve_of(alg);
        char name[64] = {};
        std::size_t len = 0;
        if (!EVP_PKEY_is_a(pkey.get(), "EC") ||
            !EVP_PKEY_get_group_name(pkey.get(), name, sizeof name, &len)) {
            ERR_clear_error();
            throw std::invalid_argument(what + "not an EC key");
        }
        if (std::string_view(name, len) != c.name)
            throw std::invalid_argument(what + "not a key of the curve " + c.nist);
        k.ec_size = c.size;
    }
    k.pkey = std::move(pkey);
    impl_->keys.push_back(std::move(k));
}

void jwt_keys::add_secret(std::string kid, jwt_alg alg, std::string secret) {
    if (!impl_) impl_ = std::make_unique<impl>();
    const std::string what = "JWT key \"" + kid + "\" (" + std::string(to_string(alg)) + "): ";
    impl_->check_kid(kid);
    if (family_of(alg) != family::hmac)
        throw std::invalid_argument(what + "an RSA or EC algorithm takes a PEM public key");
    const auto needed = static_cast<std::size_t>(EVP_MD_get_size(digest_of(alg)));
    if (secret.size() < needed)
        throw std::invalid_argument(what + "the secret must have at least " +
                                    std::to_string(needed) + " bytes");
    key k(std::move(kid), alg);
    k.secret = std::move(secret);
    impl_->keys.push_back(std::move(k));
}

const jwt_keys::key* jwt_keys::find(std::optional<std::string_view> kid) const {
    if (!impl_) return nullptr;
    if (!kid) return impl_->keys.size() == 1 ? &impl_->keys.front() : nullptr;
    for (const auto& k : impl_->keys)
        if (k.kid == *kid) return &k;
    return nullptr;
}

bool jwt_keys::key::verifies(std::string_view input, std::string_view signature) const {
    const EVP_MD* md = digest_of(alg);
    if (family_of(alg) == family::hmac) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!HMAC(md, secret.data(), static_cast<int>(secret.size()),
                  reinterpret_cast<const unsigned char*>(input.data()), input.size(), mac, &len)) {
            ERR_clear_error();
            return false;
        }
        return signature.size() == len && CRYPTO_memcmp(mac, signature.data(), len) == 0;
    }

    // ES: JOSE sends R and S as two big-endian numbers of the curve's size; OpenSSL verifies
    // the DER ECDSA-Sig-Value of RFC 3279.
    std::string der;
    if (family_of(alg) == family::ec) {
        if (signature.size() != 2 * ec_size) return false;
        const auto* raw = reinterpret_cast<const unsigned char*>(signature.data());
        ECDSA_SIG* sig = ECDSA_SIG_new();
        BIGNUM* r = BN_bin2bn(raw, static_cast<int>(ec_size), nullptr);
        BIGNUM* s = BN_bin2bn(raw + ec_size, static_cast<int>(ec_size), nullptr);
        if (!sig || !r || !s || !ECDSA_SIG_set0(sig, r, s)) {
            BN_free(r);
            BN_free(s);
            ECDSA_SIG_free(sig);
            ERR_clear_error();
            return false;
        }
        unsigned char* out = nullptr;
        const int n = i2d_ECDSA_SIG(sig, &out);
        ECDSA_SIG_free(sig);
        if (n <= 0) {
            ERR_clear_error();
            return false;
        }
        der.assign(reinterpret_cast<const char*>(out), static_cast<std::size_t>(n));
        OPENSSL_free(out);
        signature = der;
    }

    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    const bool ok =
        ctx && EVP_DigestVerifyInit(ctx, nullptr, md, nullptr, pkey.get()) == 1 &&
        EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(signature.data()),
                         signature.size(), reinterpret_cast<const unsigned char*>(input.data()),
                         input.size()) == 1;
    EVP_MD_CTX_free(ctx);
    // A failed verification leaves errors on this thread's queue, where a later TLS call
    // would find them.
    if (!ok) ERR_clear_error();
    return ok;
}

std::optional<jwt_alg> parse_jwt_alg(std::string_view name) {
    for (auto a : {jwt_alg::hs256, jwt_alg::hs384, jwt_alg::hs512, jwt_alg::rs256, jwt_alg::rs384,
                   jwt_alg::rs512, jwt_alg::es256, jwt_alg::es384, jwt_alg::es512})
        if (to_string(a) == name) return a;
    return std::nullopt;
}

std::string_view to_string(jwt_alg alg) {
    switch (alg) {
        case jwt_alg::hs256:
            return "HS256";
        case jwt_alg::hs384:
            return "HS384";
        case jwt_alg::hs512:
            return "HS512";
        case jwt_alg::rs256:
            return "RS256";
        case jwt_alg::rs384:
            return "RS384";
        case jwt_alg::rs512:
            return "RS512";
        case jwt_alg::es256:
            return "ES256";
        case jwt_alg::es384:
            return "ES384";
        case jwt_alg::es512:
            break;
    }
    return "ES512";
}

std::string_view describe(jwt_error e) {
    switch (e) {
        case jwt_error::malformed:
            return "the token is not a well-formed JWT";
        case jwt_error::too_large:
            return "the token is too large";
        case jwt_error::algorithm:
            return "the token's algorithm is not accepted";
        case jwt_error::unknown_key:
            return "the token's key is not known";
        case jwt_error::signature:
            return "the token's signature does not verify";
        case jwt_error::expired:
            return "the token has expired";
        case jwt_error::not_yet_valid:
            return "the token is not valid yet";
        case jwt_error::issued_in_future:
            return "the token is issued in the future";
        case jwt_error::issuer:
            return "the token's issuer is not accepted";
        case jwt_error::audience:
            return "the token is not meant for this server";
        case jwt_error::no_tenant:
            break;
    }
    return "the token names no tenant";
}

std::variant<jwt_claims, jwt_error> verify_jwt(std::string_view token, const jwt_keys& keys,
                                               const jwt_rules& rules, core::millis now) {
    // Size first: nothing of an oversized token is decoded.
    if (token.size() > rules.max_size) return jwt_error::too_large;

    // Three base64url parts.
    const auto dot1 = token.find('.');
    if (dot1 == std::string_view::npos) return jwt_error::malformed;
    const auto dot2 = token.find('.', dot1 + 1);
    if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos)
        return jwt_error::malformed;
    auto header_text = base64url_decode(token.substr(0, dot1));
    auto payload_text = base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1));
    auto signature = base64url_decode(token.substr(dot2 + 1));
    if (!header_text || !payload_text || !signature) return jwt_error::malformed;

    // The header names the algorithm and the key; the key's configuration decides both.
    auto header = parse_object(*header_text);
    if (!header) return jwt_error::malformed;
    const json::value* alg = member(*header, "alg");
    const json::value* kid = member(*header, "kid");
    if (!alg || !alg->is_string() || (kid && !kid->is_string())) return jwt_error::malformed;
    // No extension is understood, so none marked critical can be honoured (RFC 7515 §4.1.11).
    if (member(*header, "crit")) return jwt_error::malformed;
    const auto named = parse_jwt_alg(alg->get_string());
    if (!named) return jwt_error::algorithm;
    std::optional<std::string_view> wanted;
    if (kid) wanted = kid->get_string();
    const jwt_keys::key* key = keys.find(wanted);
    if (!key) return jwt_error::unknown_key;
    if (key->alg != *named) return jwt_error::algorithm;
    if (!key->verifies(token.substr(0, dot2), *signature)) return jwt_error::signature;

    // The claims, now that they are the issuer's.
    auto payload = parse_object(*payload_text);
    if (!payload) return jwt_error::malformed;
    const json::value* exp = member(*payload, "exp");
    const json::value* nbf = member(*payload, "nbf");
    const json::value* iat = member(*payload, "iat");
    const json::value* iss = member(*payload, "iss");
    const json::value* aud = member(*payload, "aud");
    const json::value* sub = member(*payload, "sub");
    const json::value* scope = member(*payload, "scope");
    const json::value* kinds = member(*payload, "buzzer_kinds");
    const json::value* tenant = member(*payload, rules.tenant_claim);
    if (!exp) return jwt_error::malformed;
    const auto exp_ms = numeric_date(*exp);
    const auto nbf_ms = nbf ? numeric_date(*nbf) : std::optional<core::millis>(0);
    const auto iat_ms = iat ? numeric_date(*iat) : std::optional<core::millis>(0);
    if (!exp_ms || !nbf_ms || !iat_ms) return jwt_error::malformed;
    if ((iss && !iss->is_string()) || (sub && !sub->is_string()) || (scope && !scope->is_string()))
        return jwt_error::malformed;
    if (aud && !aud->is_string()) {
        if (!aud->is_array()) return jwt_error::malformed;
        for (const auto& a : aud->get_array())
            if (!a.is_string()) return jwt_error::malformed;
    }
    jwt_claims claims;
    if (kinds) {
        if (!kinds->is_array()) return jwt_error::malformed;
        auto& list = claims.kinds.emplace();
        for (const auto& k : kinds->get_array()) {
            if (!k.is_string()) return jwt_error::malformed;
            list.emplace_back(k.get_string());
        }
    }

    const core::millis leeway = std::clamp<long>(rules.leeway_s, 0, 1'000'000'000) * 1000L;
    if (now >= *exp_ms + leeway) return jwt_error::expired;
    if (nbf && now + leeway < *nbf_ms) return jwt_error::not_yet_valid;
    if (iat && *iat_ms > now + leeway) return jwt_error::issued_in_future;
    if (!iss || iss->get_string() != rules.issuer) return jwt_error::issuer;
    bool for_us = false;
    if (aud && aud->is_string()) for_us = aud->get_string() == rules.audience;
    if (aud && aud->is_array())
        for (const auto& a : aud->get_array()) for_us = for_us || a.get_string() == rules.audience;
    if (!for_us) return jwt_error::audience;
    if (!tenant || !tenant->is_string() || tenant->get_string().empty())
        return jwt_error::no_tenant;

    claims.tenant = tenant->get_string();
    if (sub) claims.subject = sub->get_string();
    if (scope) claims.role = role_of(scope->get_string());
    claims.expires_at = *exp_ms;
    return claims;
}

}  // namespace buzzer::auth
