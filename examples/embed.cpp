// Embedding Buzzer: register a kind as a coroutine and serve it.
//
//   buzzer-embed-example [--listen HOST:PORT] [--database PATH]
//
// POST /operations {"kind": "resize", "input": {"width": 800, "height": 600, "steps": 4}}
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>
#include <buzzer/server.hpp>
#include <cstdio>
#include <cstring>
#include <iostream>

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

// Pretends to resize an image in steps, reporting progress; cancellation (cancel, timeout,
// shutdown) arrives as an exception from the awaited timer.
asio::awaitable<json::value> resize(buzzer::job& job) {
    const auto& in = job.input().as_object();
    auto width = in.at("width").to_number<std::int64_t>();
    auto height = in.at("height").to_number<std::int64_t>();
    int steps =
        in.contains("steps") ? static_cast<int>(in.at("steps").to_number<std::int64_t>()) : 2;

    asio::steady_timer timer(co_await asio::this_coro::executor);
    for (int step = 1; step <= steps; ++step) {
        timer.expires_after(std::chrono::milliseconds(50));
        co_await timer.async_wait(asio::use_awaitable);
        co_await job.progress(step * 100 / steps, "pass " + std::to_string(step));
    }
    co_return json::object{
        {"width", width / 2}, {"height", height / 2}, {"attempt", job.attempt()}};
}

// Accepts only {"width": >0, "height": >0}.
void check_resize(const json::value& input) {
    if (!input.is_object()) throw buzzer::invalid_input("input must be an object");
    for (auto key : {"width", "height"}) {
        const auto* v = input.as_object().if_contains(key);
        if (!v || !v->is_int64() || v->as_int64() <= 0)
            throw buzzer::invalid_input(std::string("input.") + key +
                                        " must be a positive integer");
    }
}

}  // namespace

int main(int argc, char** argv) {
    buzzer::options opts;
    opts.database = "embed.db";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::strcmp(argv[i], "--listen") == 0)
            opts.listen = argv[i + 1];
        else if (std::strcmp(argv[i], "--database") == 0)
            opts.database = argv[i + 1];
    }

    buzzer::server server(opts);
    buzzer::kind_options defaults;
    defaults.timeout_s = 30;
    defaults.concurrency = 4;
    server.kind("resize", resize, defaults, check_resize);
    server.on_listening = [](const std::string& address) {
        std::printf("listening on http://%s\n", address.c_str());
        std::fflush(stdout);
    };
    try {
        server.run();  // until SIGINT or SIGTERM
    } catch (const std::exception& e) {
        std::cerr << "embed: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
