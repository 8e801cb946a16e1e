// A private PostgreSQL cluster for tests: initdb and pg_ctl from PostgreSQL 15 in a temporary
// directory, listening on a Unix socket there only (no TCP port). As root, the cluster runs as
// the `postgres` user. Removed with its directory.
#pragma once

#include <string>
#include <string_view>

#include "support/process.hpp"

namespace buzzer::test {

class pg_cluster {
  public:
    /// Makes and starts a cluster; throws std::runtime_error with initdb's or pg_ctl's output.
    pg_cluster();
    /// Stops the cluster (immediately) and removes it.
    ~pg_cluster();
    pg_cluster(const pg_cluster&) = delete;
    pg_cluster& operator=(const pg_cluster&) = delete;

    /// A libpq URI of database `db` of the cluster (`postgres` is made by initdb).
    std::string uri(std::string_view db = "postgres") const;
    /// Creates database `name` (dropping one of that name first).
    void create_database(std::string_view name);
    /// Runs `sql` with psql on `db`; returns psql's output (unaligned, tuples only). Throws
    /// when psql fails.
    std::string psql(std::string_view sql, std::string_view db = "postgres");
    /// Stops the server (fast shutdown: connections are cut) and starts it again.
    void stop();
    void start();
    bool running() const { return running_; }

  private:
    process_result as_owner(const std::string& program, std::vector<std::string> args);
    temp_dir dir_;
    std::string data_, socket_dir_;
    bool running_ = false;
};

/// The cluster that the tests of this process share, made at first use.
pg_cluster& shared_pg_cluster();

/// A new empty database on the shared cluster, named `name` (made again when it exists); its
/// URI.
std::string fresh_pg_database(std::string_view name);

}  // namespace buzzer::test
