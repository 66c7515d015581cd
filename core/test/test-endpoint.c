#include "resilnet.h"
#include "task.h"

#include <sys/un.h>

static void parse_ok(const char *text, rn_endpoint_kind_t kind,
                     const char *address, int port, const char *canonical) {
  rn_endpoint_t ep;
  char out[RN_ENDPOINT_ADDRESS_MAX + 16];
  int n;

  fprintf(stderr, "   ok:  %s\n", text);
  ASSERT_OK(rn_endpoint_parse(&ep, text, strlen(text)));
  ASSERT_EQ(ep.kind, kind);
  ASSERT_STR_EQ(ep.address, address);
  ASSERT_EQ(ep.port, port);
  n = rn_endpoint_format(&ep, out, sizeof(out));
  ASSERT_EQ(n, strlen(canonical));
  ASSERT_STR_EQ(out, canonical);
}

static void parse_bad(const char *text, size_t len) {
  rn_endpoint_t ep;

  memset(&ep, 0x5a, sizeof(ep));
  fprintf(stderr, "   bad: %.*s\n", (int)len, text);
  ASSERT_EQ(rn_endpoint_parse(&ep, text, len), UV_EINVAL);
  ASSERT_EQ(ep.address[0], 0x5a); /* untouched on error */
}

#define BAD(s) parse_bad((s), sizeof(s) - 1)

static void test_good(void) {
  parse_ok("127.0.0.1:6379", RN_ENDPOINT_TCP, "127.0.0.1", 6379,
           "127.0.0.1:6379");
  parse_ok("localhost:0", RN_ENDPOINT_TCP, "localhost", 0, "localhost:0");
  parse_ok("db2.internal:65535", RN_ENDPOINT_TCP, "db2.internal", 65535,
           "db2.internal:65535");
  parse_ok("My-Host_1.example.com.:80", RN_ENDPOINT_TCP,
           "My-Host_1.example.com.", 80, "My-Host_1.example.com.:80");
  parse_ok("a:1", RN_ENDPOINT_TCP, "a", 1, "a:1");
  parse_ok("0.0.0.0:007", RN_ENDPOINT_TCP, "0.0.0.0", 7, "0.0.0.0:7");
  parse_ok("x1.2.3.4:5", RN_ENDPOINT_TCP, "x1.2.3.4", 5, "x1.2.3.4:5");
  parse_ok("[::1]:7000", RN_ENDPOINT_TCP, "::1", 7000, "[::1]:7000");
  parse_ok("[::]:0", RN_ENDPOINT_TCP, "::", 0, "[::]:0");
  parse_ok("[2001:db8::1:2]:443", RN_ENDPOINT_TCP, "2001:db8::1:2", 443,
           "[2001:db8::1:2]:443");
  parse_ok("[::ffff:1.2.3.4]:1", RN_ENDPOINT_TCP, "::ffff:1.2.3.4", 1,
           "[::ffff:1.2.3.4]:1");
  parse_ok("[fe80::1%eth0]:9", RN_ENDPOINT_TCP, "fe80::1%eth0", 9,
           "[fe80::1%eth0]:9");
  parse_ok("unix:/run/x.sock", RN_ENDPOINT_UNIX, "/run/x.sock", 0,
           "unix:/run/x.sock");
  parse_ok("unix:rel/x.sock", RN_ENDPOINT_UNIX, "rel/x.sock", 0,
           "unix:rel/x.sock");
  parse_ok("unix:/tmp/with space", RN_ENDPOINT_UNIX, "/tmp/with space", 0,
           "unix:/tmp/with space");
}

