/* Endpoint text: "host:port", "[v6]:port", "unix:/path". */
#include "resilnet.h"

#include <stdio.h>
#include <string.h>
#ifndef _WIN32
#include <sys/un.h>
#endif

#define RN_UNIX_PREFIX "unix:"
#define RN_UNIX_PREFIX_LEN (sizeof(RN_UNIX_PREFIX) - 1)

#ifdef _WIN32
#define RN_SUN_PATH_SIZE 108 /* libuv's pipes take a name of this order */
#else
#define RN_SUN_PATH_SIZE sizeof(((struct sockaddr_un *)0)->sun_path)
#endif

static int is_digit(char c) { return c >= '0' && c <= '9'; }
static int is_alnum(char c) {
  return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* 1 to 5 digits, 0..65535. No sign, no spaces: "+80" or " 80" in a config
 * file is a mistake better caught here than as a resolver error later. */
static int parse_port(const char *s, size_t len, uint16_t *port) {
  unsigned long v = 0;
  size_t i;

  if (len == 0 || len > 5)
    return UV_EINVAL;
  for (i = 0; i < len; i++) {
    if (!is_digit(s[i]))
      return UV_EINVAL;
    v = v * 10 + (unsigned long)(s[i] - '0');
  }
  if (v > 65535)
    return UV_EINVAL;
  *port = (uint16_t)v;
  return 0;
}

/* RFC 1123 host names, plus '_' (common in container and service names).
 * Labels of 1..63 characters, not starting or ending with '-'; one trailing
 * dot (an absolute name) is allowed. A name made only of digits and dots
 * must be a dotted-quad IPv4 address: "1.2.3" or "1.2.3.256" would
 * otherwise reach getaddrinfo, which reads them in surprising ways. */
static int check_host(const char *s, size_t len) {
  size_t i, label = 0;
  int numeric = 1;

  if (len == 0 || len - (s[len - 1] == '.') > 253)
    return UV_EINVAL;
  for (i = 0; i < len; i++) {
    char c = s[i];
    if (c == '.') {
      if (label == 0 || s[i - 1] == '-')
        return UV_EINVAL;
      label = 0;
      continue;
    }
    if (!is_alnum(c) && c != '-' && c != '_')
      return UV_EINVAL;
    if (c == '-' && label == 0)
      return UV_EINVAL;
    if (!is_digit(c))
      numeric = 0;
    if (++label > 63)
      return UV_EINVAL;
  }
  if (s[len - 1] == '-') /* a last label ending in '-'; empty ones failed */
    return UV_EINVAL;

  if (numeric) {
    char tmp[16];
    unsigned char addr[4];
    if (len >= sizeof(tmp))
      return UV_EINVAL;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    if (uv_inet_pton(AF_INET, tmp, addr) != 0)
      return UV_EINVAL;
  }
  return 0;
}

/* An IPv6 literal, optionally with a zone ("fe80::1%eth0"). uv_inet_pton
 * ignores whatever follows '%', so the zone is checked here. */
static int check_ipv6(const char *s, size_t len) {
  char tmp[64];
  unsigned char addr[16];
  const char *zone;

  if (len == 0 || len >= sizeof(tmp))
    return UV_EINVAL;
  memcpy(tmp, s, len);
  tmp[len] = '\0';
  zone = strchr(tmp, '%');
  if (zone != NULL) {
    const char *z = zone + 1;
    if (*z == '\0')
      return UV_EINVAL;
    for (; *z != '\0'; z++)
      if (!is_alnum(*z) && *z != '-' && *z != '_' && *z != '.')
        return UV_EINVAL;
  }
  return uv_inet_pton(AF_INET6, tmp, addr) == 0 ? 0 : UV_EINVAL;
}

static int parse_unix(rn_endpoint_t *ep, const char *path, size_t len) {
  size_t i;

  /* The path is copied into sun_path with its NUL; an abstract socket
   * (leading NUL) cannot be written in this text form. */
  if (len == 0 || len + 1 > RN_SUN_PATH_SIZE || len + 1 > sizeof(ep->address))
    return UV_EINVAL;
  for (i = 0; i < len; i++)
    if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f)
      return UV_EINVAL;
  ep->kind = RN_ENDPOINT_UNIX;
  ep->port = 0;
  memcpy(ep->address, path, len);
  ep->address[len] = '\0';
  return 0;
}

static int parse_tcp(rn_endpoint_t *ep, const char *text, size_t len) {
  const char *host, *colon;
  size_t host_len;
  int err;

  if (text[0] == '[') {
    const char *close = memchr(text, ']', len);
    if (close == NULL || close + 1 == text + len || close[1] != ':')
      return UV_EINVAL;
    host = text + 1;
    host_len = (size_t)(close - host);
    colon = close + 1;
    err = check_ipv6(host, host_len);
  } else {
    /* A second colon means an IPv6 literal without brackets, whose port
     * would be ambiguous. */
    colon = memchr(text, ':', len);
    if (colon == NULL || memchr(colon + 1, ':', len - (size_t)(colon - text) - 1))
      return UV_EINVAL;
    host = text;
    host_len = (size_t)(colon - text);
    err = check_host(host, host_len);
  }
  if (err != 0)
    return err;
  err = parse_port(colon + 1, len - (size_t)(colon + 1 - text), &ep->port);
  if (err != 0)
    return err;
  if (host_len + 1 > sizeof(ep->address))
    return UV_EINVAL;
  ep->kind = RN_ENDPOINT_TCP;
  memcpy(ep->address, host, host_len);
  ep->address[host_len] = '\0';
  return 0;
}

int rn_endpoint_parse(rn_endpoint_t *ep, const char *text, size_t len) {
  rn_endpoint_t tmp;
  int err;

  if (ep == NULL || text == NULL || len == 0 || memchr(text, '\0', len))
    return UV_EINVAL;
  memset(&tmp, 0, sizeof(tmp));
  /* "unix:" always means a socket path: a TCP host literally named "unix"
   * is not worth the ambiguity. */
  if (len >= RN_UNIX_PREFIX_LEN &&
      memcmp(text, RN_UNIX_PREFIX, RN_UNIX_PREFIX_LEN) == 0)
    err = parse_unix(&tmp, text + RN_UNIX_PREFIX_LEN, len - RN_UNIX_PREFIX_LEN);
  else
    err = parse_tcp(&tmp, text, len);
  if (err == 0)
    *ep = tmp; /* on error the caller's endpoint is left untouched */
  return err;
}

int rn_endpoint_format(const rn_endpoint_t *ep, char *out, size_t size) {
  int n;

  if (ep->kind == RN_ENDPOINT_UNIX)
    n = snprintf(out, size, "%s%s", RN_UNIX_PREFIX, ep->address);
  else if (strchr(ep->address, ':') != NULL)
    n = snprintf(out, size, "[%s]:%u", ep->address, (unsigned)ep->port);
  else
    n = snprintf(out, size, "%s:%u", ep->address, (unsigned)ep->port);
  if (n < 0 || (size_t)n >= size)
    return UV_ENOBUFS;
  return n;
}
