// The buzzer executable: parse the command line, run the server until a signal.
#include <buzzer/server.hpp>
#include <cstdio>
#include <iostream>
#include <string>
#include <string_view>

#ifdef BUZZER_WITH_MIMALLOC
#include <mimalloc.h>
#endif

#include "runtime/build_info.hpp"
#include "runtime/config.hpp"
#include "runtime/keys_command.hpp"

int main(int argc, char** argv) {
    if (argc >= 2 && std::string_view(argv[1]) == "keys")
        return buzzer::runtime::keys_command(argc - 2, argv + 2);
    buzzer::runtime::command_line cl;
    try {
        cl = buzzer::runtime::parse_command_line(argc, argv);
    } catch (const buzzer::runtime::config_error& e) {
        std::cerr << "buzzer: " << e.what() << "\n";
        return 2;
    }
    if (cl.help) {
        std::cout << cl.help_text;
        return 0;
    }
    if (cl.version) {
        std::string allocator;
#ifdef BUZZER_WITH_MIMALLOC
        // The allocator in use, as it reports itself (mi_version() gives 209 for 2.0.9).
        const int mi = mi_version();
        allocator = "mimalloc " + std::to_string(mi / 100) + "." + std::to_string(mi / 10 % 10) +
                    "." + std::to_string(mi % 10);
#endif
        std::cout << buzzer::runtime::version_text(allocator);
        return 0;
    }
    buzzer::server server(cl.opts);
    try {
        buzzer::runtime::register_kinds(server, cl.kinds);
    } catch (const std::invalid_argument& e) {
        std::cerr << "buzzer: configuration: " << e.what() << "\n";
        return 2;
    }
    try {
        const bool https = !cl.opts.tls_cert.empty();
        server.on_listening = [https](const std::string& address) {
            std::printf("listening on %s://%s\n", https ? "https" : "http", address.c_str());
            std::fflush(stdout);
        };
        server.run();
    } catch (const buzzer::schema_too_new& e) {
        std::cerr << "buzzer: " << e.what() << "\n";
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "buzzer: " << e.what() << "\n";
        return 1;
    } catch (...) {
        // Whatever failed, a line and the status of a failure rather than a terminate.
        std::cerr << "buzzer: stopped by an exception of unknown type\n";
        return 1;
    }
    return 0;
}
