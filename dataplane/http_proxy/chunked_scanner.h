#pragma once

// Incremental validator of a chunked message body (RFC 9112 7.1). The proxy relays chunked
// bodies byte for byte; this scanner finds where the body ends (so the next pipelined
// request stays in the buffer), counts the data bytes (for body limits), rejects malformed
// framing (a smuggling vector), and, for HTTP/1.0 clients, reports the data pieces so they
// can be sent de-chunked.
//
// Pure and allocation-free; one per message, owned by whoever relays the body.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace onedomain::dataplane {

class ChunkedScanner {
 public:
  // RFC 9110 5.6.2 tchar: the octets of a token (chunk extensions, field names, list items).
  static constexpr bool IsTokenChar(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    switch (c) {
      case '!':
      case '#':
      case '$':
      case '%':
      case '&':
      case '\'':
      case '*':
      case '+':
      case '-':
      case '.':
      case '^':
      case '_':
      case '`':
      case '|':
      case '~':
        return true;
      default:
        return false;
    }
  }

  struct Result {
    size_t consumed = 0;  // bytes of the input that belong to the body
    bool done = false;    // the last chunk and the trailer section are complete
    bool error = false;   // malformed framing; the connection must close
  };

  // Limits that keep a hostile peer from making us scan forever on one line.
  static constexpr size_t kMaxSizeDigits = 16;
  static constexpr size_t kMaxExtensionBytes = 4096;
  static constexpr size_t kMaxTrailerBytes = 64 * 1024;

  // Scans `in`. `on_data(const char*, size_t)` receives every piece of chunk data. Stops at
  // the end of the body (consumed < in.size() then), at an error, or at the end of `in`.
  template <typename OnData>
  Result Feed(std::string_view in, OnData&& on_data);

  Result Feed(std::string_view in) {
    return Feed(in, [](const char*, size_t) {});
  }

  uint64_t data_bytes() const { return data_bytes_; }
  bool done() const { return state_ == State::kDone; }

 private:
  enum class State : uint8_t {
    kSize,          // hex digits of the chunk size
    kSizeWs,        // optional whitespace after the size, before ';' or CR
    kExtension,     // chunk extensions up to CR
    kSizeLf,        // LF ending the size line
    kData,          // chunk data
    kDataCr,        // CR after the data
    kDataLf,        // LF after the data
    kTrailerStart,  // start of a trailer line (or of the final CRLF)
    kTrailerLine,   // inside a trailer field line
    kTrailerLf,     // LF ending a trailer line
    kFinalLf,       // LF of the final empty line
    kDone,
    kError,
  };

  static int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  State state_ = State::kSize;
  uint64_t chunk_remaining_ = 0;
  uint64_t data_bytes_ = 0;
  size_t digits_ = 0;
  size_t line_bytes_ = 0;  // extension or trailer bytes, for the limits
  size_t trailer_bytes_ = 0;
  bool trailer_colon_ = false;  // the current trailer line's name has ended
};

template <typename OnData>
ChunkedScanner::Result ChunkedScanner::Feed(std::string_view in, OnData&& on_data) {
  const char* p = in.data();
  const char* const end = p + in.size();
  auto fail = [&] {
    state_ = State::kError;
    return Result{static_cast<size_t>(p - in.data()), false, true};
  };
  while (p < end) {
    switch (state_) {
      case State::kSize: {
        const int v = HexValue(*p);
        if (v >= 0) {
          if (++digits_ > kMaxSizeDigits) return fail();
          chunk_remaining_ = (chunk_remaining_ << 4) | static_cast<uint64_t>(v);
          ++p;
          break;
        }
        if (digits_ == 0) return fail();
        state_ = State::kSizeWs;
        break;
      }
      case State::kSizeWs:
        if (*p == ' ' || *p == '\t') {
          ++p;
        } else if (*p == ';') {
          line_bytes_ = 0;
          state_ = State::kExtension;
          ++p;
        } else if (*p == '\r') {
          state_ = State::kSizeLf;
          ++p;
        } else {
          return fail();
        }
        break;
      case State::kExtension:
        if (*p == '\r') {
          state_ = State::kSizeLf;
        } else if (*p == '\n' || (static_cast<unsigned char>(*p) < 0x20 && *p != '\t') ||
                   *p == 0x7f || ++line_bytes_ > kMaxExtensionBytes) {
          return fail();
        }
        ++p;
        break;
      case State::kSizeLf:
        if (*p != '\n') return fail();
        ++p;
        digits_ = 0;
        if (chunk_remaining_ == 0) {
          state_ = State::kTrailerStart;
        } else {
          state_ = State::kData;
        }
        break;
      case State::kData: {
        const uint64_t avail = static_cast<uint64_t>(end - p);
        const size_t n = static_cast<size_t>(avail < chunk_remaining_ ? avail : chunk_remaining_);
        on_data(p, n);
        p += n;
        chunk_remaining_ -= n;
        data_bytes_ += n;
        if (chunk_remaining_ == 0) state_ = State::kDataCr;
        break;
      }
      case State::kDataCr:
        if (*p != '\r') return fail();
        ++p;
        state_ = State::kDataLf;
        break;
      case State::kDataLf:
        if (*p != '\n') return fail();
        ++p;
        state_ = State::kSize;
        break;
      case State::kTrailerStart:
        if (*p == '\r') {
          state_ = State::kFinalLf;
          ++p;
          break;
        }
        // A trailer field line: "name: value", the name a token (RFC 9110 5.1, 5.6.2).
        if (!IsTokenChar(*p)) return fail();
        line_bytes_ = 0;
        trailer_colon_ = false;
        state_ = State::kTrailerLine;
        break;
      case State::kTrailerLine: {
        const auto c = static_cast<unsigned char>(*p);
        if (++trailer_bytes_ > kMaxTrailerBytes) return fail();
        if (c == '\r') {
          if (!trailer_colon_) return fail();
          state_ = State::kTrailerLf;
        } else if (!trailer_colon_) {
          if (c == ':') {
            trailer_colon_ = true;
          } else if (!IsTokenChar(*p)) {
            return fail();
          }
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
          return fail();
        }
        ++p;
        break;
      }
      case State::kTrailerLf:
        if (*p != '\n') return fail();
        ++p;
        state_ = State::kTrailerStart;
        break;
      case State::kFinalLf:
        if (*p != '\n') return fail();
        ++p;
        state_ = State::kDone;
        return Result{static_cast<size_t>(p - in.data()), true, false};
      case State::kDone:
        return Result{static_cast<size_t>(p - in.data()), true, false};
      case State::kError:
        return Result{static_cast<size_t>(p - in.data()), false, true};
    }
  }
  return Result{in.size(), state_ == State::kDone, state_ == State::kError};
}

}  // namespace onedomain::dataplane
