#include "auth/authenticator.hpp"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_set>
#include <variant>

#include "auth/api_key.hpp"
#include "auth/base64url.hpp"
#include "auth/bearer.hpp"
#include "auth/jwt.hpp"
#include "auth/limits.hpp"
#include "auth/session.hpp"
#include "core/log.hpp"
#include "store/store.hpp"

namespace buzzer::auth {
namespace asio = boost::asio;

namespace {

// Verified credentials kept in memory at most; beyond, the oldest are checked again.
constexpr std::size_t cache_capacity = 20'000;
// A key in the cache is read again after this long even if nothing revoked it.
constexpr core::millis key_recheck_ms = 10 * 60 * 1000;

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error(path + ": cannot read the file");
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The JWT keys and rules of one configuration.
struct jwt_setup {
    jwt_keys keys;
    jwt_rules rules;
};

std::shared_ptr<const jwt_setup> load_jwt(const settings& s) {
    if (!s.jwt) return nullptr;
    auto out = std::make_shared<jwt_setup>();
    out->rules.issuer = s.jwt->issuer;
    out->rules.audience = s.jwt->audience;
    out->rules.tenant_claim = s.jwt->tenant_claim;
    out->rules.leeway_s = s.jwt->leeway_s;
    for (const auto& k : s.jwt->keys) {
        auto alg = parse_jwt_alg(k.alg);
        const auto& file = k.pem_file.empty() ? k.secret_file : k.pem_file;
        if (!alg) throw std::runtime_error("auth.jwt: unsupported algorithm " + k.alg);
        try {
            if (k.pem_file.empty())
                out->keys.add_secret(k.kid, *alg, read_file(file));
            else
                out->keys.add_pem(k.kid, *alg, read_file(file));
        } catch (const std::invalid_argument& e) {
            throw std::runtime_error(file + ": " + e.what());
        }
    }
    return out;
}

verdict refuse(refusal why, std::string detail, bool sent, std::string credential = {}) {
    verdict v;
    v.why = why;
    v.detail = std::move(detail);
    v.credential_sent = sent;
    v.credential = std::move(credential);
    return v;
}

// "jwt:" and the `sub` a token claims, unverified, for the log line of its refusal; empty
// when it has none that is printable.
std::string claimed_subject(std::string_view token) {
    auto first = token.find('.');
    auto second = first == std::string_view::npos ? first : token.find('.', first + 1);
    if (second == std::string_view::npos) return {};
    auto payload = base64url_decode(token.substr(first + 1, second - first - 1));
    if (!payload) return {};
    boost::system::error_code ec;
    auto v = boost::json::parse(*payload, ec);
    if (ec || !v.is_object()) return {};
    const auto* sub = v.get_object().if_contains("sub");
    if (!sub || !sub->is_string() || sub->get_string().size() > 128) return {};
    std::string out = "jwt:";
    for (char c : sub->get_string()) out += (c >= 0x20 && c < 0x7f) ? c : '?';
    return out;
}

verdict accept(std::shared_ptr<const core::principal> who) {
    verdict v;
    v.who = std::move(who);
    v.credential_sent = true;
    return v;
}

refusal refusal_of(jwt_error e) {
    switch (e) {
        case jwt_error::expired:
            return refusal::expired;
        case jwt_error::malformed:
            return refusal::malformed;
        default:
            return refusal::invalid;
    }
}

// A cached API key: who it stands for.
struct key_entry {
    std::shared_ptr<const core::principal> who;
};

}  // namespace

std::string_view to_string(refusal r) {
    switch (r) {
        case refusal::missing:
            return "missing";
        case refusal::malformed:
            return "malformed";
        case refusal::unknown:
            return "unknown";
        case refusal::revoked:
            return "revoked";
        case refusal::expired:
            return "expired";
        case refusal::invalid:
            return "invalid";
        case refusal::forbidden:
            break;
    }
    return "forbidden";
}

asio::awaitable<created_key> create_key(store::store& db, key_request request) {
    auto made = generate_api_key();
    const auto now = core::now_ms();
    store::api_key_record record;
    record.id = made.id;
    record.tenant = request.tenant;
    record.role = request.role;
    record.name = request.name;
    record.kinds = request.kinds;
    record.created_at = now;
    if (request.expires_in_s)
        record.expires_at = now + static_cast<core::millis>(*request.expires_in_s * 1000);
    created_key out{made.id,       made.text, request.tenant,   request.role, request.name,
                    request.kinds, now,       record.expires_at};
    co_await db.create_key(std::move(record), std::move(made.hash));
    co_return out;
}

struct authenticator::impl {
    impl(store::store& db, std::string secret) : db(db), cookie_secret(std::move(secret)) {}

