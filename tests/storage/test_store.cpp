#include <gtest/gtest.h>
#include <hdf5.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "storage/dataset_reader.h"
#include "storage/h5util.h"
#include "storage/inspect.h"
#include "storage/layout.h"
#include "storage/writer.h"
#include "tests/storage/temp_dir.h"

namespace effnet::storage {
namespace {

constexpr int kSize = 12;
constexpr size_t kBytes = kSize * kSize * 3;

// Image i: every byte a function of (i, position), so misplaced reads show.
std::vector<uint8_t> Pixels(int64_t i) {
  std::vector<uint8_t> p(kBytes);
  for (size_t k = 0; k < kBytes; ++k) p[k] = static_cast<uint8_t>((i * 31 + k * 7 + k / 5) & 0xFF);
  return p;
}

StoreMetadata Meta(int64_t n) {
  StoreMetadata m;
  m.class_names = {"a", "b", "c"};
  for (int64_t i = 0; i < n; ++i) {
    m.labels.push_back(static_cast<int32_t>(i % 3));
    m.splits.push_back(static_cast<Split>(i % 5 == 0 ? 2 : i % 5 == 1 ? 1 : 0));
    m.source_paths.push_back("img" + std::to_string(i) + ".png");
    m.content_hash.push_back(1000 + static_cast<uint64_t>(i));
    m.perceptual_hash.push_back(static_cast<uint64_t>(i) << 20);
  }
  m.prepare_settings_json = R"({"test":true})";
  return m;
}

void WriteStore(const std::string& path, int64_t n, StoreMetadata meta) {
  auto w = DatasetWriter::Create(path, kSize);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  for (int64_t i = 0; i < n; ++i) ASSERT_TRUE((*w)->Append(Pixels(i).data()).ok());
  std::vector<uint8_t> back(kBytes);
  ASSERT_TRUE((*w)->ReadBack(n / 2, back.data()).ok());
  EXPECT_EQ(back, Pixels(n / 2));
  Status st = (*w)->Finish(meta);
  ASSERT_TRUE(st.ok()) << st.ToString();
}

// Sets an int attribute of the root group of an existing file.
void SetRootIntAttr(const std::string& path, const char* name, int32_t v) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  hid_t a = H5Aopen_by_name(f, "/", name, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(a, 0);
  ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT32, &v), 0);
  H5Aclose(a);
  H5Fclose(f);
}

