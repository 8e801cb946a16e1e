#include "auth/api_key.hpp"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <stdexcept>

#include "core/random.hpp"

namespace buzzer::auth {
namespace {

constexpr std::string_view base62 =
    "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr std::string_view key_prefix = "bzk_";
constexpr std::string_view id_prefix = "key_";
// 43 characters of log2(62) ≈ 5.954 bits each carry 256 bits.
constexpr std::size_t key_characters = 43;
constexpr std::size_t id_characters = 20;

// `n` base62 characters. A byte below 248 = 4 · 62 maps to byte % 62, each character equally
// likely; bytes from 248 up are dropped, so that no character is favoured (rejection sampling).
std::string random_base62(std::size_t n) {
    std::string out;
    out.reserve(n);
    unsigned char pool[64];
    while (out.size() < n) {
        core::random_bytes(pool, sizeof pool);
        for (unsigned char b : pool)
            if (b < 248 && out.size() < n) out += base62[b % 62];
    }
    OPENSSL_cleanse(pool, sizeof pool);
    return out;
}

}  // namespace

generated_key generate_api_key() {
    generated_key k;
    k.id = std::string(id_prefix) + random_base62(id_characters);
    k.text = std::string(key_prefix) + random_base62(key_characters);
    k.hash = hash_api_key(k.text);
    return k;
}

std::string hash_api_key(std::string_view text) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (EVP_Digest(text.data(), text.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
        ERR_clear_error();
        throw std::runtime_error("SHA-256 failed");
    }
    static constexpr char hex[] = "0123456789abcdef";
    std::string out;
    out.reserve(2 * len);
    for (unsigned int i = 0; i < len; ++i) {
        out += hex[digest[i] >> 4];
        out += hex[digest[i] & 15];
    }
    return out;
}

bool looks_like_api_key(std::string_view text) {
    if (text.size() < 40 || text.size() > 128 || !text.starts_with(key_prefix)) return false;
    return text.substr(key_prefix.size()).find_first_not_of(base62) == std::string_view::npos;
}

bool same_hash(std::string_view a, std::string_view b) {
    return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_secret(std::size_t bytes) {
    std::string out(bytes, '\0');
    core::random_bytes(out.data(), out.size());
    return out;
}

}  // namespace buzzer::auth
