#include "support/jwt_sign.hpp"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>
#include <stdexcept>

#include "auth/base64url.hpp"

namespace buzzer::test {
namespace {

template <class T, void (*Free)(T*)>
struct deleter {
    void operator()(T* p) const noexcept { Free(p); }
};
using pkey_ptr = std::unique_ptr<EVP_PKEY, deleter<EVP_PKEY, EVP_PKEY_free>>;
using bio_ptr = std::unique_ptr<BIO, deleter<BIO, BIO_free_all>>;
using md_ctx_ptr = std::unique_ptr<EVP_MD_CTX, deleter<EVP_MD_CTX, EVP_MD_CTX_free>>;
using x509_ptr = std::unique_ptr<X509, deleter<X509, X509_free>>;
using sig_ptr = std::unique_ptr<ECDSA_SIG, deleter<ECDSA_SIG, ECDSA_SIG_free>>;

[[noreturn]] void fail(const std::string& what) {
    ERR_clear_error();
    throw std::runtime_error(what);
}

std::string text_of(BIO* bio) {
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<std::size_t>(n));
}

const EVP_MD* digest_of(auth::jwt_alg alg) {
    using auth::jwt_alg;
    if (alg == jwt_alg::hs256 || alg == jwt_alg::rs256 || alg == jwt_alg::es256)
        return EVP_sha256();
    if (alg == jwt_alg::hs384 || alg == jwt_alg::rs384 || alg == jwt_alg::es384)
        return EVP_sha384();
    return EVP_sha512();
}

}  // namespace

key_pair make_key_pair(std::string_view kind) {
    pkey_ptr key;
    if (kind.starts_with("RSA-")) {
        const std::size_t bits = std::stoul(std::string(kind.substr(4)));
        key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits));
    } else {
        key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", std::string(kind).c_str()));
    }
    if (!key) fail("cannot make a key pair of " + std::string(kind));
    bio_ptr priv(BIO_new(BIO_s_mem()));
    bio_ptr pub(BIO_new(BIO_s_mem()));
    if (!priv || !pub ||
        !PEM_write_bio_PrivateKey(priv.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) ||
        !PEM_write_bio_PUBKEY(pub.get(), key.get()))
        fail("cannot write the key pair as PEM");
    return {text_of(priv.get()), text_of(pub.get())};
}

std::string make_certificate(const key_pair& pair) {
    bio_ptr in(BIO_new_mem_buf(pair.private_pem.data(), static_cast<int>(pair.private_pem.size())));
    pkey_ptr key(in ? PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr) : nullptr);
    x509_ptr cert(X509_new());
    if (!key || !cert) fail("cannot load the private key");
    X509_NAME* name = X509_get_subject_name(cert.get());
    const auto* cn = reinterpret_cast<const unsigned char*>("buzzer test");
    if (!X509_set_version(cert.get(), 2) ||
        !ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, cn, -1, -1, 0) ||
        !X509_set_issuer_name(cert.get(), name) || !X509_set_pubkey(cert.get(), key.get()) ||
        !X509_sign(cert.get(), key.get(), EVP_sha256()))
        fail("cannot make the certificate");
    bio_ptr out(BIO_new(BIO_s_mem()));
    if (!out || !PEM_write_bio_X509(out.get(), cert.get())) fail("cannot write the certificate");
    return text_of(out.get());
}

std::string sign_jwt(std::string_view header_json, std::string_view payload_json, auth::jwt_alg alg,
                     std::string_view key) {
    const std::string input =
        auth::base64url_encode(header_json) + "." + auth::base64url_encode(payload_json);
    const auto* data = reinterpret_cast<const unsigned char*>(input.data());
    const EVP_MD* md = digest_of(alg);
    std::string signature;
    const auto name = auth::to_string(alg);
    if (name.starts_with("HS")) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int len = 0;
        if (!HMAC(md, key.data(), static_cast<int>(key.size()), data, input.size(), mac, &len))
            fail("HMAC failed");
        signature.assign(reinterpret_cast<const char*>(mac), len);
    } else {
        bio_ptr in(BIO_new_mem_buf(key.data(), static_cast<int>(key.size())));
        pkey_ptr pkey(in ? PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr) : nullptr);
        md_ctx_ptr ctx(EVP_MD_CTX_new());
        std::size_t len = 0;
        if (!pkey || !ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, pkey.get()) != 1 ||
            EVP_DigestSign(ctx.get(), nullptr, &len, data, input.size()) != 1)
            fail("cannot sign with the PEM private key");
        std::string der(len, '\0');
        auto* out = reinterpret_cast<unsigned char*>(der.data());
        if (EVP_DigestSign(ctx.get(), out, &len, data, input.size()) != 1) fail("signing failed");
        der.resize(len);
        signature = der;
        if (name.starts_with("ES")) {
            // JOSE wants R and S as fixed-size big-endian numbers, not the DER structure.
            const int size = (EVP_PKEY_get_bits(pkey.get()) + 7) / 8;
            const auto* p = reinterpret_cast<const unsigned char*>(der.data());
            sig_ptr sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
            if (!sig) fail("cannot read the ECDSA signature");
            signature.assign(2 * static_cast<std::size_t>(size), '\0');
            auto* raw = reinterpret_cast<unsigned char*>(signature.data());
            if (BN_bn2binpad(ECDSA_SIG_get0_r(sig.get()), raw, size) != size ||
                BN_bn2binpad(ECDSA_SIG_get0_s(sig.get()), raw + size, size) != size)
                fail("cannot encode the ECDSA signature");
        }
    }
    return input + "." + auth::base64url_encode(signature);
}

}  // namespace buzzer::test
