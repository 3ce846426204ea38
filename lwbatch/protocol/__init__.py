"""Talking to Lift Wing: the model catalogue, HTTP, payloads and answer shapes."""
