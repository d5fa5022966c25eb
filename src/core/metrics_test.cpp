#include "core/metrics.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

TEST(MetricsTest, SameLabelsGiveSameCounter) {
  MetricsRegistry registry;
  Counter& a = registry.GetCounter("requests_total", "help", {{"model", "m"}});
  Counter& b = registry.GetCounter("requests_total", "help", {{"model", "m"}});
  Counter& other = registry.GetCounter("requests_total", "help", {{"model", "n"}});
  a.Increment();
  b.Increment(2);
  EXPECT_EQ(&a, &b);
  EXPECT_EQ(a.Value(), 3u);
  EXPECT_EQ(other.Value(), 0u);
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Histogram histogram({0.1, 1.0});
  histogram.Observe(0.05);
  histogram.Observe(0.5);
  histogram.Observe(0.5);
  histogram.Observe(7.0);
  const auto snapshot = histogram.Read();
  EXPECT_EQ(snapshot.cumulative_counts, (std::vector<uint64_t>{1, 3, 4}));
  EXPECT_EQ(snapshot.count, 4u);
  EXPECT_NEAR(snapshot.sum, 8.05, 1e-6);
}

TEST(MetricsTest, RendersPrometheusText) {
  MetricsRegistry registry;
  registry.GetCounter("perch_x_total", "X things", {{"model", "a\"b"}}).Increment(5);
  registry.GetGauge("perch_depth", "Depth", {}).Set(-3);
  registry.GetHistogram("perch_y_seconds", "Y time", {{"model", "m"}}, {0.5}).Observe(0.25);
  const std::string text = registry.RenderPrometheus();
  EXPECT_NE(text.find("# TYPE perch_x_total counter\n"), std::string::npos);
  EXPECT_NE(text.find("perch_x_total{model=\"a\\\"b\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE perch_depth gauge\nperch_depth -3\n"), std::string::npos);
  EXPECT_NE(text.find("# TYPE perch_y_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("perch_y_seconds_bucket{model=\"m\",le=\"0.5\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("perch_y_seconds_bucket{model=\"m\",le=\"+Inf\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("perch_y_seconds_count{model=\"m\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("perch_y_seconds_sum{model=\"m\"} 0.25\n"), std::string::npos);
}

}  // namespace
}  // namespace perch
