#include "fleet/placement.h"

#include <gtest/gtest.h>

namespace perch {
namespace {

PlacementCandidate Candidate(std::string name, std::string location, size_t placements = 0,
                             int64_t memory = 0, double load = 0) {
  return PlacementCandidate{.name = std::move(name),
                            .location = std::move(location),
                            .live = true,
                            .placed = false,
                            .placements = placements,
                            .memory_available_bytes = memory,
                            .load = load};
}

using Names = std::vector<std::string>;

TEST(PlacementTest, RanksByPlacementsThenMemoryThenLoadThenName) {
  EXPECT_EQ(PlaceReplicas({Candidate("a", "l", 1, 900), Candidate("b", "l", 0, 100)}, 1),
            Names{"b"});
  EXPECT_EQ(PlaceReplicas({Candidate("a", "l", 0, 100), Candidate("b", "l", 0, 900)}, 1),
            Names{"b"});
  EXPECT_EQ(PlaceReplicas({Candidate("a", "l", 0, 100, 2.0), Candidate("b", "l", 0, 100, 0.5)}, 1),
            Names{"b"});
  EXPECT_EQ(PlaceReplicas({Candidate("b", "l"), Candidate("a", "l")}, 1), Names{"a"});
}

TEST(PlacementTest, PlacesPerLocationAndTakesAllWhereThereAreFewer) {
  EXPECT_EQ(PlaceReplicas({Candidate("a1", "a"), Candidate("a2", "a"), Candidate("a3", "a"),
                           Candidate("b1", "b")},
                          2),
            (Names{"a1", "a2", "b1"}));
  EXPECT_TRUE(PlaceReplicas({Candidate("a1", "a")}, 0).empty());
  EXPECT_TRUE(PlaceReplicas({}, 3).empty());
}

TEST(PlacementTest, KeepsWhatIsPlacedWhileLiveAndDropsTheWorstWhenThereAreTooMany) {
  PlacementCandidate held = Candidate("z", "l", 5, 1);
  held.placed = true;
  // Held and live: kept, although every other device ranks better.
  EXPECT_EQ(PlaceReplicas({held, Candidate("a", "l"), Candidate("b", "l")}, 1), Names{"z"});
  // Held and gone: replaced by the best live one.
  held.live = false;
  EXPECT_EQ(PlaceReplicas({held, Candidate("a", "l"), Candidate("b", "l")}, 1), Names{"a"});
  // Not live, not held: never chosen, even with nothing else.
  EXPECT_TRUE(PlaceReplicas({held}, 1).empty());

  PlacementCandidate first = Candidate("a", "l", 0, 100);
  PlacementCandidate second = Candidate("b", "l", 3, 100);
  first.placed = second.placed = true;
  EXPECT_EQ(PlaceReplicas({first, second, Candidate("c", "l")}, 1), Names{"a"});
  EXPECT_EQ(PlaceReplicas({first, second, Candidate("c", "l")}, 3), (Names{"a", "b", "c"}));
}

}  // namespace
}  // namespace perch
