"""The bench harness every scenario shares, by job: processes and /proc
(`processes`), the stack (`stack`), the load generators (`fleet`), the stamped writer
(`writer`), one measured cell (`cell`), report tables (`tables`) and a scenario's
command line and run (`scenario`). Each scenario file (bench/latency.py, ...) holds only
its scenario; tests/live/ starts its stacks with the same Procfile reading and ports."""
