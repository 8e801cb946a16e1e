#define BOOST_TEST_MODULE unit_api
#include <boost/test/unit_test.hpp>
