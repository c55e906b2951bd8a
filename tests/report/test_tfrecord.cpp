#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <string>

#include "tests/report/test_util.h"
#include "worker/report/crc32c.h"
#include "worker/report/report.h"
#include "worker/report/tfrecord.h"

namespace effnet::report {
namespace {

using testing::Slurp;
using testing::TempDir;

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(Crc32c(""), 0u);
  // RFC 3720 (iSCSI) B.4: 32 bytes of zeros, of 0xFF, and ascending 0..31.
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62A8AB43u);
  std::string inc;
  for (int i = 0; i < 32; ++i) inc.push_back(static_cast<char>(i));
  EXPECT_EQ(Crc32c(inc), 0x46DD794Eu);
}

TEST(Crc32c, ExtendEqualsWhole) {
  const std::string s = "The quick brown fox jumps over the lazy dog";
  for (size_t cut = 0; cut <= s.size(); cut += 7) {
    EXPECT_EQ(Crc32cExtend(Crc32c(s.data(), cut), s.data() + cut, s.size() - cut), Crc32c(s));
  }
}

TEST(Crc32c, MaskRoundTripAndFormula) {
  for (uint32_t c : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, 0x12345678u}) {
    EXPECT_EQ(UnmaskCrc(MaskCrc(c)), c);
    EXPECT_EQ(MaskCrc(c), static_cast<uint32_t>(((c >> 15) | (c << 17)) + 0xa282ead8u));
  }
}

TEST(TfRecord, FramingLayout) {
  const std::string rec = EncodeTfRecord("abc");
  ASSERT_EQ(rec.size(), 8u + 4 + 3 + 4);
  EXPECT_EQ(rec.substr(0, 8), std::string("\x03\0\0\0\0\0\0\0", 8));
  EXPECT_EQ(rec.substr(12, 3), "abc");
  auto le32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(rec[at + i])} << (8 * i);
    return v;
  };
  EXPECT_EQ(le32(8), MaskCrc(Crc32c(rec.data(), 8)));
  EXPECT_EQ(le32(15), MaskCrc(Crc32c("abc")));
}

TEST(TfRecord, DecodeDetectsCorruptionAndTruncation) {
  const std::string bytes = EncodeTfRecord("first") + EncodeTfRecord("second");
  auto ok = DecodeTfRecords(bytes, "mem");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[1], "second");

  std::string flipped = bytes;
  flipped[bytes.size() - 6] ^= 0x01;  // a byte of "second"
  auto bad = DecodeTfRecords(flipped, "mem");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("mem: record 1 at byte 21: data CRC mismatch"),
            std::string::npos)
      << bad.status().message();

  std::string bad_len = bytes;
  bad_len[0] = 9;
  auto bl = DecodeTfRecords(bad_len, "mem");
  ASSERT_FALSE(bl.ok());
  EXPECT_NE(bl.status().message().find("record 0 at byte 0: length CRC"), std::string::npos);

  auto cut = DecodeTfRecords(bytes.substr(0, bytes.size() - 2), "mem");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("truncated"), std::string::npos);
}

TEST(EventProto, ScalarEventWireBytes) {
  // Hand-checked wire bytes: Event{wall_time=1.5, step=3, summary{value{tag="a",
  // simple_value=0.5}}}.
  const std::string ev = EncodeScalarEvent(1.5, 3, "a", 0.5f);
  const std::string expected(
      "\x09\x00\x00\x00\x00\x00\x00\xf8\x3f"  // field 1 fixed64 1.5
      "\x10\x03"                              // field 2 varint 3
      "\x2a\x0a"                              // field 5, 10 bytes
      "\x0a\x08"                              // Summary.value, 8 bytes
      "\x0a\x01"
      "a"                      // tag
      "\x15\x00\x00\x00\x3f",  // simple_value 0.5f
      23);
  EXPECT_EQ(ev, expected);
}