TEST(Store, RoundTripBothReadPaths) {
  testing::TempDir dir;
  const std::string path = dir / "s.h5";
  const int64_t n = 1100;  // past the writer's first growth step (1024)
  WriteStore(path, n, Meta(n));

  for (bool direct : {true, false}) {
    ReaderOptions o;
    o.direct_reads = direct;
    auto r = DatasetReader::Open(path, o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    const DatasetInfo& info = (*r)->info();
    EXPECT_EQ(info.schema_version, layout::kSchemaVersion);
    EXPECT_EQ(info.num_images, n);
    EXPECT_EQ(info.image_size, kSize);
    EXPECT_EQ(info.class_names, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_EQ(info.labels, Meta(n).labels);
    EXPECT_EQ(info.splits, Meta(n).splits);
    EXPECT_EQ(info.source_paths[17], "img17.png");
    EXPECT_EQ(info.content_hash[3], 1003u);
    EXPECT_EQ(info.perceptual_hash[3], uint64_t{3} << 20);
    EXPECT_EQ(info.origin[9], 9);
    EXPECT_EQ(info.augmentation[9], 0);
    EXPECT_EQ(info.source, R"({"test":true})");
    EXPECT_EQ(info.IndicesOf(Split::kTest).size(), 220u);

    // Any order, duplicates allowed.
    const std::vector<int64_t> idx = {1099, 0, 517, 517, 3, 1024};
    std::vector<uint8_t> buf(idx.size() * kBytes);
    Status st = (*r)->ReadImages(idx, buf.data());
    ASSERT_TRUE(st.ok()) << st.ToString();
    for (size_t k = 0; k < idx.size(); ++k) {
      std::vector<uint8_t> got(buf.begin() + k * kBytes, buf.begin() + (k + 1) * kBytes);
      EXPECT_EQ(got, Pixels(idx[k])) << "direct=" << direct << " image " << idx[k];
    }
    Status bad = (*r)->ReadImages({n}, buf.data());
    EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  }
  auto offsets = ImageFileOffsets(path);
  ASSERT_TRUE(offsets.ok()) << offsets.status().ToString();
  EXPECT_EQ(offsets->size(), static_cast<size_t>(n));
}

TEST(Store, FinishChecksMetadata) {
  testing::TempDir dir;
  auto w = DatasetWriter::Create(dir / "m.h5", kSize);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(Pixels(0).data()).ok());
  ASSERT_TRUE((*w)->Append(Pixels(1).data()).ok());
  StoreMetadata m = Meta(1);  // one entry short
  EXPECT_EQ((*w)->Finish(m).code(), StatusCode::kInvalidArgument);
  m = Meta(2);
  m.labels[1] = 3;  // outside the 3 classes
  EXPECT_EQ((*w)->Finish(m).code(), StatusCode::kInvalidArgument);
}

TEST(Store, RefusesOtherSchemaVersion) {
  testing::TempDir dir;
  const std::string path = dir / "v.h5";
  WriteStore(path, 4, Meta(4));
  SetRootIntAttr(path, layout::kAttrSchemaVersion, layout::kSchemaVersion + 1);
  auto r = DatasetReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("schema version 2"), std::string::npos)
      << r.status().message();
}

TEST(Store, RefusesTruncatedFile) {
  testing::TempDir dir;
  const std::string path = dir / "t.h5";
  WriteStore(path, 50, Meta(50));
  const auto size = std::filesystem::file_size(path);
  for (auto keep : {size / 2, size - 100, static_cast<uintmax_t>(100)}) {
    const std::string cut = dir / ("cut" + std::to_string(keep) + ".h5");
    std::filesystem::copy_file(path, cut);
    std::filesystem::resize_file(cut, keep);
    auto r = DatasetReader::Open(cut);
    ASSERT_FALSE(r.ok()) << "kept " << keep << " of " << size;
    EXPECT_NE(r.status().message().find(cut), std::string::npos) << r.status().message();
  }
}

TEST(Store, RefusesForeignAndNonHdf5Files) {
  testing::TempDir dir;
  const std::string text = dir / "notes.h5";
  std::ofstream(text) << "this is not HDF5\n";
  auto r = DatasetReader::Open(text);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not an HDF5 file"), std::string::npos);
  EXPECT_NE(r.status().message().find(text), std::string::npos);

  const std::string foreign = dir / "foreign.h5";
  hid_t f = H5Fcreate(foreign.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t dims[4] = {2, kSize, kSize, 3};
  hid_t sp = H5Screate_simple(4, dims, nullptr);
  hid_t d = H5Dcreate2(f, "/images", H5T_STD_U8LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(d);
  H5Sclose(sp);
  H5Fclose(f);
  r = DatasetReader::Open(foreign);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("not an effnet image store"), std::string::npos)
      << r.status().message();

  r = DatasetReader::Open(dir / "absent.h5");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
}

TEST(Store, RefusesUnfinishedFile) {
  testing::TempDir dir;
  const std::string path = dir / "u.h5";
  {
    auto w = DatasetWriter::Create(path, kSize);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE((*w)->Append(Pixels(0).data()).ok());
  }  // destroyed without Finish()
  auto r = DatasetReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find(path), std::string::npos);
}

// Replaces dataset `name` of an existing store with `values` (variable-length strings).
void ReplaceStrings(const std::string& path, const char* name,
                    const std::vector<std::string>& values) {
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  ASSERT_GE(H5Ldelete(f, name, H5P_DEFAULT), 0);
  ASSERT_TRUE(h5::WriteStrings(f, name, values).ok());
  H5Fclose(f);
}

