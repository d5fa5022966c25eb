/* Diagnostic for the MQTT benchmark, not part of perch: LD_PRELOAD'ed into
 * `perch serve`, it sets TCP_NODELAY on every TCP socket the process
 * connects, as MOSQ_OPT_TCP_NODELAY would on the bridge's connection to the
 * broker. bench/mqtt/run.py builds it with
 *     cc -O2 -shared -fPIC -o nodelay_preload.so nodelay_preload.c -ldl
 * and runs a second agent with it, to show what Nagle's algorithm costs. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int connect(int fd, const struct sockaddr *address, socklen_t length) {
  static int (*real_connect)(int, const struct sockaddr *, socklen_t);
  if (!real_connect) {
    real_connect = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
  }
  if (address && (address->sa_family == AF_INET || address->sa_family == AF_INET6)) {
    int type = 0;
    socklen_t size = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &size) == 0 && type == SOCK_STREAM) {
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
  }
  return real_connect(fd, address, length);
}
