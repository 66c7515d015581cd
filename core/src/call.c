/* A call's completion: the callback fires exactly once, then the call's
 * memory goes once no connection holds it any more. */
#include "client.h"

#include <stdlib.h>

void rn__call_release(rn_call_t *call) {
  if (call->internal) {
    /* Pings are owned by their connection alone. */
    if (call->conn == NULL) free(call);
    return;
  }
  if (!call->done || call->conn != NULL) return;
  if (call->frame != call->inline_frame) free(call->frame);
  free(call);
}

void rn__call_complete(rn_call_t *call, int status, const char *body,
                       size_t body_len, int flags) {
  rn_pool_t *pool = call->pool;
  rn_result_t result;

  if (call->done || call->internal) return;
  call->done = 1;
  rn_timer_stop(&call->deadline);

  result.status = status;
  result.body = body;
  result.body_len = body_len;
  result.flags = flags;
  result.attempts = call->attempts;
  /* A reply, even an error reply, means the server saw the request. A
   * failure means execution was possible only if a byte left the socket. */
  result.maybe_executed = status == 0 || status == RN_EREPLY ||
                          call->state != RN_SEND_UNSENT;
  result.endpoint = call->endpoint ? call->endpoint->text : NULL;

  if (status == 0 || status == RN_EREPLY)
    pool->stats.completed++;
  else
    pool->stats.failed++;
  pool->active--;

  call->cb(pool, call->data, &result);
  rn__pool_call_done(pool);
}