TEST(Store, RefusesTextThatIsNotUtf8) {
  testing::TempDir dir;
  const std::string path = dir / "l1.h5";
  WriteStore(path, 4, Meta(4));
  ReplaceStrings(path, layout::kClassNames, {"a", "caf\xe9", "c"});  // Latin-1 e-acute
  auto r = DatasetReader::Open(path);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(r.status().message().find(path), std::string::npos) << r.status().message();
  EXPECT_NE(r.status().message().find("/class_names[1] is not valid UTF-8"), std::string::npos)
      << r.status().message();

  // The writer refuses it at the door.
  auto w = DatasetWriter::Create(dir / "w.h5", kSize);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE((*w)->Append(Pixels(0).data()).ok());
  StoreMetadata m = Meta(1);
  m.source_paths[0] = "\xff.png";
  Status st = (*w)->Finish(m);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("source_paths[0]"), std::string::npos) << st.message();
}

TEST(Inspect, JsonOfAStoreWithALatin1Name) {
  // The store's own path comes from the command line and may be Latin-1: never a throw.
  testing::TempDir dir;
  const std::string path = dir / "caf\xe9.h5";
  WriteStore(path, 4, Meta(4));
  auto rep = Inspect(path, 4);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  std::string json;
  ASSERT_NO_THROW(json = ToJson(*rep));
  EXPECT_NE(json.find("caf\xef\xbf\xbd.h5"), std::string::npos) << json;  // U+FFFD
}

TEST(Store, RefusesAttributeThatIsNotAScalar) {
  // An array-valued attribute would overrun the one-value buffer it is read into.
  testing::TempDir dir;
  const std::string path = dir / "a.h5";
  WriteStore(path, 4, Meta(4));
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  ASSERT_GE(H5Adelete_by_name(f, "/", layout::kAttrImageSize, H5P_DEFAULT), 0);
  hsize_t n = 1000;
  hid_t sp = H5Screate_simple(1, &n, nullptr);
  hid_t a = H5Acreate_by_name(f, "/", layout::kAttrImageSize, H5T_STD_I32LE, sp, H5P_DEFAULT,
                              H5P_DEFAULT, H5P_DEFAULT);
  std::vector<int32_t> v(n, kSize);
  ASSERT_GE(H5Awrite(a, H5T_NATIVE_INT32, v.data()), 0);
  H5Aclose(a);
  H5Sclose(sp);
  H5Fclose(f);
  for (bool child : {true, false}) {
    ReaderOptions o;
    o.validate_in_child = child;
    auto r = DatasetReader::Open(path, o);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("'image_size' is not a scalar"), std::string::npos)
        << r.status().message();
  }
}

TEST(Store, CorpusOfCorruptStoresIsRefused) {
  // tests/storage/fuzz_corpus: mutants that crashed libhdf5 (or this reader) before it was
  // hardened. Each must be refused as DataLoss with the file named; none may crash this process.
  const char* src = std::getenv("EFFNET_SOURCE_DIR");
  const auto corpus = src ? std::filesystem::path(src) / "tests/storage/fuzz_corpus"
                          : std::filesystem::path(__FILE__).parent_path() / "fuzz_corpus";
  int files = 0, crashes = 0, hangs = 0;
  for (const auto& e : std::filesystem::directory_iterator(corpus)) {
    if (e.path().extension() != ".h5") continue;
    ++files;
    ReaderOptions o;
    o.validate_timeout_s = 5;  // some of them send libhdf5 into an endless loop
    auto r = DatasetReader::Open(e.path().string(), o);
    ASSERT_FALSE(r.ok()) << e.path();
    EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().message();
    EXPECT_NE(r.status().message().find(e.path().string()), std::string::npos)
        << r.status().message();
    crashes += r.status().message().find("libhdf5 crashed reading") != std::string::npos;
    hangs += r.status().message().find("libhdf5 did not finish reading") != std::string::npos;
  }
  EXPECT_GT(files, 0);
  EXPECT_GT(crashes, 0);  // caught in the validation child
  EXPECT_GT(hangs, 0);
}

