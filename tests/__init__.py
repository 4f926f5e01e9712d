"""The test suite (a regular package, so `tests.utils` is ours even where a dependency installs a top-level
`tests` package: mmsegmentation 1.2.2's wheel does)."""
