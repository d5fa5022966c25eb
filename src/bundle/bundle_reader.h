// Reads a location bundle's tar (bundle_format.h) as a stream, with
// libarchive: one pass, a buffer of 1 MiB whatever the bundle's size, every
// blob hashed as it passes and stored in a BlobStore only when its bytes
// hash to the name it has in the tar. Nothing outside the layout is
// accepted: an entry that is not oci-layout, index.json, blobs/,
// blobs/sha256/ or blobs/sha256/<64 hex> (an absolute path, "..", another
// name), a link, a device or any other special file, an entry given twice,
// a declared size over the limit, or a truncated archive is refused
// (InvalidArgument naming the entry) before its bytes are read.
//
// Blobs stored before a refusal stay in the store: it is content-addressed
// and verified, so they change nothing that is served.
//
// Threading: free functions; as thread-safe as the BlobStore they are given.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "core/status.h"
#include "store/blob_store.h"
#include "store/digest.h"

namespace perch::bundle {

struct ReaderLimits {
  // Largest blob (declared in its tar header) accepted.
  uint64_t max_blob_bytes = uint64_t{64} << 30;
  // Most entries accepted: a bundle is a few thousand files at most.
  uint64_t max_entries = 100000;
};

struct BundleContents {
  std::string layout;                // the oci-layout file
  std::string index;                 // index.json
  std::map<Digest, uint64_t> blobs;  // every blob of the tar (now in the store), with its size
};

Result<BundleContents> ReadBundleFile(const std::filesystem::path& path, BlobStore& blobs,
                                      const ReaderLimits& limits = {});
// The same from memory (the fuzz harness).
Result<BundleContents> ReadBundleMemory(std::string_view bytes, BlobStore& blobs,
                                        const ReaderLimits& limits = {});

}  // namespace perch::bundle