    store::store& db;
    const std::string cookie_secret;
    // Guards the settings, the JWT set-up and the revoked ids; the caches lock themselves.
    mutable std::mutex mutex;
    std::shared_ptr<const settings> config;
    std::shared_ptr<const jwt_setup> jwt;
    std::unordered_set<std::string> revoked_ids;
    std::int64_t version = 0;  ///< of the key changes seen (watch() only)
    bool stopping = false;
    asio::steady_timer* timer = nullptr;  ///< watch()'s, while it runs
    verified_cache<key_entry> keys{cache_capacity};
    verified_cache<std::shared_ptr<const core::principal>> tokens{cache_capacity};
    std::array<std::atomic<std::uint64_t>, std::size(all_refusals)> counts{};

    bool is_revoked(const std::string& id) const {
        std::lock_guard lock(mutex);
        return revoked_ids.count(id) > 0;
    }

    asio::awaitable<verdict> check_key(std::string_view text) {
        const auto now = core::now_ms();
        auto hash = hash_api_key(text);
        if (auto hit = keys.find(hash, now)) {
            if (!is_revoked(hit->who->credential)) co_return accept(hit->who);
            co_return refuse(refusal::revoked, "the API key has been revoked", true,
                             hit->who->credential);
        }
        auto found = co_await db.find_key(hash);
        if (!found) co_return refuse(refusal::unknown, "the API key is not known", true);
        if (found->revoked_at)
            co_return refuse(refusal::revoked, "the API key has been revoked", true, found->id);
        if (found->expires_at && *found->expires_at <= now)
            co_return refuse(refusal::expired, "the API key has expired", true, found->id);
        auto who = std::make_shared<core::principal>();
        who->tenant = found->tenant;
        who->level = found->role;
        who->kinds = found->kinds;
        who->credential = found->id;
        who->expires_at = found->expires_at.value_or(0);
        const auto until =
            std::min(found->expires_at.value_or(now + key_recheck_ms), now + key_recheck_ms);
        {
            // Checked and cached under the lock that watch() revokes under: a revocation seen
            // between the read and here is not undone by a stale entry.
            std::lock_guard lock(mutex);
            if (revoked_ids.count(found->id))
                co_return refuse(refusal::revoked, "the API key has been revoked", true, found->id);
            keys.put(hash, key_entry{who}, until);
        }
        co_return accept(std::move(who));
    }

    verdict check_jwt(std::string_view token) {
        std::shared_ptr<const jwt_setup> setup;
        {
            std::lock_guard lock(mutex);
            setup = jwt;
        }
        if (!setup)
            return refuse(refusal::malformed, "the credential is neither an API key nor a token",
                          true);
        const auto now = core::now_ms();
        // The hash of the whole token: a token differing in one bit is not a hit.
        auto hash = hash_api_key(token);
        if (auto hit = tokens.find(hash, now)) return accept(*hit);
        auto checked = verify_jwt(token, setup->keys, setup->rules, now);
        if (auto* e = std::get_if<jwt_error>(&checked))
            return refuse(refusal_of(*e), std::string(describe(*e)), true, claimed_subject(token));
        auto& claims = std::get<jwt_claims>(checked);
        if (!claims.role)
            return refuse(refusal::forbidden, "the token's scope grants no buzzer role", true,
                          "jwt:" + claims.subject);
        auto who = std::make_shared<core::principal>();
        who->tenant = claims.tenant;
        who->level = *claims.role;
        who->kinds = claims.kinds;
        who->credential = "jwt:" + claims.subject;
        who->expires_at = claims.expires_at;
        // Kept no longer than the token is valid (without leeway).
        tokens.put(hash, who, claims.expires_at);
        return accept(std::move(who));
    }

