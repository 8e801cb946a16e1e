// The registry of kinds: name, executor type, defaults, input check and job function.
#pragma once

#include <buzzer/server.hpp>
#include <map>
#include <string>
#include <vector>

namespace buzzer::jobs {

/// One kind of work.
struct kind_def {
    std::string name;
    std::string executor;  ///< "builtin", "exec", "http", "embedded"
    kind_options defaults;
    job_function run;
    input_check check;
};

/// Kinds by name.
class kind_registry {
  public:
    /// Adds or replaces a kind.
    void add(kind_def k);
    /// The kind called `name`, or null.
    const kind_def* find(std::string_view name) const;
    /// Every kind, by name.
    std::vector<const kind_def*> all() const;

  private:
    std::map<std::string, kind_def, std::less<>> kinds_;
};

/// Registers `sleep`, `echo` and `fail`.
void add_builtin_kinds(kind_registry& r);

}  // namespace buzzer::jobs
