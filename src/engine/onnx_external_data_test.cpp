#include "engine/onnx_external_data.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

// Protobuf wire format by hand: a length-delimited field.
std::string Field(uint32_t number, const std::string& payload) {
  std::string out;
  uint64_t tag = (static_cast<uint64_t>(number) << 3) | 2;
  for (uint64_t value : {tag, static_cast<uint64_t>(payload.size())}) {
    while (value >= 0x80) {
      out += static_cast<char>((value & 0x7F) | 0x80);
      value >>= 7;
    }
    out += static_cast<char>(value);
  }
  return out + payload;
}

std::string ExternalTensor(const std::string& location) {
  // TensorProto { name: "w" (8), external_data (13) { key: "location", value } }
  return Field(8, "w") + Field(13, Field(1, "location") + Field(2, location)) +
         Field(13, Field(1, "offset") + Field(2, "0"));
}

TEST(OnnxExternalDataTest, FindsInitializerAndSubgraphLocations) {
  const std::string inner_graph = Field(5, ExternalTensor("inner.bin"));
  // NodeProto { attribute (5) { g (6): graph } }
  const std::string node = Field(5, Field(6, inner_graph));
  const std::string graph = Field(1, node) + Field(5, ExternalTensor("weights.bin"));
  const std::string model = std::string("\x08\x08", 2) + Field(7, graph);  // ir_version 8
  const auto locations = ListOnnxExternalDataLocations(model);
  ASSERT_TRUE(locations.ok()) << locations.status().message();
  EXPECT_EQ(*locations, (std::vector<std::string>{"inner.bin", "weights.bin"}));
}

TEST(OnnxExternalDataTest, ModelWithoutExternalData) {
  const std::string model = Field(7, Field(5, Field(8, "w")));
  const auto locations = ListOnnxExternalDataLocations(model);
  ASSERT_TRUE(locations.ok());
  EXPECT_TRUE(locations->empty());
}

TEST(OnnxExternalDataTest, RefusesMalformedBytes) {
  EXPECT_FALSE(ListOnnxExternalDataLocations("\x3a\x7f").ok());      // length past the end
  EXPECT_FALSE(ListOnnxExternalDataLocations("\x08\xff\xff").ok());  // truncated varint
  EXPECT_FALSE(ListOnnxExternalDataLocations("\x0b").ok());          // group wire type
  std::string nested = Field(5, "");
  for (int i = 0; i < 200; ++i) {
    nested = Field(5, Field(6, Field(1, nested)));  // attribute -> graph -> node, deeper and deeper
  }
  const auto deep = ListOnnxExternalDataLocations(Field(7, Field(1, nested)));
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("deeper"), std::string::npos);
}

}  // namespace
}  // namespace perch
