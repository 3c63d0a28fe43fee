"""Support for driving goim from outside, shared by the tests and the benchmark suite
(``goim.testing.harness``: real processes on port 0). Not used by the server itself."""
