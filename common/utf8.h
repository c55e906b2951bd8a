// UTF-8 checks and the one transcoding we do (Latin-1 -> UTF-8).
//
// Note [text encoding]: every string we store (class names, source paths, settings JSON) is
// UTF-8, because JSON writers (effnet-inspect --json, checkpoint meta.json) throw on anything
// else. Input text that is not valid UTF-8 is taken as Latin-1 (ISO-8859-1), where every byte is
// a character, so the transcoding never fails and is reversible; readers refuse a stored string
// that is not UTF-8 instead of passing it on.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace effnet {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF).
bool IsValidUtf8(std::string_view s);
// Byte offset of the first byte that is not part of well-formed UTF-8; npos when valid.
size_t FirstInvalidUtf8(std::string_view s);
// Each byte of `s` as the Latin-1 character it stands for, encoded as UTF-8.
std::string Latin1ToUtf8(std::string_view s);
// `s` when it is valid UTF-8, else Latin1ToUtf8(s).
std::string ToUtf8(std::string_view s);
// The longest prefix of `s` (valid UTF-8) of at most `max_bytes` bytes that ends on a character
// boundary.
std::string TruncateUtf8(std::string_view s, size_t max_bytes);
// The inverse of Latin1ToUtf8: false when `s` is not UTF-8 or has a code point past U+00FF.
bool Utf8ToLatin1(std::string_view s, std::string* out);

}  // namespace effnet
