/* Redis error replies that prove the command was not executed
 * (docs/retry-rules.md, "Redis errors that prove nothing ran"). */
#ifndef RN_RESP_ERRORS_H
#define RN_RESP_ERRORS_H

#include <stddef.h>

/* The built-in table: LOADING, READONLY, ... NOSCRIPT; NULL-terminated. */
extern const char *const rn__resp_not_executed_builtin[];

/* 1 if the error reply `reply` (a whole RESP frame, `-...` or `!...`) to
 * the request frame `request` proves that request did not run: its error
 * code (the first word) is one of `codes` (NULL: the built-in table),
 * and the request is not one whose errors may come after part of it ran
 * (EXEC; a script, except NOSCRIPT and BUSY). */
int rn__resp_not_executed(const char *const *codes, const char *request,
                          size_t request_len, const char *reply,
                          size_t reply_len);

/* The error code of an error reply frame (`-CODE text` or a RESP3 blob
 * error `!<len>\r\nCODE text`): its first word (code, code_len). 0 if
 * the frame is no error or has no code. One parser for every reader of
 * codes: the not-executed table, the setup's and the server-state checks
 * (conn_setup.c). */
int rn__resp_error_code(const char *reply, size_t len, const char **code,
                        size_t *code_len);

/* The head of a RESP array or push frame: its element count (*count) and
 * its first element, if a bulk or simple string (word, word_len). 0 if
 * the frame is not so. Request names and subscribe-mode frames (message,
 * subscribe, ...: subscribe.c) are read with it. */
int rn__resp_head(const char *frame, size_t len, size_t *count,
                  const char **word, size_t *word_len);

/* The command name of a request frame: the first bulk string of a RESP
 * array, or the first word of an inline command (name, name_len). 0 if
 * none is found. */
int rn__resp_command_name(const char *frame, size_t len, const char **name,
                          size_t *name_len);

/* One resp request, as Redis reads one, in one pass: how long the request
 * starting at `frame` is (*size) and its command name (*name). Redis
 * answers exactly once only an array of one or more bulk strings, or an
 * inline command (a line, up to its LF, starting with the command's name,
 * its first byte no RESP type); any other value (a bare bulk string, an
 * empty or nested array, a blank line) it answers with an error, or not at
 * all, and the replies after it would go to the wrong calls. 1: a whole
 * request (maybe followed by more bytes); 0: not (the start of) one;
 * RN_EFRAMESIZE: larger than codec->max_frame. */
struct rn_codec_s;
int rn__resp_request(const struct rn_codec_s *codec, const char *frame,
                     size_t len, size_t *size, const char **name,
                     size_t *name_len);

#endif
