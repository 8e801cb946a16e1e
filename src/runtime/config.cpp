#include "runtime/config.hpp"

#include <boost/json.hpp>
#include <boost/program_options.hpp>
#include <boost/url/parse.hpp>
#include <cmath>
#include <fstream>
#include <sstream>

#include "core/operation.hpp"
#include "jobs/schema.hpp"

namespace buzzer::runtime {
namespace json = boost::json;
namespace po = boost::program_options;

namespace {

[[noreturn]] void fail(const std::string& file, const std::string& key, const std::string& what) {
    throw config_error(file + ": " + key + ": " + what);
}

// A public base URL: absolute http or https with a host, a path at most (empty: none). The
// server drops trailing slashes itself. `where` names its source.
std::string checked_public_url(std::string url, const std::string& where) {
    if (url.empty()) return url;
    auto parsed = boost::urls::parse_absolute_uri(url);
    const bool ok = parsed && (parsed->scheme() == "http" || parsed->scheme() == "https") &&
                    parsed->has_authority() && !parsed->host().empty() && !parsed->has_userinfo() &&
                    !parsed->has_query() && !parsed->has_fragment();
    if (!ok)
        throw config_error(where +
                           ": must be an absolute http or https URL such as "
                           "https://api.example.com (got \"" +
                           url + "\")");
    return url;
}

// HOST:PORT with a port of 0..65535 ([::1]:8080 for IPv6).
std::string checked_listen(std::string address, const std::string& where) {
    auto colon = address.rfind(':');
    bool ok = colon != std::string::npos && colon > 0 && colon + 1 < address.size() &&
              colon + 6 >= address.size();
    for (std::size_t i = ok ? colon + 1 : address.size(); i < address.size(); ++i)
        ok = ok && address[i] >= '0' && address[i] <= '9';
    if (ok) ok = std::stol(address.substr(colon + 1)) <= 65535;
    if (!ok)
        throw config_error(where + ": must be HOST:PORT such as 127.0.0.1:8080 (got \"" + address +
                           "\")");
    return address;
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

bool synchronous_full(const std::string& value, const std::string& where) {
    if (value == "full" || value == "FULL") return true;
    if (value == "normal" || value == "NORMAL") return false;
    throw config_error(where + ": must be \"full\" or \"normal\"");
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

void apply_config(options& o, std::vector<kind_config>& kinds, const std::string& content,
                  const std::string& file) {
    boost::system::error_code ec;
    json::value root = json::parse(content, ec);
    if (ec) throw config_error(file + ": not valid JSON: " + ec.message());
    if (!root.is_object()) throw config_error(file + ": the configuration must be a JSON object");
    for (const auto& kv : root.get_object()) {
        std::string key(kv.key());
        const auto& v = kv.value();
        if (key == "listen")
            o.listen = checked_listen(text(v, file, key), file + ": " + key);
        else if (key == "database")
            o.database = text(v, file, key);
        else if (key == "public_url")
            o.public_url = checked_public_url(text(v, file, key), file + ": " + key);
        else if (key == "threads")
            o.threads = static_cast<unsigned>(whole(v, file, key, 0, 256));
        else if (key == "synchronous")
            o.synchronous_full = synchronous_full(text(v, file, key), file + ": " + key);
        else if (key == "builtin_kinds") {
            if (!v.is_bool()) fail(file, key, "must be true or false");
            o.builtin_kinds = v.get_bool();
        } else if (key == "body_limit")
            o.body_limit = whole(v, file, key, 1024, 1LL << 30);
        else if (key == "header_limit")
            o.header_limit = whole(v, file, key, 1024, 1 << 20);
        else if (key == "header_timeout_s")
            o.header_timeout_s = number(v, file, key, 0.1, 3600);
        else if (key == "idle_timeout_s")
            o.idle_timeout_s = number(v, file, key, 0.1, 86400);
        else if (key == "sse_heartbeat_s")
            o.sse_heartbeat_s = number(v, file, key, 0.05, 3600);
        else if (key == "sse_retry_ms")
            o.sse_retry_ms = static_cast<unsigned>(whole(v, file, key, 0, 3600000));
        else if (key == "sse_backlog")
            o.sse_backlog = whole(v, file, key, 1, 1 << 20);
        else if (key == "retention_s")
            o.retention_s = number(v, file, key, 0, 10 * 365 * 86400.0);
        else if (key == "shutdown_grace_s")
            o.shutdown_grace_s = number(v, file, key, 0, 3600);
        else if (key == "max_pending")
            o.max_pending = whole(v, file, key, 1, 1e9);
        else if (key == "max_running")
            o.max_running = static_cast<unsigned>(whole(v, file, key, 1, 1e6));
        else if (key == "kinds") {
            for (const auto& k : object(v, file, key)) {
                try {
                    kinds.push_back(parse_kind(std::string(k.key()), k.value(), file));
                } catch (const std::invalid_argument& e) {
                    throw config_error(file + ": kinds." + std::string(k.key()) + ": " + e.what());
                }
            }
        } else
            fail(file, key, "unknown key");
    }
}

command_line parse_command_line(int argc, const char* const* argv) {
    const options d;
    po::options_description desc("buzzer: a durable asynchronous request-reply server\n\nOptions");
    // clang-format off
    desc.add_options()
        ("help,h", "show this help and exit")
        ("version", "show the version and exit")
        ("config", po::value<std::string>(), "JSON configuration file; flags override it")
        ("listen", po::value<std::string>(), ("HOST:PORT to serve on; port 0 picks a free one (default " + d.listen + ")").c_str())
        ("database", po::value<std::string>(), ("SQLite database file (default ./" + d.database + ")").c_str())
        ("threads", po::value<unsigned>(), "I/O threads (default: one per core)")
        ("public-url", po::value<std::string>(), "base URL for absolute links, e.g. https://api.example.com (default: relative links)")
        ("synchronous", po::value<std::string>(), "SQLite synchronous mode: full or normal (default full)")
        ("no-builtin-kinds", "do not register the sleep, echo and fail kinds")
        ("body-limit", po::value<std::size_t>(), "largest request body in bytes (default 1048576)")
        ("header-limit", po::value<std::size_t>(), "largest request header block in bytes (default 16384)")
        ("header-timeout", po::value<double>(), "seconds to receive a request's headers (default 10)")
        ("idle-timeout", po::value<double>(), "seconds a keep-alive connection may stay idle (default 60)")
        ("sse-heartbeat", po::value<double>(), "idle seconds before an event stream gets a keepalive comment (default 15)")
        ("sse-retry-ms", po::value<unsigned>(), "reconnection delay sent to EventSource clients (default 2000)")
        ("sse-backlog", po::value<std::size_t>(), "events buffered for one slow stream before it is ended (default 256)")
        ("retention", po::value<double>(), "seconds finished operations are kept (default 604800)")
        ("shutdown-grace", po::value<double>(), "seconds running jobs get to stop on shutdown (default 10)")
        ("max-pending", po::value<std::size_t>(), "pending operations before submissions get 429 (default 100000)")
        ("max-running", po::value<unsigned>(), "operations running at once (default 256)");
    // clang-format on
    command_line out;
    std::ostringstream help;
    help << desc;
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
        std::ifstream in(file, std::ios::binary);
        if (!in) throw config_error(file + ": cannot read the file");
        std::stringstream buf;
        buf << in.rdbuf();
        apply_config(o, out.kinds, buf.str(), file);
    }
    if (vm.count("listen")) o.listen = checked_listen(vm["listen"].as<std::string>(), "--listen");
    if (vm.count("database")) o.database = vm["database"].as<std::string>();
    if (vm.count("threads")) o.threads = vm["threads"].as<unsigned>();
    if (vm.count("public-url"))
        o.public_url = checked_public_url(vm["public-url"].as<std::string>(), "--public-url");
    if (vm.count("synchronous"))
        o.synchronous_full = synchronous_full(vm["synchronous"].as<std::string>(), "--synchronous");
    if (vm.count("no-builtin-kinds")) o.builtin_kinds = false;
    if (vm.count("body-limit")) o.body_limit = vm["body-limit"].as<std::size_t>();
    if (vm.count("header-limit")) o.header_limit = vm["header-limit"].as<std::size_t>();
    if (vm.count("header-timeout")) o.header_timeout_s = vm["header-timeout"].as<double>();
    if (vm.count("idle-timeout")) o.idle_timeout_s = vm["idle-timeout"].as<double>();
    if (vm.count("sse-heartbeat")) o.sse_heartbeat_s = vm["sse-heartbeat"].as<double>();
    if (vm.count("sse-retry-ms")) o.sse_retry_ms = vm["sse-retry-ms"].as<unsigned>();
    if (vm.count("sse-backlog")) o.sse_backlog = vm["sse-backlog"].as<std::size_t>();
    if (vm.count("retention")) o.retention_s = vm["retention"].as<double>();
    if (vm.count("shutdown-grace")) o.shutdown_grace_s = vm["shutdown-grace"].as<double>();
    if (vm.count("max-pending")) o.max_pending = vm["max-pending"].as<std::size_t>();
    if (vm.count("max-running")) o.max_running = vm["max-running"].as<unsigned>();
    return out;
}

}  // namespace buzzer::runtime
