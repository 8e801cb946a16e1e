// /keys: a tenant's admins make, list and revoke the tenant's API keys.
#include <boost/json.hpp>
#include <cmath>

#include "api/access.hpp"
#include "api/common.hpp"
#include "store/store.hpp"

namespace buzzer::api {
namespace asio = boost::asio;
namespace json = boost::json;
using http::http_error;

namespace {

constexpr double max_expires_in_s = 10.0 * 365 * 86400;

json::value time_or_null(std::optional<core::millis> t) {
    if (!t) return nullptr;
    return json::value(core::format_time(*t));
}

json::value kinds_or_null(const std::optional<std::vector<std::string>>& kinds) {
    if (!kinds) return nullptr;
    json::array a;
    for (const auto& k : *kinds) a.emplace_back(k);
    return a;
}

json::object describe(const std::string& id, const std::string& tenant, core::role role,
                      const std::string& name, const std::optional<std::vector<std::string>>& kinds,
                      core::millis created_at, std::optional<core::millis> expires_at) {
    json::object o;
    o["id"] = id;
    o["tenant"] = tenant;
    o["role"] = std::string(core::to_string(role));
    o["name"] = name;
    o["kinds"] = kinds_or_null(kinds);
    o["created_at"] = core::format_time(created_at);
    o["expires_at"] = time_or_null(expires_at);
    return o;
}

bool kind_name_ok(std::string_view name) {
    return !name.empty() && name.size() <= 64 &&
           name.find_first_not_of(
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") ==
               std::string_view::npos;
}

// The key a POST /keys asks for, checked against what its admin may hand out.
auth::key_request parse_key_request(const http::request& req, const core::principal& who) {
    auto ct = req.header("content-type");
    if (!http::iequals(http::trim_ows(ct.substr(0, ct.find(';'))), "application/json"))
        throw http_error{415, "unsupported-media-type", "the body must be application/json"};
    boost::system::error_code ec;
    json::value body = json::parse(req.body, ec);
    if (ec) throw http_error{400, "malformed-json", "the body is not valid JSON: " + ec.message()};
    if (!body.is_object())
        throw http_error{400, "invalid-request", "the body must be a JSON object"};
    const auto& o = body.get_object();
    auth::key_request k;
    k.tenant = who.tenant;
    const auto* role = o.if_contains("role");
    if (!role || role->is_null()) throw http_error{400, "invalid-request", "role is required"};
    if (!role->is_string()) throw http_error{400, "invalid-request", "role must be a string"};
    auto parsed = core::parse_role(role->get_string());
    if (!parsed) throw http_error{422, "invalid-request", "role must be read, write or admin"};
    k.role = *parsed;
    if (const auto* name = o.if_contains("name"); name && !name->is_null()) {
        if (!name->is_string()) throw http_error{400, "invalid-request", "name must be a string"};
        if (name->get_string().size() > 200)
            throw http_error{422, "invalid-request", "name must be at most 200 characters"};
        k.name = std::string(name->get_string());
    }
    if (const auto* kinds = o.if_contains("kinds"); kinds && !kinds->is_null()) {
        if (!kinds->is_array())
            throw http_error{400, "invalid-request", "kinds must be a list of kind names"};
        std::vector<std::string> list;
        for (const auto& v : kinds->get_array()) {
            if (!v.is_string())
                throw http_error{400, "invalid-request", "kinds must be a list of kind names"};
            if (!kind_name_ok(v.get_string()))
                throw http_error{422, "invalid-request",
                                 "a kind name is 1 to 64 letters, digits, '_', '.' or '-'"};
            list.emplace_back(v.get_string());
        }
        if (list.size() > 256)
            throw http_error{422, "invalid-request", "kinds lists at most 256 kinds"};
        k.kinds = std::move(list);
    }
    if (const auto* exp = o.if_contains("expires_in_s"); exp && !exp->is_null()) {
        if (!exp->is_number())
            throw http_error{400, "invalid-request", "expires_in_s must be a number"};
        double s = exp->to_number<double>();
        if (!(s > 0 && s <= max_expires_in_s))
            throw http_error{422, "invalid-request",
                             "expires_in_s must be greater than 0 and at most 315360000"};
        k.expires_in_s = s;
    }
    // An admin limited to some kinds cannot hand out a key for more.
    if (who.kinds) {
        if (!k.kinds)
            throw http_error{403, "forbidden",
                             "this credential is limited to some kinds; so must its keys be"};
        for (const auto& kind : *k.kinds)
            if (!who.may_submit(kind))
                throw http_error{403, "forbidden", "this credential may not hand out kind " + kind};
    }
    return k;
}

asio::awaitable<http::response> create(context& ctx, http::request& req) {
    co_await authorize(ctx, req, core::role::admin);
    const auto& who = caller(req);
    auto request = parse_key_request(req, who);
    auto made = co_await auth::create_key(ctx.db, std::move(request));
    auto body = describe(made.id, made.tenant, made.role, made.name, made.kinds, made.created_at,
                         made.expires_at);
    body["key"] = made.text;
    auto r = json_response(201, core::to_json(body));
    r.set("Location", ctx.base_url + "/keys/" + made.id);
    r.set("Cache-Control", "no-store");
    co_return r;
}

asio::awaitable<http::response> list(context& ctx, http::request& req) {
    co_await authorize(ctx, req, core::role::admin);
    std::optional<store::tenant_id> tenant = tenant_of(req);
    auto keys = co_await ctx.db.list_keys(std::move(tenant));
    json::array out;
    for (const auto& k : keys)
        out.push_back(
            describe(k.id, k.tenant, k.role, k.name, k.kinds, k.created_at, k.expires_at));
    json::object body;
    body["keys"] = std::move(out);
    co_return json_response(200, core::to_json(body));
}

asio::awaitable<http::response> revoke(context& ctx, http::request& req) {
    co_await authorize(ctx, req, core::role::admin);
    std::string id = req.params.at(0);
    std::optional<store::tenant_id> tenant = tenant_of(req);
    bool done = co_await ctx.db.revoke_key(std::move(tenant), id, core::now_ms());
    if (!done) throw http_error{404, "not-found", "no key " + id};
    ctx.gate.credentials.revoked(id);
    http::response r;
    r.status = 204;
    co_return r;
}

}  // namespace

void add_key_routes(http::router& r, context& ctx) {
    r.add("POST", "/keys", [&ctx](http::request& req) { return create(ctx, req); });
    r.add("GET", "/keys", [&ctx](http::request& req) { return list(ctx, req); });
    r.add("DELETE", "/keys/{id}", [&ctx](http::request& req) { return revoke(ctx, req); });
}

}  // namespace buzzer::api
