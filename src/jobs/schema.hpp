// A small JSON Schema subset for checking a kind's input at submit time: type, required,
// properties, enum, minimum, maximum, maxLength, items.
#pragma once

#include <boost/json/value.hpp>
#include <string>

namespace buzzer::jobs {

/// A parsed input schema.
class input_schema {
  public:
    /// Parses `schema`; throws std::invalid_argument naming the key path under `where`.
    static input_schema parse(const boost::json::value& schema, const std::string& where);

    /// Throws buzzer::invalid_input naming the first offending path ("input.url").
    void check(const boost::json::value& input) const;

  private:
    boost::json::value schema_;
};

}  // namespace buzzer::jobs
