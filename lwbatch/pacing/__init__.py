"""When requests may leave: the budget (limiter), concurrency, and GC pause control."""
