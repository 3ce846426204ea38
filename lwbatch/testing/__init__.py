"""A local Lift Wing emulator for tests, benchmarks and the demo."""
