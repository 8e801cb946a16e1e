#define BOOST_TEST_MODULE unit_jobs
#include <boost/test/unit_test.hpp>
