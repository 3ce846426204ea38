"""Inputs and outputs: sources that read revisions, sinks that write merged rows."""
