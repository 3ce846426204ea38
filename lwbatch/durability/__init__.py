"""What survives a crash: the journal, atomic file writes and the per-output lock."""
