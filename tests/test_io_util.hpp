#pragma once
// Helpers shared by the io tests: a temporary directory, raw file writers, error expectations.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace fusionlm::io_test {

inline const std::filesystem::path kData = FUSIONLM_TEST_DATA;
inline const std::filesystem::path kGolden = kData / "golden";

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "fusionlm-io-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    ~TempDir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    const std::filesystem::path& path() const { return path_; }
    std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

private:
    std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& p, const std::string& bytes) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), std::streamsize(bytes.size()));
}

inline std::string read_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file from a literal header (no padding added) and raw data bytes; `declared_len`
// overrides the header length field.
inline std::string raw_safetensors(const std::string& header, const std::string& data,
                                   std::uint64_t declared_len = UINT64_MAX) {
    const std::uint64_t len = declared_len == UINT64_MAX ? header.size() : declared_len;
    std::string out(8, '\0');
    std::memcpy(out.data(), &len, 8);
    return out + header + data;
}

// Runs fn, expects an exception of type E whose message contains every fragment.
template <class E>
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& fragments) {
    try {
        fn();
    } catch (const E& e) {
        const std::string msg = e.what();
        for (const auto& f : fragments) EXPECT_NE(msg.find(f), std::string::npos) << "message: " << msg << "\nmissing: " << f;
        return;
    } catch (const std::exception& e) {
        ADD_FAILURE() << "wrong exception type: " << e.what();
        return;
    }
    ADD_FAILURE() << "no exception thrown";
}

// A command-line tool run as a user runs it: exit code, stdout and stderr.
struct CliResult {
    int code = -1;
    std::string out, err;
};

inline std::string quote(const std::string& s) {
    std::string q = "'";
    for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
}

// stdin_text, when given, is the tool's standard input.
inline CliResult run_cli(const std::filesystem::path& binary, const std::string& args, const TempDir& tmp,
                         const std::optional<std::string>& stdin_text = std::nullopt) {
    const auto out = tmp / "stdout.txt", err = tmp / "stderr.txt", in = tmp / "stdin.txt";
    std::string cmd = quote(binary.string()) + " " + args + " >" + quote(out.string()) + " 2>" + quote(err.string());
    if (stdin_text) {
        write_bytes(in, *stdin_text);
        cmd += " <" + quote(in.string());
    }
    const int status = std::system(cmd.c_str());
    CliResult r;
    r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = read_bytes(out);
    r.err = read_bytes(err);
    return r;
}

// The contract of every tool for bad input: exit 2, nothing on stdout, one line on stderr naming the fault.
inline void expect_one_line_failure(const CliResult& r, const std::string& fragment) {
    EXPECT_EQ(r.code, 2);
    EXPECT_TRUE(r.out.empty()) << r.out;
    ASSERT_FALSE(r.err.empty());
    EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "stderr is not one line: " << r.err;
    EXPECT_NE(r.err.find(fragment), std::string::npos) << r.err;
}

}  // namespace fusionlm::io_test
