/* Exponential backoff with jitter, per endpoint. The jitter matters more
 * than the curve: clients cut off by the same outage retry in lockstep
 * without it, and the recovering server meets them all at once. */
#include "client.h"

int rn__backoff_check(const rn_backoff_options_t *o) {
  if (o->initial_ms == 0 || o->max_ms < o->initial_ms) return UV_EINVAL;
  if (!(o->multiplier >= 1.0) || !(o->jitter >= 0.0 && o->jitter <= 1.0))
    return UV_EINVAL;
  return 0;
}

void rn__backoff_init(rn_backoff_t *b, const rn_backoff_options_t *options) {
  b->options = *options;
  b->next = (double)options->initial_ms;
}

void rn__backoff_reset(rn_backoff_t *b) {
  b->next = (double)b->options.initial_ms;
}

uint64_t rn__backoff_next(rn_backoff_t *b, rn_loop_t *loop) {
  double base = b->next;
  double spread = base * b->options.jitter;
  double delay = base - spread + 2.0 * spread * rn__random_unit(loop);
  double max = (double)b->options.max_ms;

  b->next = base * b->options.multiplier;
  if (b->next > max) b->next = max;
  if (delay > max) delay = max;
  if (delay < 0) delay = 0;
  return (uint64_t)(delay + 0.5);
}
