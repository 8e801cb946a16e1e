#define BOOST_TEST_MODULE unit_sse
#include <boost/test/unit_test.hpp>