static void test_bad(void) {
  BAD("");
  BAD(":80");
  BAD("host");
  BAD("host:");
  BAD("host:65536");
  BAD("host:99999");
  BAD("host:123456");
  BAD("host:-1");
  BAD("host:+80");
  BAD("host:8o");
  BAD("host: 80");
  BAD("host:80 ");
  BAD(" host:80");
  BAD("ho st:80");
  BAD("host\t:80");
  BAD("host:80\n");
  BAD("ho\0st:80");
  BAD("host:8\0");
  BAD("-host:80");
  BAD("host-:80");
  BAD("a..b:80");
  BAD(".a:80");
  BAD(".:80");
  BAD("a.-b:80");
  BAD("a-.b:80");
  BAD("h@st:80");
  BAD("1.2.3:80");
  BAD("1.2.3.256:80");
  BAD("1.2.3.4.5:80");
  BAD("1234:80");
  BAD("::1:80");
  BAD("1:2:3");
  BAD("[::1]");
  BAD("[::1]:");
  BAD("[::1]80");
  BAD("[::1:80");
  BAD("::1]:80");
  BAD("[]:80");
  BAD("[1.2.3.4]:80");
  BAD("[::g]:80");
  BAD("[::1]:80:81");
  BAD("[::1]]:80");
  BAD("[fe80::1%]:80");
  BAD("[fe80::1%et h]:80");
  BAD("unix:");
  BAD("unix:/a\nb");
  BAD("unix:/a\0b");
  BAD("http://host:80");
}

/* Labels up to 63 characters, names up to 253 (254 with the final dot). */
static void test_lengths(void) {
  char text[400];
  rn_endpoint_t ep;
  size_t i, sun = sizeof(((struct sockaddr_un *)0)->sun_path);

  memset(text, 'a', 63);
  memcpy(text + 63, ":1", 3);
  ASSERT_OK(rn_endpoint_parse(&ep, text, strlen(text)));
  memset(text, 'a', 64);
  memcpy(text + 64, ":1", 3);
  ASSERT_EQ(rn_endpoint_parse(&ep, text, strlen(text)), UV_EINVAL);

  for (i = 0; i < 253; i++) /* "aaa.aaa.aaa. ... " */
    text[i] = i % 4 == 3 ? '.' : 'a';
  memcpy(text + 253, ":1", 3);
  ASSERT_OK(rn_endpoint_parse(&ep, text, strlen(text)));
  memcpy(text + 253, "a:1", 4);
  ASSERT_EQ(rn_endpoint_parse(&ep, text, strlen(text)), UV_EINVAL);

  /* sun_path holds the path and its NUL. */
  memcpy(text, "unix:/", 6);
  memset(text + 6, 'p', sun - 2);
  text[6 + sun - 2] = '\0'; /* path of sun - 1 bytes */
  ASSERT_OK(rn_endpoint_parse(&ep, text, strlen(text)));
  ASSERT_EQ(strlen(ep.address), sun - 1);
  text[6 + sun - 2] = 'p';
  text[6 + sun - 1] = '\0';
  ASSERT_EQ(rn_endpoint_parse(&ep, text, strlen(text)), UV_EINVAL);
}

/* len, not a NUL, ends the text: the caller may pass a slice. */
static void test_slice(void) {
  const char *text = "localhost:80801234";
  rn_endpoint_t ep;

  ASSERT_OK(rn_endpoint_parse(&ep, text, 14));
  ASSERT_EQ(ep.port, 8080);
  ASSERT_STR_EQ(ep.address, "localhost");
  ASSERT_EQ(rn_endpoint_parse(&ep, NULL, 0), UV_EINVAL);
  ASSERT_EQ(rn_endpoint_parse(&ep, text, 0), UV_EINVAL);
}

static void test_format_space(void) {
  rn_endpoint_t ep;
  char out[16];

  ASSERT_OK(rn_endpoint_parse(&ep, "[::1]:7000", 10));
  ASSERT_EQ(rn_endpoint_format(&ep, out, 11), 10); /* exactly fits */
  ASSERT_STR_EQ(out, "[::1]:7000");
  ASSERT_EQ(rn_endpoint_format(&ep, out, 10), UV_ENOBUFS);
  ASSERT_EQ(rn_endpoint_format(&ep, NULL, 0), UV_ENOBUFS);
  ASSERT_OK(rn_endpoint_parse(&ep, "unix:/x", 7));
  ASSERT_EQ(rn_endpoint_format(&ep, out, sizeof(out)), 7);
  ASSERT_STR_EQ(out, "unix:/x");
}

TEST_LIST_START
  TEST_ENTRY(test_good)
  TEST_ENTRY(test_bad)
  TEST_ENTRY(test_lengths)
  TEST_ENTRY(test_slice)
  TEST_ENTRY(test_format_space)
TEST_LIST_END