    verdict check_cookie(std::string_view value) {
        auto s = open_session(value, cookie_secret, core::now_ms());
        if (!s)
            return refuse(refusal::invalid, "the session cookie is not valid or has expired", true);
        if (s->credential.starts_with("key_") && is_revoked(s->credential))
            return refuse(refusal::revoked, "the session's API key has been revoked", true,
                          s->credential);
        auto who = std::make_shared<core::principal>();
        who->tenant = std::move(s->tenant);
        who->level = s->role;
        who->kinds = std::move(s->kinds);
        who->credential = std::move(s->credential);
        who->expires_at = s->expires_at;
        return accept(std::move(who));
    }
};

authenticator::authenticator(store::store& db, const settings& s, std::string cookie_secret)
    : impl_(std::make_unique<impl>(db, std::move(cookie_secret))) {
    reload(s);
}

authenticator::~authenticator() = default;

void authenticator::reload(const settings& s) {
    auto jwt = load_jwt(s);
    auto config = std::make_shared<const settings>(s);
    {
        std::lock_guard lock(impl_->mutex);
        impl_->jwt = std::move(jwt);
        impl_->config = std::move(config);
    }
    // Tokens verified with keys that may be gone.
    impl_->tokens.erase_if([](const auto&) { return true; });
}

bool authenticator::enabled() const { return current()->enabled; }

std::shared_ptr<const settings> authenticator::current() const {
    std::lock_guard lock(impl_->mutex);
    return impl_->config;
}

asio::awaitable<verdict> authenticator::check(std::optional<std::string_view> authorization,
                                              std::optional<std::string_view> cookie_header,
                                              bool safe_method) {
    if (authorization) {
        auto b = parse_authorization(*authorization);
        if (b.kind != bearer::token)
            co_return refuse(refusal::malformed,
                             "the Authorization header is not a Bearer credential", true);
        if (looks_like_api_key(b.credential)) co_return co_await impl_->check_key(b.credential);
        co_return impl_->check_jwt(b.credential);
    }
    // The cookie counts only where it cannot change anything (no CSRF).
    if (safe_method && cookie_header) {
        if (auto value = find_cookie(*cookie_header, session_cookie))
            co_return impl_->check_cookie(*value);
    }
    co_return refuse(refusal::missing, "this request needs a credential", false);
}

bool authenticator::is_metrics_token(std::string_view authorization) const {
    auto token = current()->metrics_token;
    if (token.empty()) return false;
    auto b = parse_authorization(authorization);
    return b.kind == bearer::token && same_hash(b.credential, token);
}

std::string authenticator::session_for(const core::principal& who) const {
    session s;
    s.tenant = who.tenant;
    s.role = who.level;
    s.kinds = who.kinds;
    s.credential = who.credential;
    const auto longest = core::now_ms() + session_lifetime_ms;
    s.expires_at = who.expires_at ? std::min(who.expires_at, longest) : longest;
    return seal_session(s, impl_->cookie_secret);
}

void authenticator::revoked(const std::string& id) {
    std::lock_guard lock(impl_->mutex);
    impl_->revoked_ids.insert(id);
    impl_->keys.erase_if([&](const key_entry& e) { return e.who->credential == id; });
}

asio::awaitable<void> authenticator::refresh() {
    auto changes = co_await impl_->db.key_changes_since(impl_->version);
    for (const auto& id : changes.revoked) revoked(id);
    impl_->version = changes.version;
}

asio::awaitable<void> authenticator::watch(std::chrono::milliseconds period) {
    asio::steady_timer timer(co_await asio::this_coro::executor);
    {
        std::lock_guard lock(impl_->mutex);
        if (impl_->stopping) co_return;
        impl_->timer = &timer;
    }
    struct forget {
        impl& i;
        ~forget() {
            std::lock_guard lock(i.mutex);
            i.timer = nullptr;
        }
    } forget_timer{*impl_};
    for (;;) {
        try {
            co_await refresh();
        } catch (const std::exception& e) {
            core::log(core::level::warn, std::string("following key revocations: ") + e.what());
        }
        // Checked after the refresh, on the strand that stop()'s cancel is posted to: a stop
        // during the refresh found no wait to cancel, and must not be waited out here.
        {
            std::lock_guard lock(impl_->mutex);
            if (impl_->stopping) co_return;
        }
        timer.expires_after(period);
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

void authenticator::stop() {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
    if (impl_->timer) {
        auto* t = impl_->timer;
        asio::post(t->get_executor(), [this] {
            std::lock_guard inner(impl_->mutex);
            if (impl_->timer) impl_->timer->cancel();
        });
    }
}

void authenticator::count(refusal r) {
    impl_->counts[static_cast<std::size_t>(r)].fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t authenticator::refusals(refusal r) const {
    return impl_->counts[static_cast<std::size_t>(r)].load(std::memory_order_relaxed);
}

}  // namespace buzzer::auth