TEST(EventProto, RoundTripIncludingNegativeAndLargeSteps) {
  for (int64_t step : {int64_t{0}, int64_t{1}, int64_t{300}, int64_t{-5}, int64_t{1} << 40}) {
    auto ev = DecodeEvent(EncodeScalarEvent(1.7e9, step, "train/loss", 0.25f));
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    EXPECT_EQ(ev->step, step);
    EXPECT_DOUBLE_EQ(ev->wall_time, 1.7e9);
    ASSERT_EQ(ev->scalars.size(), 1u);
    EXPECT_EQ(ev->scalars[0].first, "train/loss");
    EXPECT_FLOAT_EQ(ev->scalars[0].second, 0.25f);
  }
  auto fv = DecodeEvent(EncodeFileVersionEvent(12.0, "brain.Event:2"));
  ASSERT_TRUE(fv.ok());
  EXPECT_EQ(fv->file_version, "brain.Event:2");
  EXPECT_TRUE(fv->scalars.empty());

  auto bad = DecodeEvent(std::string("\x2a\x7f", 2));  // length past the end
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kDataLoss);
}

TEST(TensorBoardWriter, WritesReadableEventFile) {
  TempDir tmp;
  const std::string dir = tmp / "tb/run1";  // created by Create()
  std::string path;
  {
    auto w = TensorBoardWriter::Create(dir);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    path = (*w)->path();
    for (int step = 0; step < 50; ++step) {
      ASSERT_TRUE((*w)->AddScalar("train/loss", 2.0 / (step + 1), step).ok());
      if (step % 10 == 0) {
        ASSERT_TRUE((*w)->AddScalar("val/accuracy", 0.01 * step, step).ok());
      }
    }
    ASSERT_TRUE((*w)->Flush().ok());
    EXPECT_FALSE((*w)->AddScalar("", 1.0, 0).ok());
  }
  const std::string name = std::filesystem::path(path).filename().string();
  EXPECT_EQ(std::filesystem::path(path).parent_path(), std::filesystem::path(dir));
  EXPECT_EQ(name.rfind("events.out.tfevents.", 0), 0u) << name;

  auto records = ReadTfRecordFile(path);
  ASSERT_TRUE(records.ok()) << records.status().ToString();
  ASSERT_EQ(records->size(), 1u + 50 + 5);
  auto first = DecodeEvent((*records)[0]);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(first->file_version, "brain.Event:2");
  int losses = 0, accs = 0;
  for (size_t i = 1; i < records->size(); ++i) {
    auto ev = DecodeEvent((*records)[i]);
    ASSERT_TRUE(ev.ok()) << ev.status().ToString();
    ASSERT_EQ(ev->scalars.size(), 1u);
    EXPECT_GE(ev->wall_time, first->wall_time);
    const auto& [tag, value] = ev->scalars[0];
    if (tag == "train/loss") {
      EXPECT_FLOAT_EQ(value, static_cast<float>(2.0 / (ev->step + 1)));
      ++losses;
    } else {
      EXPECT_EQ(tag, "val/accuracy");
      EXPECT_FLOAT_EQ(value, static_cast<float>(0.01 * ev->step));
      ++accs;
    }
  }
  EXPECT_EQ(losses, 50);
  EXPECT_EQ(accs, 5);
}

TEST(TensorBoardWriter, TwoWritersInOneDirectoryGetTwoFiles) {
  TempDir tmp;
  auto a = TensorBoardWriter::Create(tmp / "tb");
  auto b = TensorBoardWriter::Create(tmp / "tb");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE((*a)->path(), (*b)->path());
}

TEST(TensorBoardWriter, UncreatableDirectoryIsAnError) {
  TempDir tmp;
  testing::Spit(tmp / "file", "x");
  auto w = TensorBoardWriter::Create(tmp / "file/sub");
  ASSERT_FALSE(w.ok());
  EXPECT_NE(w.status().message().find("file/sub"), std::string::npos) << w.status().message();
}

}  // namespace
}  // namespace effnet::report
