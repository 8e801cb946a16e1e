#include "store/sqlite/connection.hpp"

#include <sqlite3.h>

namespace buzzer::store::sqlite {

namespace {

bool unavailable_code(int code) {
    switch (code & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
        case SQLITE_NOMEM:
        case SQLITE_READONLY:
        case SQLITE_IOERR:
        case SQLITE_FULL:
        case SQLITE_CANTOPEN:
        case SQLITE_PROTOCOL:
            return true;
        default:
            return false;
    }
}

}  // namespace

sqlite_error::sqlite_error(int code, const std::string& what)
    : database_error(what, unavailable_code(code)), code_(code) {}

statement::statement(connection& db, std::string_view sql) : db_(db) {
    db_.check(sqlite3_prepare_v3(db.handle(), sql.data(), static_cast<int>(sql.size()),
                                 SQLITE_PREPARE_PERSISTENT, &stmt_, nullptr),
              sql);
}

statement::~statement() { sqlite3_finalize(stmt_); }

statement& statement::bind(int i, std::int64_t v) {
    db_.check(sqlite3_bind_int64(stmt_, i, v), "bind");
    return *this;
}

statement& statement::bind(int i, double v) {
    db_.check(sqlite3_bind_double(stmt_, i, v), "bind");
    return *this;
}

statement& statement::bind(int i, std::string_view v) {
    db_.check(sqlite3_bind_text64(stmt_, i, v.data(), v.size(), SQLITE_STATIC, SQLITE_UTF8),
              "bind");
    return *this;
}

statement& statement::bind_blob(int i, std::string_view v) {
    db_.check(sqlite3_bind_blob64(stmt_, i, v.data(), v.size(), SQLITE_STATIC), "bind");
    return *this;
}

statement& statement::bind_null(int i) {
    db_.check(sqlite3_bind_null(stmt_, i), "bind");
    return *this;
}

statement& statement::bind(int i, const std::optional<std::string>& v) {
    return v ? bind(i, std::string_view(*v)) : bind_null(i);
}

statement& statement::bind(int i, const std::optional<std::int64_t>& v) {
    return v ? bind(i, *v) : bind_null(i);
}

bool statement::step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    db_.check(rc, sqlite3_sql(stmt_));
    return false;
}

void statement::exec() {
    while (step()) {
    }
}

void statement::reset() noexcept {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
}

bool statement::is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }

std::int64_t statement::get_int(int col) const { return sqlite3_column_int64(stmt_, col); }

double statement::get_double(int col) const { return sqlite3_column_double(stmt_, col); }

std::string statement::get_text(int col) const {
    auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    int n = sqlite3_column_bytes(stmt_, col);
    return p ? std::string(p, static_cast<std::size_t>(n)) : std::string();
}

std::optional<std::string> statement::get_opt_text(int col) const {
    if (is_null(col)) return std::nullopt;
    return get_text(col);
}

std::optional<std::int64_t> statement::get_opt_int(int col) const {
    if (is_null(col)) return std::nullopt;
    return get_int(col);
}

namespace {

// Before the first connection: no global memory statistics, whose mutex every allocation of
// every connection would take. A program that initialised SQLite itself keeps its settings.
void configure_library() {
    static const bool done = [] {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        return true;
    }();
    (void)done;
}

}  // namespace

connection::connection(const std::string& path, bool read_only) {
    configure_library();
    int flags = read_only ? SQLITE_OPEN_READONLY : (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE);
    flags |= SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path.c_str(), &db_, flags, nullptr);
    if (rc != SQLITE_OK) {
        std::string msg = db_ ? sqlite3_errmsg(db_) : sqlite3_errstr(rc);
        sqlite3_close_v2(db_);
        db_ = nullptr;
        throw sqlite_error(rc, "cannot open database " + path + ": " + msg);
    }
    sqlite3_extended_result_codes(db_, 0);
    // A larger per-connection lookaside (512 slots of 1 KiB), where the library has one (some
    // builds, Debian's among them, leave it out): most of the small allocations of statements
    // and B-tree cursors then stay out of malloc.
    sqlite3_db_config(db_, SQLITE_DBCONFIG_LOOKASIDE, nullptr, 1024, 512);
}

connection::~connection() {
    cache_.clear();
    sqlite3_close_v2(db_);
}

void connection::exec(std::string_view sql) {
    std::string s(sql);
    char* err = nullptr;
    int rc = sqlite3_exec(db_, s.c_str(), nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
        std::string msg = err ? err : sqlite3_errstr(rc);
        sqlite3_free(err);
        throw sqlite_error(rc, msg);
    }
}

statement_use connection::cached(const char* sql) {
    auto& slot = cache_[sql];
    if (!slot) slot = std::make_unique<statement>(*this, sql);
    return statement_use(*slot);
}

void connection::on_wal_commit(std::function<void(int)> fn) {
    wal_hook_ = std::move(fn);
    sqlite3_wal_hook(
        db_,
        [](void* self, sqlite3*, const char*, int frames) {
            static_cast<connection*>(self)->wal_hook_(frames);
            return SQLITE_OK;
        },
        this);
}

int connection::checkpoint(bool restart) {
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(
        db_, nullptr, restart ? SQLITE_CHECKPOINT_RESTART : SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_BUSY) check(rc, "checkpoint");  // busy: tried again after later commits
    return log;
}

int connection::changes() const { return sqlite3_changes(db_); }

std::int64_t connection::last_insert_rowid() const { return sqlite3_last_insert_rowid(db_); }

void connection::check(int rc, std::string_view what) const {
    if (rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE) return;
    throw sqlite_error(rc, std::string(sqlite3_errmsg(db_)) + " (" + std::string(what) + ")");
}

transaction::transaction(connection& db) : db_(db) { db_.cached("BEGIN IMMEDIATE")->exec(); }

transaction::~transaction() {
    if (!done_) {
        try {
            db_.cached("ROLLBACK")->exec();
        } catch (...) {
        }
    }
}

void transaction::commit() {
    db_.cached("COMMIT")->exec();
    done_ = true;
}

}  // namespace buzzer::store::sqlite
