"""The scoring engine: revisions in, merged rows out, inside a request budget."""
