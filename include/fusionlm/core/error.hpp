#pragma once
// Typed errors: every failure the library reports names the file, tensor or field at fault.
#include <stdexcept>
#include <string>

namespace fusionlm {

enum class ErrorKind { Format, Config, Shape, Input, Unsupported };

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::string& what) : std::runtime_error(what), kind_(kind) {}
    ErrorKind kind() const noexcept { return kind_; }

private:
    ErrorKind kind_;
};

// A file whose bytes break its format (safetensors, JSON, image).
struct FormatError : Error {
    explicit FormatError(const std::string& what) : Error(ErrorKind::Format, what) {}
};
// A config.json field that is absent where required, mistyped, or absurd.
struct ConfigError : Error {
    explicit ConfigError(const std::string& what) : Error(ErrorKind::Config, what) {}
};
// A tensor whose shape or dtype disagrees with what a module needs.
struct ShapeError : Error {
    explicit ShapeError(const std::string& what) : Error(ErrorKind::Shape, what) {}
};
// Caller-supplied input that cannot be used (images, prompts, arguments).
struct InputError : Error {
    explicit InputError(const std::string& what) : Error(ErrorKind::Input, what) {}
};
// A well-formed checkpoint of a family or component this library does not implement.
struct UnsupportedError : Error {
    explicit UnsupportedError(const std::string& what) : Error(ErrorKind::Unsupported, what) {}
};

}  // namespace fusionlm
