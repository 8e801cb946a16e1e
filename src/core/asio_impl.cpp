// The one translation unit that compiles Asio (separate compilation); Beast's is in http/.
#include <boost/asio/impl/src.hpp>
