// Thin RAII wrappers over libpq: a connection, statements with text parameters, results and
// transactions. A connection belongs to one thread at a time and blocks it: the store runs
// them on threads of its own, never on an I/O thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "store/store.hpp"

struct pg_conn;
struct pg_result;

namespace buzzer::store::postgres {

/// An error of PostgreSQL or of the connection to it, with its SQLSTATE ("" when the
/// connection failed before the server answered). unavailable(): the server cannot be
/// reached or cannot take the request now, and a retry later may succeed.
class pg_error : public database_error {
  public:
    pg_error(std::string sqlstate, const std::string& what);
    const std::string& sqlstate() const noexcept { return sqlstate_; }
    /// A duplicate key (23505).
    bool unique_violation() const noexcept { return sqlstate_ == "23505"; }
    /// A serialization failure or deadlock, which a new transaction may not meet again.
    bool retryable() const noexcept { return sqlstate_ == "40001" || sqlstate_ == "40P01"; }

  private:
    std::string sqlstate_;
};

/// A parameter as libpq takes it: text, or none for NULL.
using param = std::optional<std::string>;
param text_param(std::string_view v);
param int_param(std::int64_t v);
param opt_int_param(const std::optional<std::int64_t>& v);
param float_param(double v);
param bool_param(bool v);
/// Binary data as a bytea literal in hex form (`\x...`).
param bytes_param(std::string_view v);
/// A text[] literal of `values` (for unnest()).
param text_array_param(std::span<const std::string> values);
param text_array_param(std::span<const std::string_view> values);
/// An array of any element type, in its text form; a missing element is NULL.
param array_param(std::span<const param> values);

/// The rows of a statement, in text form.
class result {
  public:
    result() = default;
    explicit result(pg_result* r);
    ~result();
    result(result&& o) noexcept;
    result& operator=(result&& o) noexcept;
    result(const result&) = delete;
    result& operator=(const result&) = delete;

    int rows() const;
    /// Rows an INSERT, UPDATE or DELETE changed.
    std::int64_t affected() const;
    bool is_null(int row, int col) const;
    std::string text(int row, int col) const;
    std::optional<std::string> opt_text(int row, int col) const;
    std::int64_t int64(int row, int col) const;
    std::optional<std::int64_t> opt_int64(int row, int col) const;
    double float64(int row, int col) const;
    bool boolean(int row, int col) const;
    /// A bytea column, decoded.
    std::string bytes(int row, int col) const;

  private:
    pg_result* r_ = nullptr;
};

/// One connection to PostgreSQL.
class connection {
  public:
    /// Connects to `uri` (libpq's URI or key=value form); throws pg_error.
    explicit connection(const std::string& uri);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    /// Runs statements without parameters (several, separated by `;`) and drops their rows.
    void exec(std::string_view sql);
    /// Runs one statement with parameters. A statement is prepared once per connection (by
    /// its text, which must be a literal or live as long as the connection) and kept.
    result query(const char* sql, std::span<const param> params = {});
    /// Runs one statement (prepared as by query()) and COMMIT in one pipeline: the server
    /// commits right after the statement, without waiting for the client, so that a lock
    /// the statement takes is held for the commit only. Throws the first error.
    result query_then_commit(const char* sql, std::span<const param> params);
    /// Runs one statement whose text is built per call, unprepared.
    result query_text(const std::string& sql, std::span<const param> params = {});
    /// Whether the connection is still usable (a failed one must be replaced).
    bool ok() const;
    /// The server's version, e.g. 150008.
    int server_version() const;
    /// The process id of this connection's server process.
    int backend_pid() const;
    /// libpq's handle, for what this wrapper does not cover (LISTEN's notifications).
    pg_conn* native() const noexcept { return conn_; }

  private:
    result finish(pg_result* r, std::string_view what);
    const std::string& statement(const char* sql);
    pg_conn* conn_ = nullptr;
    std::unordered_map<const char*, std::string> prepared_;  ///< statement text → its name
};

/// BEGIN ... COMMIT; rolls back in the destructor unless committed.
class transaction {
  public:
    explicit transaction(connection& db);
    ~transaction();
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;
    void commit();
    /// Runs `sql` as the last statement and commits, in one round trip (see
    /// connection::query_then_commit).
    result commit_with(const char* sql, std::span<const param> params);

  private:
    connection& db_;
    bool done_ = false;
};

}  // namespace buzzer::store::postgres
