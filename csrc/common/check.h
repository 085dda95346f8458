// Error checks for the native core. A failed check throws std::invalid_argument (bad input)
// or std::runtime_error (broken invariant / damaged data) whose message names the failing
// expression and the values involved, so the Python layer can show one clear line.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mdlsae {

template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

}  // namespace mdlsae

// Bad caller input: shapes, ranges, options.
#define MDLSAE_CHECK_ARG(cond, ...)                                                  \
  do {                                                                               \
    if (!(cond))                                                                     \
      throw std::invalid_argument(::mdlsae::concat(__VA_ARGS__, " [check failed: ", \
                                                   #cond, "]"));                     \
  } while (0)

// Data that does not satisfy the format (a damaged or foreign file).
#define MDLSAE_CHECK_DATA(cond, ...)                                              \
  do {                                                                            \
    if (!(cond))                                                                  \
      throw std::runtime_error(::mdlsae::concat(__VA_ARGS__, " [check failed: ", \
                                                #cond, "]"));                     \
  } while (0)
