#include "tensor/npy.h"

#include <gtest/gtest.h>

#include <cstring>

namespace perch {
namespace {

// A version 1.0 .npy file with `header_dict`, padded as NumPy pads it.
std::string Npy(const std::string& header_dict, const std::string& payload) {
  std::string header = header_dict;
  while ((10 + header.size() + 1) % 64 != 0) {
    header += ' ';
  }
  header += '\n';
  std::string file = "\x93NUMPY\x01";
  file += '\0';
  file += static_cast<char>(header.size() & 0xFF);
  file += static_cast<char>(header.size() >> 8);
  return file + header + payload;
}

TEST(NpyTest, DecodesFloat32Matrix) {
  const float values[] = {1, 2, 3, 4, 5, 6};
  const auto tensor =
      DecodeNpy(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                    std::string(reinterpret_cast<const char*>(values), sizeof(values))),
                "x");
  ASSERT_TRUE(tensor.ok()) << tensor.status().message();
  EXPECT_EQ(tensor->name, "x");
  EXPECT_EQ(tensor->datatype, DataType::kFp32);
  EXPECT_EQ(tensor->shape, (Shape{2, 3}));
  EXPECT_EQ(tensor->data.size(), sizeof(values));
}

TEST(NpyTest, DecodesScalarsBoolsAndBytes) {
  const int64_t value = -7;
  const auto scalar = DecodeNpy(Npy("{'descr': '<i8', 'fortran_order': False, 'shape': (), }",
                                    std::string(reinterpret_cast<const char*>(&value), 8)),
                                "sr");
  ASSERT_TRUE(scalar.ok());
  EXPECT_EQ(scalar->datatype, DataType::kInt64);
  EXPECT_TRUE(scalar->shape.empty());

  const auto flags = DecodeNpy(
      Npy("{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", std::string("\x01\x00", 2)),
      "b");
  ASSERT_TRUE(flags.ok());
  EXPECT_EQ(flags->datatype, DataType::kBool);

  const auto words = DecodeNpy(
      Npy("{'descr': '|S3', 'fortran_order': False, 'shape': (2,), }", std::string("ab\0xyz", 6)),
      "w");
  ASSERT_TRUE(words.ok()) << words.status().message();
  EXPECT_EQ(words->datatype, DataType::kBytes);
  EXPECT_EQ(words->data, std::string("\x02\0\0\0ab\x03\0\0\0xyz", 13));
}

TEST(NpyTest, RefusesBadFiles) {
  const auto expect_error = [](const std::string& file, const std::string& fragment) {
    const auto tensor = DecodeNpy(file, "x");
    ASSERT_FALSE(tensor.ok());
    EXPECT_EQ(tensor.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(tensor.status().message().find(fragment), std::string::npos)
        << tensor.status().message();
  };
  expect_error("not numpy at all", "magic");
  expect_error(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", "1234"),
               "needs 2 elements");
  expect_error(Npy("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", "1234"),
               "'>f4' is not supported");
  expect_error(Npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", "1234"), "Fortran");
  expect_error(Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", ""), "shape");
  expect_error(Npy("{'fortran_order': False, 'shape': (1,), }", "1234"), "no 'descr'");
  std::string truncated = Npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "");
  truncated.resize(20);
  expect_error(truncated, "runs past the end");
}

}  // namespace
}  // namespace perch
