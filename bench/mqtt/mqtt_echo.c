/* The baseline of the MQTT benchmark: what the broker and libmosquitto cost
 * without perch. Built by bench/mqtt/run.py with `cc -O2 mqtt_echo.c
 * -lmosquitto`; the same libmosquitto 2.0 and MQTT 5 settings as perch's
 * bridge (clean_start false, QoS 1, its answer properties).
 *
 *   mqtt_echo echo  PORT TOPIC ANSWER_FILE
 *       Subscribes to TOPIC (QoS 1) and answers every message with the bytes
 *       of ANSWER_FILE (perch's own answer to the same request) on its
 *       Response Topic, echoing the Correlation Data, with the content type
 *       and idempotency-key user property perch sets. Does not read the
 *       request. Runs until killed; prints "ready" once subscribed.
 *       MQTT_ECHO_TCP_NODELAY=1 in the environment sets MOSQ_OPT_TCP_NODELAY
 *       (perch's bridge leaves it unset, so Nagle's algorithm applies).
 *
 *   mqtt_echo burst PORT TOPIC ANSWER_FILE COUNT
 *       Publishes ANSWER_FILE COUNT times (QoS 1) to TOPIC as fast as the
 *       library takes them, waits until the broker acknowledged every one,
 *       and prints {"count": N, "seconds": S}.
 */
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static char *answer;
static long answer_size;
static const char *topic;
static volatile int acknowledged;
static volatile int connected;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static void read_answer(const char *path) {
  FILE *file = fopen(path, "rb");
  if (!file) {
    perror(path);
    exit(2);
  }
  fseek(file, 0, SEEK_END);
  answer_size = ftell(file);
  fseek(file, 0, SEEK_SET);
  answer = malloc(answer_size);
  if (fread(answer, 1, answer_size, file) != (size_t)answer_size) {
    perror(path);
    exit(2);
  }
  fclose(file);
}

static mosquitto_property *answer_properties(const mosquitto_property *request) {
  mosquitto_property *properties = NULL;
  mosquitto_property_add_string(&properties, MQTT_PROP_CONTENT_TYPE, "application/json");
  mosquitto_property_add_string_pair(&properties, MQTT_PROP_USER_PROPERTY, "idempotency-key",
                                     "mqtt-echo/0000000000000000");
  void *correlation = NULL;
  uint16_t length = 0;
  if (request && mosquitto_property_read_binary(request, MQTT_PROP_CORRELATION_DATA, &correlation,
                                                &length, false)) {
    mosquitto_property_add_binary(&properties, MQTT_PROP_CORRELATION_DATA, correlation, length);
    free(correlation);
  }
  return properties;
}

static void on_connect(struct mosquitto *mosq, void *data, int rc, int flags,
                       const mosquitto_property *props) {
  (void)data, (void)flags, (void)props;
  if (rc) {
    fprintf(stderr, "connect refused: %s\n", mosquitto_reason_string(rc));
    exit(1);
  }
  connected = 1;
  if (strcmp(topic, "") != 0) {
    mosquitto_subscribe_v5(mosq, NULL, topic, 1, 0, NULL);
  }
}

static void on_subscribe(struct mosquitto *mosq, void *data, int mid, int count,
                         const int *granted, const mosquitto_property *props) {
  (void)mosq, (void)data, (void)mid, (void)count, (void)granted, (void)props;
  printf("ready\n");
  fflush(stdout);
}

static void on_message(struct mosquitto *mosq, void *data, const struct mosquitto_message *message,
                       const mosquitto_property *props) {
  (void)data, (void)message;
  char *reply = NULL;
  if (!mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &reply, false)) {
    return;
  }
  mosquitto_property *properties = answer_properties(props);
  mosquitto_publish_v5(mosq, NULL, reply, (int)answer_size, answer, 1, false, properties);
  mosquitto_property_free_all(&properties);
  free(reply);
}

static void on_publish(struct mosquitto *mosq, void *data, int mid, int reason,
                       const mosquitto_property *props) {
  (void)mosq, (void)data, (void)mid, (void)reason, (void)props;
  ++acknowledged;
}

static struct mosquitto *connect_to(int port, const char *client_id) {
  struct mosquitto *mosq = mosquitto_new(client_id, false, NULL);
  mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
  const char *nodelay = getenv("MQTT_ECHO_TCP_NODELAY");
  if (nodelay && strcmp(nodelay, "1") == 0) {
    mosquitto_int_option(mosq, MOSQ_OPT_TCP_NODELAY, 1);
  }
  mosquitto_connect_v5_callback_set(mosq, on_connect);
  mosquitto_subscribe_v5_callback_set(mosq, on_subscribe);
  mosquitto_message_v5_callback_set(mosq, on_message);
  mosquitto_publish_v5_callback_set(mosq, on_publish);
  mosquitto_property *properties = NULL;
  mosquitto_property_add_int32(&properties, MQTT_PROP_SESSION_EXPIRY_INTERVAL, 600);
  int rc = mosquitto_connect_bind_v5(mosq, "127.0.0.1", port, 30, NULL, properties);
  mosquitto_property_free_all(&properties);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "cannot connect: %s\n", mosquitto_strerror(rc));
    exit(1);
  }
  return mosq;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s echo|burst PORT TOPIC ANSWER_FILE [COUNT]\n", argv[0]);
    return 2;
  }
  const int port = atoi(argv[2]);
  read_answer(argv[4]);
  mosquitto_lib_init();
  if (strcmp(argv[1], "echo") == 0) {
    topic = argv[3];
    struct mosquitto *mosq = connect_to(port, "bench-mqtt-echo");
    mosquitto_loop_forever(mosq, -1, 1);
    return 0;
  }
  if (strcmp(argv[1], "burst") == 0 && argc == 6) {
    topic = "";
    const int count = atoi(argv[5]);
    struct mosquitto *mosq = connect_to(port, "bench-mqtt-burst");
    mosquitto_loop_start(mosq);
    for (int waited = 0; !connected; ++waited) {
      if (waited > 10000) {
        fprintf(stderr, "not connected after 10 s\n");
        return 1;
      }
      struct timespec pause = {0, 1000000};
      nanosleep(&pause, NULL);
    }
    const double start = now();
    for (int i = 0; i < count; ++i) {
      mosquitto_property *properties = answer_properties(NULL);
      int rc;
      while ((rc = mosquitto_publish_v5(mosq, NULL, argv[3], (int)answer_size, answer, 1, false,
                                        properties)) == MOSQ_ERR_NO_CONN) {
        struct timespec pause = {0, 1000000};
        nanosleep(&pause, NULL);
      }
      mosquitto_property_free_all(&properties);
    }
    while (acknowledged < count) {
      struct timespec pause = {0, 200000};
      nanosleep(&pause, NULL);
    }
    printf("{\"count\": %d, \"seconds\": %.6f}\n", count, now() - start);
    mosquitto_disconnect(mosq);
    mosquitto_loop_stop(mosq, false);
    return 0;
  }
  fprintf(stderr, "unknown mode %s\n", argv[1]);
  return 2;
}
