// `buzzer keys create|list|revoke`: API keys, made and revoked by the operator on the
// database file, while the server runs or not.
#include "runtime/keys_command.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/program_options.hpp>
#include <iostream>
#include <sstream>

#include "auth/authenticator.hpp"
#include "core/principal.hpp"
#include "runtime/database.hpp"
#include "store/store.hpp"

namespace buzzer::runtime {
namespace asio = boost::asio;
namespace po = boost::program_options;

namespace {

constexpr const char* usage =
    "usage: buzzer keys create --database FILE|URI [--tenant T] --role read|write|admin\n"
    "                          [--name NAME] [--kinds a,b] [--expires-in SECONDS]\n"
    "       buzzer keys list   --database FILE|URI [--tenant T]\n"
    "       buzzer keys revoke --database FILE|URI ID\n";

// Runs `work` to its end on an io_context of its own.
template <class T>
T run(asio::awaitable<T> work) {
    asio::io_context io;
    auto f = asio::co_spawn(io, std::move(work), asio::use_future);
    io.run();
    return f.get();
}

std::unique_ptr<store::store> open_store(const std::string& path) {
    store::settings ss;
    ss.path = path;
    ss.readers = 1;
    auto db = make_store(std::move(ss));
    // Another process may be serving this file: no recovery of its running attempts.
    db->attach();
    return db;
}

std::string time_text(std::optional<core::millis> t) {
    return t ? core::format_time(*t) : std::string("never");
}

std::vector<std::string> split_kinds(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    std::string k;
    while (std::getline(in, k, ','))
        if (!k.empty()) out.push_back(k);
    return out;
}

}  // namespace

int keys_command(int argc, const char* const* argv) {
    if (argc < 1) {
        std::cerr << usage;
        return 2;
    }
    const std::string action = argv[0];
    if (action == "--help" || action == "-h" || action == "help") {
        std::cout << usage;
        return 0;
    }
    po::options_description desc;
    desc.add_options()("database", po::value<std::string>()->default_value("buzzer.db"))(
        "tenant", po::value<std::string>())("role", po::value<std::string>())(
        "name", po::value<std::string>()->default_value(""))("kinds", po::value<std::string>())(
        "expires-in", po::value<double>())("id", po::value<std::string>());
    po::positional_options_description positional;
    positional.add("id", 1);
    po::variables_map vm;
    // argv[0], the action, stands where a program's name would: the parser skips it.
    try {
        po::store(po::command_line_parser(argc, argv).options(desc).positional(positional).run(),
                  vm);
        po::notify(vm);
    } catch (const po::error& e) {
        std::cerr << "buzzer keys: " << e.what() << "\n" << usage;
        return 2;
    }
    const auto database = vm["database"].as<std::string>();
    try {
        if (action == "create") {
            if (!vm.count("role")) {
                std::cerr << "buzzer keys create: --role is required (read, write or admin)\n";
                return 2;
            }
            auto role = core::parse_role(vm["role"].as<std::string>());
            if (!role) {
                std::cerr << "buzzer keys create: --role must be read, write or admin\n";
                return 2;
            }
            auth::key_request k;
            k.tenant = vm.count("tenant") ? vm["tenant"].as<std::string>()
                                          : std::string(core::default_tenant);
            if (k.tenant.empty() || k.tenant.size() > 200) {
                std::cerr << "buzzer keys create: --tenant must be 1 to 200 characters\n";
                return 2;
            }
            k.role = *role;
            k.name = vm["name"].as<std::string>();
            if (vm.count("kinds")) k.kinds = split_kinds(vm["kinds"].as<std::string>());
            if (vm.count("expires-in")) {
                double s = vm["expires-in"].as<double>();
                if (!(s > 0 && s <= 10.0 * 365 * 86400)) {
                    std::cerr << "buzzer keys create: --expires-in must be greater than 0 and at "
                                 "most 315360000 seconds\n";
                    return 2;
                }
                k.expires_in_s = s;
            }
            auto db = open_store(database);
            auto made = run(auth::create_key(*db, std::move(k)));
            db->close();
            std::cout << made.text << "\n" << made.id << "\n";
            return 0;
        }
        if (action == "list") {
            std::optional<store::tenant_id> tenant;
            if (vm.count("tenant")) tenant.emplace(vm["tenant"].as<std::string>());
            auto db = open_store(database);
            auto keys = run(db->list_keys(std::move(tenant)));
            db->close();
            std::cout << "id\ttenant\trole\tname\tcreated\texpires\n";
            for (const auto& k : keys)
                std::cout << k.id << "\t" << k.tenant << "\t" << core::to_string(k.role) << "\t"
                          << k.name << "\t" << core::format_time(k.created_at) << "\t"
                          << time_text(k.expires_at) << "\n";
            return 0;
        }
        if (action == "revoke") {
            if (!vm.count("id")) {
                std::cerr << "buzzer keys revoke: which key? (its id)\n" << usage;
                return 2;
            }
            auto id = vm["id"].as<std::string>();
            auto db = open_store(database);
            bool done = run(db->revoke_key(std::nullopt, id, core::now_ms()));
            db->close();
            if (!done) {
                std::cerr << "buzzer keys revoke: no live key " << id << "\n";
                return 1;
            }
            std::cout << "revoked " << id << "\n";
            return 0;
        }
    } catch (const std::exception& e) {
        std::cerr << "buzzer keys: " << e.what() << "\n";
        return 1;
    }
    std::cerr << "buzzer keys: unknown action " << action << "\n" << usage;
    return 2;
}

}  // namespace buzzer::runtime
