#include "runtime/config.hpp"

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <boost/url/parse.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <fstream>
#include <span>
#include <sstream>
#include <type_traits>
#include <variant>

#include "auth/settings.hpp"
#include "core/log.hpp"
#include "core/operation.hpp"
#include "jobs/schema.hpp"
#include "store/libraries.hpp"
#include "store/store.hpp"

namespace buzzer::runtime {
namespace json = boost::json;
namespace po = boost::program_options;

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& key, const std::string& what) {
    throw config_error(file + ": " + key + ": " + what);
}

double number(const json::value& v, const std::string& file, const std::string& key, double lo,
              double hi) {
    if (!v.is_number()) fail(file, key, "must be a number");
    double d = v.to_number<double>();
    if (!(d >= lo && d <= hi))
        fail(file, key,
             "must be between " + core::number_text(lo) + " and " + core::number_text(hi));
    return d;
}

std::uint64_t whole(const json::value& v, const std::string& file, const std::string& key,
                    double lo, double hi) {
    double d = number(v, file, key, lo, hi);
    if (static_cast<double>(static_cast<std::uint64_t>(d)) != d)
        fail(file, key, "must be an integer");
    return static_cast<std::uint64_t>(d);
}

std::string text(const json::value& v, const std::string& file, const std::string& key) {
    if (!v.is_string()) fail(file, key, "must be a string");
    return std::string(v.get_string());
}

const json::object& object(const json::value& v, const std::string& file, const std::string& key) {
    if (!v.is_object()) fail(file, key, "must be an object");
    return v.get_object();
}

std::vector<std::pair<std::string, std::string>> string_map(const json::value& v,
                                                            const std::string& file,
                                                            const std::string& key) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& kv : object(v, file, key))
        out.emplace_back(std::string(kv.key()),
                         text(kv.value(), file, key + "." + std::string(kv.key())));
    return out;
}

jobs::exec_spec parse_exec(const json::value& v, const std::string& file, const std::string& at) {
    jobs::exec_spec e;
    for (const auto& kv : object(v, file, at)) {
        std::string key(kv.key());
        std::string path = at + "." + key;
        if (key == "argv") {
            if (!kv.value().is_array() || kv.value().get_array().empty())
                fail(file, path, "must be a non-empty list of strings");
            for (const auto& a : kv.value().get_array()) e.argv.push_back(text(a, file, path));
        } else if (key == "cwd") {
            e.cwd = text(kv.value(), file, path);
        } else if (key == "env") {
            e.env = string_map(kv.value(), file, path);
        } else if (key == "kill_grace_s") {
            e.kill_grace_s = number(kv.value(), file, path, 0, 3600);
        } else if (key == "max_output") {
            e.max_output = whole(kv.value(), file, path, 1024, 1LL << 32);
        } else {
            fail(file, path, "unknown key");
        }
    }
    if (e.argv.empty()) fail(file, at + ".argv", "is required");
    return e;
}

jobs::http_spec parse_http(const json::value& v, const std::string& file, const std::string& at) {
    jobs::http_spec h;
    for (const auto& kv : object(v, file, at)) {
        std::string key(kv.key());
        std::string path = at + "." + key;
        if (key == "url") {
            h.url = text(kv.value(), file, path);
            if (!h.url.starts_with("http://")) fail(file, path, "must be an http:// URL");
        } else if (key == "method") {
            h.method = text(kv.value(), file, path);
            if (h.method.empty() ||
                h.method.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos)
                fail(file, path, "must be an HTTP method such as POST");
        } else if (key == "headers") {
            h.headers = string_map(kv.value(), file, path);
        } else if (key == "max_body") {
            h.max_body = whole(kv.value(), file, path, 1024, 1LL << 32);
        } else {
            fail(file, path, "unknown key");
        }
    }
    if (h.url.empty()) fail(file, at + ".url", "is required");
    return h;
}

