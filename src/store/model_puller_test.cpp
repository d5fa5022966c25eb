#include "store/model_puller.h"

#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "store/media_types.h"

namespace perch {
namespace {

namespace fs = std::filesystem;

class ModelPullerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("perch_puller_test_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  // A model whose blobs (and manifest) are in `blobs`.
  FetchedModel Cache(BlobStore& blobs, int64_t version, const std::string& onnx) {
    ModelMetadata metadata;
    metadata.name = "m";
    metadata.version = version;
    metadata.model_config_json = R"({"max_batch_size":4})";
    const std::string config = EncodeModelConfig(metadata);
    std::vector<ModelFile> files;
    for (const auto& [path, bytes] :
         std::vector<std::pair<std::string, std::string>>{{"model.onnx", onnx}, {"d/w.bin", "w"}}) {
      EXPECT_TRUE(blobs.Put(bytes).ok());
      files.push_back(
          {path,
           Descriptor{std::string(LayerMediaTypeFor(path)), Sha256Of(bytes), bytes.size(), {}}});
    }
    EXPECT_TRUE(blobs.Put(config).ok());
    const std::string manifest = EncodeModelManifest(
        metadata,
        Descriptor{std::string(media_type::kPerchModelConfig), Sha256Of(config), config.size(), {}},
        files);
    EXPECT_TRUE(blobs.Put(manifest).ok());
    auto loaded = LoadCachedModel(blobs, Sha256Of(manifest));
    EXPECT_TRUE(loaded.ok()) << loaded.status().ToString();
    return *loaded;
  }

  static std::string Read(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  fs::path root_;
};

TEST_F(ModelPullerTest, InstallsAtomicallyAndOnlyOnce) {
  auto blobs = BlobStore::Open(root_ / "blobs");
  ASSERT_TRUE(blobs.ok());
  const FetchedModel model = Cache(**blobs, 2, "onnx-v2");
  const fs::path repo = root_ / "repo";
  auto installed = InstallModel(**blobs, model, repo, "h:1/m:2");
  ASSERT_TRUE(installed.ok()) << installed.status().ToString();
  EXPECT_TRUE(*installed);
  EXPECT_EQ(Read(repo / "m" / "2" / "model.onnx"), "onnx-v2");
  EXPECT_EQ(Read(repo / "m" / "2" / "d" / "w.bin"), "w");
  EXPECT_NE(Read(repo / "m" / "model.json").find("\"max_batch_size\": 4"), std::string::npos);
  EXPECT_EQ(InstalledDigest(repo / "m" / "2"), model.digest);

  installed = InstallModel(**blobs, model, repo, "h:1/m:2");
  ASSERT_TRUE(installed.ok());
  EXPECT_FALSE(*installed) << "the same digest is left as is";

  // Another artifact with the same version number replaces the folder whole.
  const FetchedModel other = Cache(**blobs, 2, "onnx-v2-rebuilt");
  installed = InstallModel(**blobs, other, repo, "h:1/m:2");
  ASSERT_TRUE(installed.ok());
  EXPECT_TRUE(*installed);
  EXPECT_EQ(Read(repo / "m" / "2" / "model.onnx"), "onnx-v2-rebuilt");
  for (const auto& entry : fs::directory_iterator(repo / "m")) {
    EXPECT_FALSE(entry.path().filename().string().starts_with(".staging")) << entry.path();
  }
}

TEST_F(ModelPullerTest, MissingBlobIsNotFound) {
  auto blobs = BlobStore::Open(root_ / "blobs");
  ASSERT_TRUE(blobs.ok());
  const FetchedModel model = Cache(**blobs, 1, "onnx");
  ASSERT_TRUE((*blobs)->Remove(Sha256Of("w")).ok());
  EXPECT_EQ(LoadCachedModel(**blobs, model.digest).status().code(), StatusCode::kNotFound);
}

TEST_F(ModelPullerTest, UnreachableRegistryFallsBackToTheRecordedDigest) {
  auto puller = ModelPuller::Open(root_ / "state");
  ASSERT_TRUE(puller.ok());
  RegistryClientOptions options;
  options.registry = "127.0.0.1:1";
  auto client = RegistryClient::Create(options);
  ASSERT_TRUE(client.ok());
  const auto reference = Reference::Parse("127.0.0.1:1/m:1");
  ASSERT_TRUE(reference.ok());

  // Nothing recorded: the registry's error, which says what is wrong.
  auto synced = (*puller)->Sync(**client, *reference);
  ASSERT_FALSE(synced.ok());
  EXPECT_EQ(synced.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(synced.status().message().find("registry 127.0.0.1:1 is unreachable"),
            std::string::npos)
      << synced.status().message();

  // Recorded earlier (as a previous run would have): served from the cache.
  auto blobs = BlobStore::Open(root_ / "state" / "blobs");
  ASSERT_TRUE(blobs.ok());
  const FetchedModel model = Cache(**blobs, 1, "cached");
  {
    std::ofstream(root_ / "state" / "pulled.json")
        << R"({"references": {"127.0.0.1:1/m:1": {"digest": ")" << model.digest.str()
        << R"(", "model": "m", "version": 1, "pulled_at": "2024-01-01T00:00:00Z"}}})";
  }
  puller = ModelPuller::Open(root_ / "state");
  ASSERT_TRUE(puller.ok()) << puller.status().ToString();
  synced = (*puller)->Sync(**client, *reference);
  ASSERT_TRUE(synced.ok()) << synced.status().ToString();
  EXPECT_TRUE(synced->from_cache);
  EXPECT_EQ(synced->registry_status.code(), StatusCode::kUnavailable);
  EXPECT_EQ(synced->record.digest, model.digest);
  EXPECT_EQ(Read(root_ / "state" / "models" / "m" / "1" / "model.onnx"), "cached");
}

TEST_F(ModelPullerTest, PruneKeepsOnlyWhatIsAsked) {
  auto puller = ModelPuller::Open(root_ / "state");
  ASSERT_TRUE(puller.ok());
  const fs::path models = (*puller)->models_folder();
  for (const auto& folder : {"a/1", "a/2", "a/.staging-x", "b/1"}) {
    fs::create_directories(models / folder);
  }
  ASSERT_TRUE((*puller)->Prune({{"a", 2}}).ok());
  EXPECT_FALSE(fs::exists(models / "a" / "1"));
  EXPECT_TRUE(fs::exists(models / "a" / "2"));
  EXPECT_FALSE(fs::exists(models / "a" / ".staging-x"));
  EXPECT_FALSE(fs::exists(models / "b"));
}

}  // namespace
}  // namespace perch
