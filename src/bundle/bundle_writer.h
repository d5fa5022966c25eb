// Writes a location bundle's tar (bundle_format.h) with libarchive: the
// layout files, then each blob streamed from a BlobStore in 1 MiB pieces
// (POSIX pax format, so blobs over 8 GiB fit), to a temporary file renamed
// over `out` once complete. Deterministic: entries sorted, times zero.
//
// Threading: a free function; as thread-safe as the BlobStore.
#pragma once

#include <filesystem>
#include <set>
#include <string>

#include "core/status.h"
#include "store/blob_store.h"
#include "store/digest.h"

namespace perch::bundle {

// NotFound when a blob is missing from `blobs`; Internal on I/O errors.
Status WriteBundle(const std::filesystem::path& out, const BlobStore& blobs,
                   const std::set<Digest>& digests, const std::string& index_json);

}  // namespace perch::bundle
