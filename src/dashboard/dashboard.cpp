#include "dashboard/dashboard.h"

#include <string>

#include "dashboard/assets.h"
#include "http/errors.h"

namespace perch {
namespace {

std::string_view ContentType(std::string_view name) {
  if (name.ends_with(".html")) {
    return "text/html; charset=utf-8";
  }
  if (name.ends_with(".js")) {
    return "text/javascript; charset=utf-8";
  }
  if (name.ends_with(".css")) {
    return "text/css; charset=utf-8";
  }
  return "application/octet-stream";
}

void Serve(const dashboard::Asset& asset, http::Response& response) {
  response.SetBody(std::string(asset.bytes), std::string(ContentType(asset.name)));
  // Only the hub's own scripts and styles; uPlot sizes its elements
  // through the style properties, which style-src does not govern.
  response.headers.Set("Content-Security-Policy",
                       "default-src 'none'; script-src 'self'; style-src 'self'; "
                       "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                       "base-uri 'none'; form-action 'none'");
  response.headers.Set("X-Content-Type-Options", "nosniff");
  response.headers.Set("Referrer-Policy", "no-referrer");
  response.headers.Set("Cache-Control", "no-cache");
}

const dashboard::Asset* Find(std::string_view name) {
  for (const dashboard::Asset& asset : dashboard::kAssets) {
    if (asset.name == name) {
      return &asset;
    }
  }
  return nullptr;
}

}  // namespace

void MountDashboard(http::Server& server) {
  server.Route("GET", "/", [](http::Request&, http::Response& response) {
    Serve(*Find("index.html"), response);
  });
  server.Route("GET", "/dashboard/([A-Za-z0-9._-]{1,64})",
               [](http::Request& request, http::Response& response) {
                 const dashboard::Asset* asset = Find(request.match(1));
                 if (asset == nullptr || asset->name == "index.html") {
                   return http::SetError(response, NotFound("no dashboard file '" +
                                                            std::string(request.match(1)) + "'"));
                 }
                 Serve(*asset, response);
               });
}

}  // namespace perch
