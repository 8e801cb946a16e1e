// Thin RAII wrappers over the SQLite C API: connection, cached statements, transactions.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "store/store.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace buzzer::store::sqlite {

/// An SQLite error, with the result code. It is unavailable() when the database cannot take
/// the request now but may later: a full disk, an I/O error, a read-only or unopenable file, a
/// lock held elsewhere, memory short.
class sqlite_error : public database_error {
  public:
    sqlite_error(int code, const std::string& what);
    /// The primary SQLite result code.
    int code() const noexcept { return code_; }

  private:
    int code_;
};

class connection;

/// A prepared statement; reset and cleared of bindings on each `reset()`.
class statement {
  public:
    statement(connection& db, std::string_view sql);
    ~statement();
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;

    /// Binds parameters (1-based). Text and blobs are not copied: they must outlive the use
    /// of the statement (a cached statement's bindings are cleared when its statement_use
    /// ends, a statement's own when it is destroyed).
    statement& bind(int i, std::int64_t v);
    statement& bind(int i, int v) { return bind(i, static_cast<std::int64_t>(v)); }
    statement& bind(int i, double v);
    statement& bind(int i, std::string_view v);
    statement& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
    statement& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
    statement& bind_blob(int i, std::string_view v);
    statement& bind_null(int i);
    statement& bind(int i, const std::optional<std::string>& v);
    statement& bind(int i, const std::optional<std::int64_t>& v);

    /// Steps once: true while a row is available.
    bool step();
    /// Runs to completion (for statements without rows).
    void exec();
    /// Resets for reuse.
    void reset() noexcept;

    bool is_null(int col) const;
    std::int64_t get_int(int col) const;
    double get_double(int col) const;
    std::string get_text(int col) const;
    std::optional<std::string> get_opt_text(int col) const;
    std::optional<std::int64_t> get_opt_int(int col) const;

  private:
    connection& db_;
    sqlite3_stmt* stmt_ = nullptr;
};

/// Resets a cached statement when leaving a scope.
class statement_use {
  public:
    explicit statement_use(statement& s) : s_(s) {}
    ~statement_use() { s_.reset(); }
    statement_use(const statement_use&) = delete;
    statement_use& operator=(const statement_use&) = delete;
    statement* operator->() { return &s_; }
    statement& operator*() { return s_; }

  private:
    statement& s_;
};

/// One SQLite connection, owned by one thread.
class connection {
  public:
    /// Opens (creating if needed) the database at `path`.
    explicit connection(const std::string& path, bool read_only = false);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    /// Runs one or more statements without results.
    void exec(std::string_view sql);
    /// A statement prepared once per connection and kept; `sql` must be a literal.
    statement_use cached(const char* sql);
    /// Rows changed by the last statement.
    int changes() const;
    /// Rowid of the last insert.
    std::int64_t last_insert_rowid() const;
    /// Throws sqlite_error for a failed result code.
    void check(int rc, std::string_view what) const;
    /// Calls `fn(frames in the WAL)` after each commit on this connection, in place of
    /// SQLite's automatic checkpoints.
    void on_wal_commit(std::function<void(int)> fn);
    /// A checkpoint of the WAL into the database: PASSIVE (alongside the writer) or, with
    /// `restart`, one that waits for the writer so that the next commit starts the WAL anew.
    /// Returns the number of frames in the WAL.
    int checkpoint(bool restart);

    sqlite3* handle() const noexcept { return db_; }

  private:
    sqlite3* db_ = nullptr;
    std::map<const char*, std::unique_ptr<statement>> cache_;
    std::function<void(int)> wal_hook_;
};

/// BEGIN IMMEDIATE ... COMMIT; rolls back in the destructor unless committed.
class transaction {
  public:
    explicit transaction(connection& db);
    ~transaction();
    transaction(const transaction&) = delete;
    transaction& operator=(const transaction&) = delete;
    void commit();

  private:
    connection& db_;
    bool done_ = false;
};

}  // namespace buzzer::store::sqlite