kind_config parse_kind(const std::string& name, const json::value& v, const std::string& file) {
    std::string at = "kinds." + name;
    if (name.empty() || name.size() > 64 ||
        name.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") !=
            std::string::npos)
        fail(file, at, "a kind name is 1 to 64 letters, digits, '_', '.' or '-'");
    kind_config k;
    k.name = name;
    for (const auto& kv : object(v, file, at)) {
        std::string key(kv.key());
        std::string path = at + "." + key;
        const auto& val = kv.value();
        if (key == "exec" || key == "http") {
            if (!k.executor.empty())
                fail(file, path, "a kind has exactly one executor (exec or http)");
            k.executor = key;
            if (key == "exec")
                k.exec = parse_exec(val, file, path);
            else
                k.http = parse_http(val, file, path);
        } else if (key == "timeout_s") {
            k.defaults.timeout_s = number(val, file, path, 0, 86400);
            if (k.defaults.timeout_s <= 0) fail(file, path, "must be greater than 0");
        } else if (key == "max_attempts") {
            k.defaults.max_attempts = static_cast<int>(whole(val, file, path, 1, 100));
        } else if (key == "concurrency") {
            k.defaults.concurrency = static_cast<unsigned>(whole(val, file, path, 0, 1e6));
        } else if (key == "priority") {
            if (!val.is_number()) fail(file, path, "must be a number");
            double d = val.to_number<double>();
            if (d < -100 || d > 100 || std::floor(d) != d)
                fail(file, path, "must be an integer between -100 and 100");
            k.defaults.priority = static_cast<int>(d);
        } else if (key == "backoff_base_s") {
            k.defaults.backoff_base_s = number(val, file, path, 0, 86400);
        } else if (key == "backoff_max_s") {
            k.defaults.backoff_max_s = number(val, file, path, 0, 86400);
        } else if (key == "input") {
            try {
                jobs::input_schema::parse(val, path);
            } catch (const std::invalid_argument& e) {
                throw config_error(file + ": " + e.what());
            }
            k.input = val;
        } else {
            fail(file, path, "unknown key");
        }
    }
    if (k.executor.empty()) fail(file, at, "needs an executor: \"exec\" or \"http\"");
    return k;
}

}  // namespace

namespace {

// A public base URL: absolute http or https with a host, a path at most; empty means none. The
// server drops trailing slashes itself.
bool public_url_ok(const std::string& url) {
    if (url.empty()) return true;
    auto parsed = boost::urls::parse_absolute_uri(url);
    return parsed && (parsed->scheme() == "http" || parsed->scheme() == "https") &&
           parsed->has_authority() && !parsed->host().empty() && !parsed->has_userinfo() &&
           !parsed->has_query() && !parsed->has_fragment();
}

// HOST:PORT with a port of 0..65535 ([::1]:8080 for IPv6).
bool listen_ok(const std::string& address) {
    auto colon = address.rfind(':');
    bool ok = colon != std::string::npos && colon > 0 && colon + 1 < address.size() &&
              colon + 6 >= address.size();
    for (std::size_t i = ok ? colon + 1 : address.size(); i < address.size(); ++i)
        ok = ok && address[i] >= '0' && address[i] <= '9';
    return ok && std::stol(address.substr(colon + 1)) <= 65535;
}

// A file path: not empty.
bool path_ok(const std::string& path) { return !path.empty(); }

// Empty (a new id each start), or 1 to 64 of [A-Za-z0-9._-].
bool node_id_ok(const std::string& id) {
    return id.size() <= 64 && std::all_of(id.begin(), id.end(), [](unsigned char c) {
               return std::isalnum(c) || c == '.' || c == '-' || c == '_';
           });
}

// One name of a choice and the value it stands for.
struct choice_value {
    std::string_view name;
    bool value;
};

constexpr choice_value synchronous_modes[] = {
    {"full", true}, {"normal", false}, {"FULL", true}, {"NORMAL", false}};

constexpr choice_value log_formats[] = {{"text", false}, {"json", true}};

// A level of the log.
bool log_level_ok(const std::string& name) {
    core::level ignored;
    return core::parse_level(name, ignored);
}

// One setting: its flag and its key in the configuration file, the values it takes, its help
// text and the field of `options` it sets. Its default is that field's in `options{}`. The
// command line and the file are both checked against it, with the same words.
struct setting {
    // What a value is: an integer or a number in [min, max], text that `valid` accepts, one of
    // `choices`, or true/false (in the file; the flag is a switch that sets `switch_sets`).
    enum class type { integer, number, text, choice, toggle };
    // Where the value goes.
    using field = std::variant<unsigned options::*, std::size_t options::*, double options::*,
                               std::string options::*, bool options::*>;

