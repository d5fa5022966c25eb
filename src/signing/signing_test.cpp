#include "signing/signing.h"

#include <gtest/gtest.h>

TEST(SigningTest, Placeholder) { EXPECT_EQ(perch::signing::kSignatureFileName, "model.sig"); }