TEST(Prefetcher, ReturnsBatchesInOrderWithLabels) {
  testing::TempDir dir;
  const std::string path = dir / "p.h5";
  const int64_t n = 64;
  WriteStore(path, n, Meta(n));
  auto r = DatasetReader::Open(path);
  ASSERT_TRUE(r.ok());
  std::vector<std::vector<int64_t>> batches;
  for (int b = 0; b < 9; ++b) {
    std::vector<int64_t> idx;
    for (int k = 0; k < 1 + b % 4; ++k) idx.push_back((b * 13 + k * 5) % n);
    batches.push_back(idx);
  }
  for (int depth : {1, 3}) {
    BatchPrefetcher pf(**r, batches, depth);
    BatchPrefetcher::Batch batch;
    for (size_t b = 0; b < batches.size(); ++b) {
      auto more = pf.Next(&batch);
      ASSERT_TRUE(more.ok()) << more.status().ToString();
      ASSERT_TRUE(*more);
      ASSERT_EQ(batch.indices, batches[b]);
      ASSERT_EQ(batch.pixels.size(), batches[b].size() * kBytes);
      for (size_t k = 0; k < batches[b].size(); ++k) {
        const int64_t i = batches[b][k];
        EXPECT_EQ(batch.labels[k], i % 3);
        EXPECT_TRUE(std::equal(batch.pixels.begin() + k * kBytes,
                               batch.pixels.begin() + (k + 1) * kBytes, Pixels(i).begin()));
      }
    }
    auto done = pf.Next(&batch);
    ASSERT_TRUE(done.ok());
    EXPECT_FALSE(*done);
  }
}

TEST(Prefetcher, ReportsReadErrorAndStopsEarlyOnDestruction) {
  testing::TempDir dir;
  const std::string path = dir / "e.h5";
  WriteStore(path, 8, Meta(8));
  auto r = DatasetReader::Open(path);
  ASSERT_TRUE(r.ok());
  {
    BatchPrefetcher pf(**r, {{0, 1}, {99}, {2}});
    BatchPrefetcher::Batch batch;
    ASSERT_TRUE(pf.Next(&batch).value());
    auto bad = pf.Next(&batch);
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("batch 1"), std::string::npos);
  }
  {
    // Destroyed with batches still pending: must not hang.
    std::vector<std::vector<int64_t>> many(100, std::vector<int64_t>{1, 2, 3});
    BatchPrefetcher pf(**r, many, 2);
    BatchPrefetcher::Batch batch;
    ASSERT_TRUE(pf.Next(&batch).value());
  }
}

TEST(Inspect, CountsAndCrossSplitDuplicates) {
  testing::TempDir dir;
  const std::string path = dir / "i.h5";
  StoreMetadata m = Meta(10);
  m.content_hash[7] = m.content_hash[2];  // 2 is train, 7 is train: same split, no leak
  m.content_hash[5] = m.content_hash[1];  // 1 is val, 5 is test: a leak
  WriteStore(path, 10, m);
  auto rep = Inspect(path, 4);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_EQ(rep->num_images, 10);
  EXPECT_EQ(rep->duplicate_groups, 2);
  EXPECT_EQ(rep->duplicate_groups_across_splits, 1);
  EXPECT_EQ(rep->split_totals[2], 2);
  EXPECT_EQ(rep->counts[0][0] + rep->counts[0][1] + rep->counts[0][2], 4);
  const std::string json = ToJson(*rep);
  EXPECT_NE(json.find("\"duplicate_groups_across_splits\": 1"), std::string::npos) << json;
  EXPECT_NE(ToText(*rep).find("LEAK"), std::string::npos);
}

}  // namespace
}  // namespace effnet::storage