    std::string_view flag;        ///< without the leading "--"
    std::string_view key;         ///< in the configuration file
    type kind = type::text;       ///< what the value is
    field target;                 ///< where it goes
    std::string_view value_name;  ///< in --help: N, S, BYTES, HOST:PORT
    std::string_view help;        ///< what it is for, in --help
    double min = 0;               ///< integer and number: the smallest value allowed
    double max = 0;               ///< integer and number: the largest value allowed
    std::string_view allowed;     ///< text, choice: what the values are, in words
    bool (*valid)(const std::string&) = nullptr;  ///< text: accepts a value; null: any
    std::span<const choice_value> choices = {};   ///< choice: the names, the first ones shown
    bool switch_sets = false;                     ///< toggle: what the flag sets
};

// The constructors of table rows, each for the one type of field its kind of value fits.
setting row(std::string_view flag, std::string_view key, setting::type kind, setting::field target,
            std::string_view value_name, std::string_view help) {
    setting r;
    r.flag = flag;
    r.key = key;
    r.kind = kind;
    r.target = target;
    r.value_name = value_name;
    r.help = help;
    return r;
}

template <class T>
setting integer_row(std::string_view flag, std::string_view key, T options::*target,
                    std::string_view value_name, double min, double max, std::string_view help) {
    static_assert(std::is_same_v<T, unsigned> || std::is_same_v<T, std::size_t>,
                  "an integer setting goes to an unsigned or a size_t field");
    auto r = row(flag, key, setting::type::integer, target, value_name, help);
    r.min = min;
    r.max = max;
    return r;
}

setting number_row(std::string_view flag, std::string_view key, double options::*target,
                   std::string_view value_name, double min, double max, std::string_view help) {
    auto r = row(flag, key, setting::type::number, target, value_name, help);
    r.min = min;
    r.max = max;
    return r;
}

setting text_row(std::string_view flag, std::string_view key, std::string options::*target,
                 std::string_view value_name, std::string_view allowed,
                 bool (*valid)(const std::string&), std::string_view help) {
    auto r = row(flag, key, setting::type::text, target, value_name, help);
    r.allowed = allowed;
    r.valid = valid;
    return r;
}

setting choice_row(std::string_view flag, std::string_view key, bool options::*target,
                   std::string_view value_name, std::span<const choice_value> choices,
                   std::string_view allowed, std::string_view help) {
    auto r = row(flag, key, setting::type::choice, target, value_name, help);
    r.allowed = allowed;
    r.choices = choices;
    return r;
}

setting toggle_row(std::string_view flag, std::string_view key, bool options::*target,
                   bool switch_sets, std::string_view help) {
    auto r = row(flag, key, setting::type::toggle, target, "", help);
    r.switch_sets = switch_sets;
    return r;
}

// Every setting of `options` that the command line and the configuration file may set.
const std::vector<setting>& settings() {
    using o = options;
    static const std::vector<setting> table{
        text_row("listen", "listen", &o::listen, "HOST:PORT", "HOST:PORT such as 127.0.0.1:8080",
                 listen_ok, "address to serve on; port 0 picks a free one"),
        text_row("database", "database", &o::database, "PATH|URI",
                 "a file path or a postgresql:// URI", nullptr,
                 "SQLite database file, or PostgreSQL's postgresql:// URI (many nodes)"),
        integer_row("threads", "threads", &o::threads, "N", 0, 256, "I/O threads; 0: one per core"),
        text_row("public-url", "public_url", &o::public_url, "URL",
                 "an absolute http or https URL such as https://api.example.com", public_url_ok,
                 "base URL that makes links absolute; without it they are relative"),
        choice_row("synchronous", "synchronous", &o::synchronous_full, "MODE", synchronous_modes,
                   "full or normal", "SQLite synchronous mode"),
        toggle_row("no-builtin-kinds", "builtin_kinds", &o::builtin_kinds, false,
                   "do not register the sleep, echo and fail kinds"),
        integer_row("body-limit", "body_limit", &o::body_limit, "BYTES", 1024, 1LL << 30,
                    "largest request body"),
        integer_row("header-limit", "header_limit", &o::header_limit, "BYTES", 1024, 1 << 20,
                    "largest request header block"),
        number_row("header-timeout", "header_timeout_s", &o::header_timeout_s, "S", 0.1, 3600,
                   "seconds to receive a request's headers"),
        number_row("idle-timeout", "idle_timeout_s", &o::idle_timeout_s, "S", 0.1, 86400,
                   "seconds a keep-alive connection may stay idle, and to receive a body"),
        number_row("write-timeout", "write_timeout_s", &o::write_timeout_s, "S", 0.1, 3600,
                   "seconds to send a response, or one write of an event stream, before the "
                   "connection is closed"),
        integer_row("max-connections", "max_connections", &o::max_connections, "N", 1, 1e6,
                    "open connections; more are closed as soon as they are accepted"),
        number_row("sse-heartbeat", "sse_heartbeat_s", &o::sse_heartbeat_s, "S", 0.05, 3600,
                   "idle seconds before an event stream gets a keepalive comment"),
        integer_row("sse-retry-ms", "sse_retry_ms", &o::sse_retry_ms, "MS", 0, 3600000,
                    "reconnection delay sent to EventSource clients"),
        integer_row("sse-backlog", "sse_backlog", &o::sse_backlog, "N", 1, 1 << 20,
                    "events buffered for one slow stream before it is ended"),
        number_row("retention", "retention_s", &o::retention_s, "S", 0, 10 * 365 * 86400.0,
                   "seconds finished operations are kept"),
        number_row("shutdown-grace", "shutdown_grace_s", &o::shutdown_grace_s, "S", 0, 3600,
                   "seconds running jobs get to stop on shutdown"),
        integer_row("max-pending", "max_pending", &o::max_pending, "N", 1, 1e9,
                    "pending operations before submissions get 429"),
        integer_row("max-running", "max_running", &o::max_running, "N", 1, 1e6,
                    "operations running at once"),
        number_row("node-timeout", "node_timeout_s", &o::node_timeout_s, "S", 1, 3600,
                   "PostgreSQL: seconds without a heart-beat before a node is taken for dead "
                   "and its running operations are taken over"),
        choice_row("log-format", "log_format", &o::log_json, "FORMAT", log_formats, "text or json",
                   "log lines as text (TIME LEVEL message) or JSON objects"),
        text_row("log-level", "log_level", &o::log_level, "LEVEL", "debug, info, warn or error",
                 log_level_ok, "least severe level logged"),
        text_row("node-id", "node_id", &o::node_id, "ID",
                 "1 to 64 letters, digits, dots, dashes or underscores", node_id_ok,
                 "PostgreSQL: this node's id, kept across restarts; default: a new one each "
                 "start"),
        text_row("tls-cert", "tls_cert", &o::tls_cert, "FILE", "a file path", path_ok,
                 "PEM certificate chain, the leaf first: with --tls-key the listener speaks "
                 "HTTPS only (SIGHUP reloads both)"),
        text_row("tls-key", "tls_key", &o::tls_key, "FILE", "a file path", path_ok,
                 "PEM private key of --tls-cert"),
    };
    return table;
}

// What values `s` takes, for its messages and its help.
std::string allowed(const setting& s) {
    switch (s.kind) {
        case setting::type::integer:
            return "an integer from " + core::number_text(s.min) + " to " +
                   core::number_text(s.max);
        case setting::type::number:
            return "a number from " + core::number_text(s.min) + " to " + core::number_text(s.max);
        case setting::type::toggle:
            return "true or false";
        case setting::type::text:
        case setting::type::choice:
            break;
    }
    return std::string(s.allowed);
}

// The default of `s` as --help shows it; empty when there is none to show.
std::string default_text(const setting& s) {
    static const options defaults;
    return std::visit(
        [&](auto target) -> std::string {
            const auto& value = defaults.*target;
            using T = std::decay_t<decltype(value)>;
            if constexpr (std::is_same_v<T, std::string>) {
                return value;
            } else if constexpr (std::is_same_v<T, bool>) {
                for (const auto& c : s.choices)
                    if (c.value == value) return std::string(c.name);
                return value ? "true" : "false";
            } else {
                return core::number_text(static_cast<double>(value));
            }
        },
        s.target);
}

// The one message of a bad value of `s`: `where` names its source ("--threads",
// "FILE: threads"), `shown` is the value as written.
[[noreturn]] void refuse(const setting& s, const std::string& where, const std::string& shown) {
    throw config_error(where + ": must be " + allowed(s) + " (got " + shown + ")");
}

// Checks `value`, a number from the file or the command line, against `s`, and stores it.
void set_number(const setting& s, options& o, double value, const std::string& where,
                const std::string& shown) {
    const bool in_range = value >= s.min && value <= s.max;  // false for NaN
    if (!in_range || (s.kind == setting::type::integer && std::floor(value) != value))
        refuse(s, where, shown);
    std::visit(
        [&](auto target) {
            using T = std::decay_t<decltype(o.*target)>;
            if constexpr (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
                o.*target = static_cast<T>(value);
        },
        s.target);
}

// Checks `value`, text from the file or the command line, against `s`, and stores it.
void set_text(const setting& s, options& o, const std::string& value, const std::string& where,
              const std::string& shown) {
    if (s.kind == setting::type::choice) {
        for (const auto& c : s.choices)
            if (c.name == value) {
                o.*std::get<bool options::*>(s.target) = c.value;
                return;
            }
        refuse(s, where, shown);
    }
    if (s.valid && !s.valid(value)) refuse(s, where, shown);
    o.*std::get<std::string options::*>(s.target) = value;
}

// A flag's number: the whole text in decimal (an exponent is fine), else none.
std::optional<double> flag_number(const std::string& text) {
    double d = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
    if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return d;
}

// Applies the value of flag `s` as typed on the command line.
void apply_flag(const setting& s, options& o, const std::string& value) {
    const std::string where = "--" + std::string(s.flag);
    const std::string shown = value.empty() ? "\"\"" : value;
    switch (s.kind) {
        case setting::type::integer:
        case setting::type::number:
            if (auto d = flag_number(value)) return set_number(s, o, *d, where, shown);
            refuse(s, where, shown);
        case setting::type::text:
        case setting::type::choice:
            return set_text(s, o, value, where, shown);
        case setting::type::toggle:
            o.*std::get<bool options::*>(s.target) = s.switch_sets;
            return;
    }
}

// Applies the value of key `s` in the configuration file `file`.
void apply_key(const setting& s, options& o, const json::value& v, const std::string& file) {
    const std::string where = file + ": " + std::string(s.key);
    // As people write it (0.5, not 5E-1); a number past a double's range parsed as infinite.
    const std::string shown = v.is_double() && !std::isfinite(v.get_double())
                                  ? std::string("a number too large to represent")
                                  : core::to_json(v);
    switch (s.kind) {
        case setting::type::integer:
        case setting::type::number:
            if (v.is_number()) return set_number(s, o, v.to_number<double>(), where, shown);
            break;
        case setting::type::text:
        case setting::type::choice:
            if (v.is_string()) return set_text(s, o, std::string(v.get_string()), where, shown);
            break;
        case setting::type::toggle:
            if (v.is_bool()) {
                o.*std::get<bool options::*>(s.target) = v.get_bool();
                return;
            }
            break;
    }
    refuse(s, where, shown);
}

// The --help line of `s`: what it is for, its values, its default and its key in the file.
std::string help_line(const setting& s) {
    std::string out(s.help);
    if (s.kind == setting::type::toggle) {
        out += " (config key " + std::string(s.key) + ": " + allowed(s) + ", default " +
               default_text(s) + ")";
        return out;
    }
    out += " (" + allowed(s);
    if (auto d = default_text(s); !d.empty()) out += "; default " + d;
    out += "; config key " + std::string(s.key) + ")";
    return out;
}

}  // namespace

bool is_loopback(const std::string& listen) {
    auto host = listen.substr(0, listen.rfind(':'));
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    if (host == "localhost" || host == "::1") return true;
    boost::system::error_code ec;
    auto a = boost::asio::ip::make_address(host, ec);
    return !ec && a.is_loopback();
}

auth::settings check_access(const options& o) {
    auth::settings s;
    try {
        s = auth::parse_settings(o.auth, o.tenants, o.cors,
                                 o.config_file.empty() ? "configuration" : o.config_file);
    } catch (const std::invalid_argument& e) {
        throw config_error(e.what());
    }
    if (!s.enabled && !s.open_on_purpose && !is_loopback(o.listen))
        throw config_error("--listen " + o.listen +
                           ": not a loopback address, and no auth is configured; configure "
                           "auth (--auth, or \"auth\" in the file), or pass --no-auth to serve "
                           "it without credentials");
    return s;
}

void apply_config(options& o, std::vector<kind_config>& kinds, const std::string& content,
                  const std::string& file) {
    boost::system::error_code ec;
    // JSON, with // and /* */ comments and trailing commas allowed: a configuration file is
    // for people to annotate.
    json::parse_options relaxed;
    relaxed.allow_comments = true;
    relaxed.allow_trailing_commas = true;
    json::value root = json::parse(content, ec, {}, relaxed);
    if (ec) throw config_error(file + ": not valid JSON: " + ec.message());
    if (!root.is_object()) throw config_error(file + ": the configuration must be a JSON object");
    for (const auto& kv : root.get_object()) {
        std::string key(kv.key());
        if (key == "kinds") {
            for (const auto& k : object(kv.value(), file, key)) {
                try {
                    kinds.push_back(parse_kind(std::string(k.key()), k.value(), file));
                } catch (const std::invalid_argument& e) {
                    throw config_error(file + ": kinds." + std::string(k.key()) + ": " + e.what());
                }
            }
            continue;
        }
        if (key == "auth" || key == "tenants" || key == "cors") {
            // Kept as text: checked whole once the flags are known, and read again on SIGHUP.
            (key == "auth"      ? o.auth
             : key == "tenants" ? o.tenants
                                : o.cors) = core::to_json(kv.value());
            continue;
        }
        const auto& table = settings();
        auto s = std::find_if(table.begin(), table.end(),
                              [&](const setting& row) { return row.key == key; });
        if (s == table.end()) fail(file, key, "unknown key");
        apply_key(*s, o, kv.value(), file);
    }
}

command_line parse_command_line(int argc, const char* const* argv) {
    po::options_description desc("buzzer: a durable asynchronous request-reply server\n\nOptions");
    desc.add_options()("help,h", "show this help and exit")("version", "show the version and exit")(
        "config", po::value<std::string>()->value_name("FILE"),
        "JSON configuration file with the keys named below (and kinds, auth, tenants, cors); "
        "flags override it")("auth",
                             "require credentials: API keys, and JWTs as the file's auth.jwt "
                             "says (config key auth: an object)")(
        "no-auth",
        "serve without credentials even on a non-loopback address (config key auth: \"none\")");
    for (const auto& s : settings()) {
        const std::string flag(s.flag);
        if (s.kind == setting::type::toggle)
            desc.add_options()(flag.c_str(), help_line(s).c_str());
        else
            desc.add_options()(flag.c_str(),
                               po::value<std::string>()->value_name(std::string(s.value_name)),
                               help_line(s).c_str());
    }
    command_line out;
    std::ostringstream help;
    help << desc;
    help << "\nCommands:\n"
            "  buzzer keys create|list|revoke --database FILE|URI ...\n"
            "                        make, list and revoke API keys on the server's database\n"
            "                        (also while it runs; see buzzer keys --help)\n";
    out.help_text = help.str();

    po::variables_map vm;
    try {
        po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
        po::notify(vm);
    } catch (const po::error& e) {
        throw config_error(std::string("command line: ") + e.what());
    }
    if (vm.count("help")) out.help = true;
    if (vm.count("version")) out.version = true;

    options& o = out.opts;
    if (vm.count("config")) {
        auto file = vm["config"].as<std::string>();
        o.config_file = file;
        std::ifstream in(file, std::ios::binary);
        if (!in) throw config_error(file + ": cannot read the file");
        std::stringstream buf;
        buf << in.rdbuf();
        apply_config(o, out.kinds, buf.str(), file);
    }
    // Flags after the file: they override it.
    for (const auto& s : settings()) {
        const std::string flag(s.flag);
        if (!vm.count(flag)) continue;
        apply_flag(s, o,
                   s.kind == setting::type::toggle ? std::string() : vm[flag].as<std::string>());
    }
    // A certificate without its key, or a key without its certificate, is a half-done setup.
    if (o.tls_cert.empty() != o.tls_key.empty())
        throw config_error(o.tls_cert.empty() ? "--tls-cert: is required with --tls-key"
                                              : "--tls-key: is required with --tls-cert");
    if (vm.count("auth") && vm.count("no-auth"))
        throw config_error("--auth and --no-auth: give one of them");
    if (vm.count("no-auth")) o.auth = "\"none\"";
    if (vm.count("auth") && !o.auth.starts_with("{")) o.auth = "{}";
    if (store::is_postgres_uri(o.database) && !store::has_postgres_backend())
        throw config_error("--database: " + std::string(store::without_postgres_backend));
    check_access(o);
    return out;
}

}  // namespace buzzer::runtime
