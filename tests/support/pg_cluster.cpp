#include "support/pg_cluster.hpp"

#include <pwd.h>
#include <unistd.h>

#include <filesystem>
#include <memory>
#include <stdexcept>

namespace buzzer::test {
namespace {

const std::string bin = "/usr/lib/postgresql/15/bin/";

// The user a cluster runs as when the tests run as root (PostgreSQL refuses root).
const char* cluster_user() { return ::geteuid() == 0 ? "postgres" : nullptr; }

}  // namespace

process_result pg_cluster::as_owner(const std::string& program, std::vector<std::string> args) {
    if (const char* user = cluster_user()) {
        args.insert(args.begin(), {"-u", user, "--", program});
        return run_process("/usr/sbin/runuser", std::move(args), std::chrono::seconds(60));
    }
    return run_process(program, std::move(args), std::chrono::seconds(60));
}

pg_cluster::pg_cluster() : dir_("buzzer-pg-") {
    data_ = (dir_ / "data").string();
    socket_dir_ = dir_.path().string();
    if (const char* user = cluster_user()) {
        const passwd* pw = ::getpwnam(user);
        if (!pw) throw std::runtime_error(std::string("no user ") + user + " for PostgreSQL");
        if (::chown(socket_dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
            throw std::runtime_error("cannot give " + socket_dir_ + " to " + user);
        // The cluster's user must reach its directory under /tmp.
        std::filesystem::permissions(socket_dir_, std::filesystem::perms::owner_all |
                                                      std::filesystem::perms::group_exec |
                                                      std::filesystem::perms::others_exec);
    }
    auto init = as_owner(bin + "initdb", {"-D", data_, "-U", "postgres", "--auth=trust",
                                          "--no-instructions", "-E", "UTF8", "--locale=C"});
    if (init.exit_code != 0) throw std::runtime_error("initdb failed: " + init.out + init.err);
    start();
}

pg_cluster::~pg_cluster() {
    if (!running_) return;
    as_owner(bin + "pg_ctl", {"-D", data_, "-m", "immediate", "-w", "stop"});
}

void pg_cluster::start() {
    // Socket only, in the cluster's directory; small, and quick to stop.
    const std::string options = "-c listen_addresses='' -c unix_socket_directories='" +
                                socket_dir_ + "' -c port=5432 -c shared_buffers=32MB " +
                                "-c max_connections=200 -c fsync=on";
    auto r = as_owner(bin + "pg_ctl", {"-D", data_, "-o", options, "-l",
                                       (dir_ / "server.log").string(), "-w", "-t", "60", "start"});
    if (r.exit_code != 0) {
        std::string log;
        if (auto f = std::fopen((dir_ / "server.log").c_str(), "r")) {
            char buf[4096];
            std::size_t n;
            while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) log.append(buf, n);
            std::fclose(f);
        }
        throw std::runtime_error("pg_ctl start failed: " + r.out + r.err + log);
    }
    running_ = true;
}

void pg_cluster::stop() {
    auto r = as_owner(bin + "pg_ctl", {"-D", data_, "-m", "fast", "-w", "stop"});
    if (r.exit_code != 0) throw std::runtime_error("pg_ctl stop failed: " + r.out + r.err);
    running_ = false;
}

std::string pg_cluster::uri(std::string_view db) const {
    return "postgresql://postgres@/" + std::string(db) + "?host=" + socket_dir_ + "&port=5432";
}

std::string pg_cluster::psql(std::string_view sql, std::string_view db) {
    auto r = run_process(
        bin + "psql",
        {"-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", uri(db), "-c", std::string(sql)},
        std::chrono::seconds(60));
    if (r.exit_code != 0) throw std::runtime_error("psql failed: " + r.out + r.err);
    return r.out;
}

void pg_cluster::create_database(std::string_view name) {
    psql("DROP DATABASE IF EXISTS " + std::string(name) + " WITH (FORCE)");
    psql("CREATE DATABASE " + std::string(name));
}

pg_cluster& shared_pg_cluster() {
    static auto cluster = std::make_unique<pg_cluster>();
    return *cluster;
}

std::string fresh_pg_database(std::string_view name) {
    auto& c = shared_pg_cluster();
    if (!c.running()) c.start();
    c.create_database(name);
    return c.uri(name);
}

}  // namespace buzzer::test
